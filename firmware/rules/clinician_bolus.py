"""The clinician bolus: a dose and duration a clinician orders (SR-006, SR-007, SR-016).

Allowed only while therapy runs and no bolus is in progress; the dose lies within the
hard limit and the duration within the bolus range, no faster than the mechanism can
stroke; the largest rolling-24 h total from now on, with planned basal and this bolus,
stays within the hard limit; and the reservoir holds it above the empty level.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..prescription import MAX_BOLUS_DURATION_S, MIN_BOLUS_DURATION_S
from . import Refusal, limit24h, out_of_range, reservoir, wrong_state


@dataclass(frozen=True)
class ClinicianBolusFacts:
    running: bool
    bolus_active: bool
    dose_ng: int
    dose_fg: int
    duration_s: int
    max_dose_24h_ng: int
    strokes: int  # whole strokes nearest the dose
    min_stroke_interval_ms: int
    window: limit24h.Window | None  # None while therapy does not run
    volume_nl: int
    reservoir_nl: int
    empty_level_nl: int


def refusal(f: ClinicianBolusFacts) -> Refusal | None:
    if not f.running or f.window is None:
        return wrong_state("a clinician bolus needs therapy running")
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
