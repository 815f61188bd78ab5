"""The priming bolus (SR-040, SR-016, SR-046, SR-049).

Priming pushes reservoir fluid into the catheter. Whatever it pushes out of the catheter
tip reaches the patient: into a primed catheter (or one whose contents are not known)
that is drug, counted toward the rolling 24 h like any other stroke, so a PRIME that
would take the rolling 24 h over the hard limit is refused. (Priming into an empty
catheter pushes out nothing until the drug reaches the tip: the count comes from what
the catheter holds, firmware/catheter.py, not from the purpose.) Priming runs only with
therapy stopped, a prescription programmed that names the catheter's volume (the
clinician's entry: the pump cannot know it) and no bolus in progress, for at most twice
the catheter's volume, and the reservoir must hold it above the empty level.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..prescription import fmt_dose
from . import Refusal, limit24h, out_of_range, reservoir, wrong_state
from .ready import NOT_FILLED


@dataclass(frozen=True)
class PrimeFacts:
    stopped: bool
    has_prescription: bool
    holds_another_drug: str | None  # what the reservoir holds, when the prescription names another
    bolus_active: bool
    volume_nl: int
    stroke_nl: int
    catheter_volume_nl: int
    drug_fg: int  # what the priming strokes push out of the tip
    window_fg: int
    max_dose_24h_fg: int
    drug_unit: str  # "mg" or "mcg", to say the figures as the clinician does
    reservoir_known: bool  # a fill has been recorded
    reservoir_nl: int
    empty_level_nl: int


def refusal(f: PrimeFacts) -> Refusal | None:
    if not f.stopped:
        return wrong_state("prime with therapy stopped")
    if not f.has_prescription:
        return wrong_state("program the drug before priming")
    if f.holds_another_drug is not None:
        return wrong_state(f"{f.holds_another_drug}: refill with the drug programmed before priming")
    if f.bolus_active:
        return wrong_state("a bolus is in progress")
    if not f.reservoir_known:
        return wrong_state(NOT_FILLED)
    if not f.catheter_volume_nl:
        return wrong_state("enter the catheter's volume in the prescription before priming (catheter_volume_nl)")
    most = max(2 * f.catheter_volume_nl, f.stroke_nl)
    if not f.stroke_nl <= f.volume_nl <= most:
        return out_of_range("volume_nl", f"priming volume is {f.stroke_nl}..{most} nL")
    if not limit24h.fits(f.window_fg, f.drug_fg, f.max_dose_24h_fg):
        total = fmt_dose((f.window_fg + f.drug_fg) // 1_000_000, f.drug_unit)
        limit = fmt_dose(f.max_dose_24h_fg // 1_000_000, f.drug_unit)
        return out_of_range(
            "volume_nl",
            f"priming pushes drug out of the catheter tip: it would take the rolling 24 h to {total}, "
            f"over the hard limit {limit}",
        )
    strokes = -(-f.volume_nl // f.stroke_nl)  # priming runs in whole strokes
    if not reservoir.holds(f.reservoir_nl, strokes * f.stroke_nl, f.empty_level_nl):
        return out_of_range("volume_nl", "the reservoir does not hold it above the empty level")
    return None
