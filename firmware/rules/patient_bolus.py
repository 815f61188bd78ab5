"""The patient bolus (the PTM button): granted or denied, and when to try again
(SR-003, SR-004, SR-005, SR-006, SR-007, SR-016, SR-021, SR-053).

Granted only when therapy runs, the prescription has a patient bolus, no high-priority
alarm stands, no bolus is in progress, the lockout has passed (since the last patient
bolus started, since programming or a refill, or after a memory loss), fewer than the
allotted boluses started in the rolling 24 h, the largest rolling-24 h total from now on
stays within the hard limit with planned basal, the timed boluses ahead and this bolus
in it, and the reservoir holds the dose above the empty level. The first rule that fails
is the reason; the denial says when a bolus could next be granted (None when no time can
be foreseen).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import BolusDecision

from ..history import DAY_MS
from . import limit24h, reservoir


@dataclass(frozen=True)
class BolusFacts:
    now_ms: int
    running: bool
    has_patient_bolus: bool
    high_alarm_active: bool
    bolus_active_until_ms: int | None  # end of the bolus in progress, or None
    lockout_until_ms: int
    boluses_in_window: int
    max_per_24h: int
    oldest_start_in_window_ms: int | None
    dose_fg: int
    window: limit24h.Window | None  # None without a patient bolus
    reservoir_nl: int
    bolus_volume_nl: int
    empty_level_nl: int


@dataclass(frozen=True)
class Verdict:
    decision: BolusDecision
    next_available_at_ms: int | None

    @property
    def granted(self) -> bool:
        return self.decision is BolusDecision.GRANTED


def decide(f: BolusFacts) -> Verdict:
    if not f.running:
        return Verdict(BolusDecision.NOT_RUNNING, None)
    if not f.has_patient_bolus or f.window is None:
        return Verdict(BolusDecision.NO_PATIENT_BOLUS, None)
    if f.high_alarm_active:
        return Verdict(BolusDecision.ALARM_ACTIVE, None)
    if f.bolus_active_until_ms is not None:
        return Verdict(BolusDecision.BOLUS_IN_PROGRESS, max(f.bolus_active_until_ms, f.lockout_until_ms))
    if f.now_ms < f.lockout_until_ms:
        return Verdict(BolusDecision.LOCKOUT, f.lockout_until_ms)
    if f.boluses_in_window >= f.max_per_24h:
        nxt = f.oldest_start_in_window_ms + DAY_MS if f.oldest_start_in_window_ms is not None else None
        return Verdict(BolusDecision.COUNT_LIMIT, nxt)
    # Only now the projection, which costs a scan of the next day: the cheaper rules
    # above answer most presses (lockout above all).
    if limit24h.max_window_with_fg(f.window, f.dose_fg) > f.window.max_dose_24h_fg:
        return Verdict(BolusDecision.DOSE_LIMIT, limit24h.lifts_at_ms(f.window, f.dose_fg))
    if not reservoir.holds(f.reservoir_nl, f.bolus_volume_nl, f.empty_level_nl):
        return Verdict(BolusDecision.RESERVOIR, None)
    return Verdict(BolusDecision.GRANTED, None)
