"""Whether the reservoir's drug may be moved to the patient at all (SR-021, SR-041,
SR-046, SR-049): what START and a clinician bolus (a single bolus, while stopped) both
need before their own checks.

A prescription that names what the reservoir holds (after a change of drug, the refill
that records the new one), no high-priority alarm holding therapy (which one does, and
what each still needs, is said), a fill recorded (on a new pump the reservoir's content
is not known), and a catheter that is not empty (declared replaced and not yet primed:
drug pushed into it would reach the patient hours late).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import AlarmId

from . import Refusal, wrong_state
from .catheter import EMPTY

NOT_FILLED = "the reservoir's content is not known: record the fill first (refill begin, then refill complete)"


@dataclass(frozen=True)
class ReadyFacts:
    has_prescription: bool
    holds_another_drug: str | None  # what the reservoir holds, when the prescription names another
    high_alarm: bool
    # The alarms holding therapy (rules/recovery.py), each with whether its condition is present.
    holding: tuple[tuple[AlarmId, bool], ...]
    reservoir_known: bool  # a fill has been recorded
    catheter_empty: bool


def held_by(holding: tuple[tuple[AlarmId, bool], ...]) -> str:
    """SR-052: 'occlusion (still present), motor_stall (gone, not acknowledged)'."""
    return ", ".join(
        f"{a.name.lower()} ({'still present' if present else 'gone, not acknowledged'})" for a, present in holding
    )


def refusal(f: ReadyFacts, doing: str) -> Refusal | None:
    """`doing` says what waits, as in 'refill with the drug programmed before {doing}'."""
    if not f.has_prescription:
        return wrong_state("no prescription programmed")
    if f.holds_another_drug is not None:
        return wrong_state(f"{f.holds_another_drug}: refill with the drug programmed before {doing}")
    if f.high_alarm:
        return wrong_state(
            "a high-priority alarm stands: " + (held_by(f.holding) if f.holding else "deal with it first")
        )
    if not f.reservoir_known:
        return wrong_state(NOT_FILLED)
    if f.catheter_empty:
        return wrong_state(EMPTY)
    return None
