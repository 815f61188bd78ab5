"""The patient bolus rule (the PTM button): a pure decision over the facts at hand.

Granted only when therapy runs, the prescription has a patient bolus, no high-priority
alarm is active, no bolus is in progress, the lockout has passed (since the start of the
last patient bolus, and since programming or a refill), fewer than the allotted boluses
started in the rolling 24 h, the largest rolling-24 h total from now on stays within the
hard limit with planned basal and this bolus included, and the reservoir holds the dose
above the empty level. The first rule that fails is the reason; the denial says when a
bolus could next be granted (None when no time can be foreseen).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import BolusDecision

from .history import DAY_MS, MINUTE_MS


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
    projected_max_window_fg: int  # with this bolus and planned basal
    max_dose_24h_fg: int
    past_per_minute_fg: tuple[int, ...]  # for estimating when the dose limit lifts
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
    if not f.has_patient_bolus:
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
    if f.projected_max_window_fg > f.max_dose_24h_fg:
        return Verdict(BolusDecision.DOSE_LIMIT, _dose_lifts_at(f))
    if f.reservoir_nl - f.bolus_volume_nl < f.empty_level_nl:
        return Verdict(BolusDecision.RESERVOIR, None)
    return Verdict(BolusDecision.GRANTED, None)


def _dose_lifts_at(f: BolusFacts) -> int | None:
    """Estimate: when enough past delivery has left the window to make room. Basal that
    runs meanwhile is ignored here; the request is checked in full again when made."""
    need = f.projected_max_window_fg - f.max_dose_24h_fg
    dropped = 0
    for k, fg in enumerate(f.past_per_minute_fg):
        dropped += fg
        if dropped >= need:
            return (f.now_ms // MINUTE_MS + k + 1) * MINUTE_MS
    return None
