"""Declaring the catheter replaced (SR-049).

A clinician declares the catheter new and empty after implant or revision surgery: the
firmware cannot sense it. It is taken only with therapy stopped (nothing may be flowing
through the catheter being replaced), no bolus in progress, and the catheter's volume
entered in the prescription (what it takes to prime it). Until primed to that volume,
priming into it pushes no drug out of the tip, and START and a bolus are refused: basal
into an empty catheter would reach the patient only after hours or days.

The firmware cannot check the declaration, and each one lets up to the catheter's
volume through uncounted: so at most one in any 24 h. A second revision within a day
is primed as it is, its priming counted as drug (the safe error).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import TherapyState

from ..dose import MS_PER_DAY
from . import Refusal, wrong_state

EMPTY = "the catheter is empty: prime it to its volume first (PRIME)"


@dataclass(frozen=True)
class ReplacedFacts:
    state: TherapyState
    has_prescription: bool
    catheter_volume_nl: int  # as the prescription names it
    bolus_active: bool
    now_ms: int
    last_replaced_ms: int | None  # the last declaration, if any


def replaced_refusal(f: ReplacedFacts) -> Refusal | None:
    if f.state is not TherapyState.STOPPED:
        return wrong_state(f"a catheter is replaced with therapy stopped, not {f.state.name.lower()}")
    if not f.has_prescription or not f.catheter_volume_nl:
        return wrong_state("program the new catheter's volume first (the prescription's catheter_volume_nl)")
    if f.bolus_active:
        return wrong_state("a bolus is in progress")
    last = f.last_replaced_ms
    if last is not None and f.now_ms - last < MS_PER_DAY:  # (time gone back: refused too)
        hours = -(-(last + MS_PER_DAY - f.now_ms) // 3_600_000)
        return wrong_state(
            "a catheter was declared replaced less than 24 h ago: prime this one as it is (its priming counts "
            f"as drug), or declare it in {hours} h"
        )
    return None
