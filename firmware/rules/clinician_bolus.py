"""The clinician bolus: a dose and duration a clinician orders (SR-006, SR-007, SR-016,
SR-048, SR-049, SR-053).

Allowed while therapy runs, and while it is stopped as a single bolus (delivered, then
the pump stays stopped: SynchroMed's single bolus), never halted or in a refill; with no
the pump ready to move its drug at all, as for START (rules/ready.py), and no bolus in
progress. The dose lies within the hard limit and the
duration within the bolus range, no faster than the mechanism can stroke; the largest
rolling-24 h total from now on, with planned basal and timed boluses (as if therapy were
started after it) and this bolus, stays within the hard limit; and the reservoir holds it above the
empty level.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import TherapyState

from ..prescription import MAX_BOLUS_DURATION_S, MIN_BOLUS_DURATION_S
from . import Refusal, limit24h, out_of_range, ready, reservoir, wrong_state


@dataclass(frozen=True)
class ClinicianBolusFacts:
    state: TherapyState
    ready: ready.ReadyFacts
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
    refused = ready.refusal(f.ready, "a bolus")
    if refused is not None:
        return refused
    if f.window is None:
        return wrong_state("no prescription programmed")
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
