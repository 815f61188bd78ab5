"""Starting therapy (SR-016, SR-021, SR-041, SR-046, SR-049, SR-052).

START needs therapy stopped, a prescription that names what the reservoir holds (after a
change of drug, the refill that records the new one), no high-priority alarm standing (a
halted pump resumes only when a person has dealt with it), a fill recorded (on a new
pump the reservoir's content is not known), a reservoir above the empty level, and a
catheter that is not empty (declared replaced and not yet primed). A refusal for a halt
names the alarms that hold therapy and what each still needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import AlarmId, TherapyState

from . import Refusal, wrong_state
from .catheter import EMPTY

NOT_FILLED = "the reservoir's content is not known: record the fill first (refill begin, then refill complete)"


@dataclass(frozen=True)
class StartFacts:
    state: TherapyState
    has_prescription: bool
    holds_another_drug: str | None  # what the reservoir holds, when the prescription names another
    high_alarm: bool
    reservoir_known: bool  # a fill has been recorded
    reservoir_empty: bool
    catheter_empty: bool
    # The alarms holding therapy halted (rules/recovery.py), each with whether its condition is present.
    holding: tuple[tuple[AlarmId, bool], ...] = ()


def held_by(holding: tuple[tuple[AlarmId, bool], ...]) -> str:
    """SR-052: 'occlusion (still present), motor_stall (gone, not acknowledged)'."""
    return ", ".join(
        f"{a.name.lower()} ({'still present' if present else 'gone, not acknowledged'})" for a, present in holding
    )


def refusal(f: StartFacts) -> Refusal | None:
    if f.state is TherapyState.HALTED and f.holding:
        return wrong_state(f"halted by {held_by(f.holding)}: acknowledge each once its condition is gone")
    if f.state is not TherapyState.STOPPED:
        return wrong_state(f"start needs state stopped, not {f.state.name.lower()}")
    if not f.has_prescription:
        return wrong_state("no prescription programmed")
    if f.holds_another_drug is not None:
        return wrong_state(f"{f.holds_another_drug}: refill with the drug programmed before starting")
    if f.high_alarm:
        return wrong_state("a high-priority alarm stands" + (f": {held_by(f.holding)}" if f.holding else ""))
    if not f.reservoir_known:
        return wrong_state(NOT_FILLED)
    if f.reservoir_empty:
        return wrong_state("reservoir at the empty level: refill first")
    if f.catheter_empty:
        return wrong_state(EMPTY)
    return None
