"""Firmware settings that are not part of a prescription. Defaults from
../shared/domain.md; every figure can be overridden (FirmwareConfig(...), or a TOML file
read at the edge: firmware/board/config.py, `--firmware-config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class FirmwareConfig:
    # Delivery stops at this residual (implantable pumps cannot empty the reservoir).
    empty_reservoir_ul: int = 1_000
    # Occlusion: outlet pressure at or above this for the dwell raises the alarm.
    occlusion_pressure_pa: int = 50_000
    occlusion_dwell_ms: int = 30_000
    # While a stall or occlusion alarm stands, ask the pump for sensors this often.
    sensor_poll_ms: int = 60_000
    # Refill discrepancy: withdrawn vs expected beyond this is consequential (Maino 2017):
    # 1 mL on a pump up to 20 mL, 2 mL above.
    refill_discrepancy_small_ul: int = 1_000
    refill_discrepancy_large_ul: int = 2_000
    # Alarm tones: high priority two-tone often, medium single tone about hourly, low daily.
    tone_interval_high_ms: int = 5 * 60_000
    tone_interval_medium_ms: int = 60 * 60_000
    tone_interval_low_ms: int = 24 * 60 * 60_000
    # Acknowledging silences an alarm's tone for this long (its condition may still hold).
    silence_high_ms: int = 30 * 60_000
    silence_medium_ms: int = 24 * 60 * 60_000
    silence_low_ms: int = 7 * 24 * 60 * 60_000
    # A pump left stopped reminds (rules/reminder.py): therapy not running this long, with a
    # prescription and a fill, raises the therapy_stopped alarm; a run this long starts the
    # count afresh (the Generic PCA requirements' "paused too long").
    therapy_stopped_alarm_ms: int = 60 * 60_000
    # Strokes owed to basal after a bolus are paid out at this multiple of the fastest interval.
    payout_interval_factor: int = 2
    # Basal owed for longer than this (at the schedule's highest rate) is given up, not
    # caught up: more than the longest bolus (1 h) holds back, with room to spare.
    basal_catchup_max_ms: int = 2 * 60 * 60_000
    # A timed bolus not started at its time (held by a bolus in progress, or the
    # controller was down) may still start this long after it; later it is missed, never
    # given late. As long as the longest bolus (1 h), so one in progress never costs it.
    timed_bolus_grace_ms: int = 60 * 60_000
    # Event log ring capacity.
    log_capacity: int = 10_000
    # A frame that fails authentication is answered with a NAK within a budget per key id
    # it claims, a token bucket in pump time: this many at once, one more each interval;
    # beyond it the frame is dropped unanswered (and counted, SR-056). There is no lockout:
    # an authentic frame with a fresh counter is always served (SR-055).
    auth_nak_burst: int = 5
    auth_nak_every_ms: int = 60_000
    # Refusals and authentication failures in the event log (SR-056): per kind, this many
    # entries at once and one more each interval; the rest are counted, and the count is
    # logged as one entry when the kind has budget again. Seven kinds at 12 a day (plus
    # the burst) leave the ring a month of therapy records: SR-056 has the arithmetic.
    refusal_log_burst: int = 8
    refusal_log_every_ms: int = 2 * 60 * 60_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"firmware config: {f.name} must be a positive integer, got {v!r}")
