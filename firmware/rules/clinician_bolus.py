"""The clinician bolus: a dose and duration a clinician orders (SR-006, SR-007, SR-016,
SR-048, SR-049, SR-053).

Allowed while therapy runs, and while it is stopped as a single bolus (delivered, then
the pump stays stopped: SynchroMed's single bolus), never halted or in a refill; with no
bolus in progress and no high-priority alarm standing. The prescription must name what
the reservoir holds, a fill must be recorded and the catheter not be empty, as for
START. The dose lies within the hard limit and the
duration within the bolus range, no faster than the mechanism can stroke; the largest
rolling-24 h total from now on, with planned basal and timed boluses (as if therapy were
started after it) and this bolus, stays within the hard limit; and the reservoir holds it above the
empty level.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import TherapyState

from ..prescription import MAX_BOLUS_DURATION_S, MIN_BOLUS_DURATION_S
from . import Refusal, limit24h, out_of_range, reservoir, wrong_state
from .catheter import EMPTY
from .start import NOT_FILLED


@dataclass(frozen=True)
class ClinicianBolusFacts:
    state: TherapyState
    has_prescription: bool
    holds_another_drug: str | None  # what the reservoir holds, when the prescription names another
    reservoir_known: bool  # a fill has been recorded
    high_alarm: bool
    catheter_empty: bool
    bolus_active: bool
    dose_ng: int
    dose_fg: int
    duration_s: int
    max_dose_24h_ng: int
    strokes: int  # whole strokes nearest the dose
    min_stroke_interval_ms: int
    window: limit24h.Window | None  # None without a prescription
    volume_nl: int
    reservoir_nl: int
    empty_level_nl: int


def refusal(f: ClinicianBolusFacts) -> Refusal | None:
    if f.state not in (TherapyState.RUNNING, TherapyState.STOPPED):
        return wrong_state(f"a clinician bolus needs therapy running or stopped, not {f.state.name.lower()}")
    if not f.has_prescription or f.window is None:
        return wrong_state("no prescription programmed")
    if f.holds_another_drug is not None:
        return wrong_state(f"{f.holds_another_drug}: refill with the drug programmed before a bolus")
    if not f.reservoir_known:
        return wrong_state(NOT_FILLED)
    if f.high_alarm:
        return wrong_state("a high-priority alarm stands: deal with it first")
    if f.catheter_empty:
        return wrong_state(EMPTY)
    if f.bolus_active:
        return wrong_state("a bolus is in progress")
    if not 0 < f.dose_ng <= f.max_dose_24h_ng:
        return out_of_range("dose_ng", f"dose must be 1..{f.max_dose_24h_ng} ng (the hard limit)")
    if not MIN_BOLUS_DURATION_S <= f.duration_s <= MAX_BOLUS_DURATION_S:
        return out_of_range("duration_s", f"duration must be {MIN_BOLUS_DURATION_S}..{MAX_BOLUS_DURATION_S} s")
    if f.duration_s * 1000 // f.strokes < f.min_stroke_interval_ms:
        return out_of_range("duration_s", "faster than the mechanism can deliver")
    if limit24h.max_window_with_fg(f.window, f.dose_fg) > f.window.max_dose_24h_fg:
        return out_of_range("dose_ng", "would exceed the rolling 24 h hard limit with basal")
    if not reservoir.holds(f.reservoir_nl, f.volume_nl, f.empty_level_nl):
        return out_of_range("dose_ng", "the reservoir does not hold it above the empty level")
    return None
