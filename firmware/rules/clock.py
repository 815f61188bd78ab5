"""Time, doubted (SR-013, SR-042).

The controller keeps no clock: the pump tells it the time in every message. A pump can
restart from older state (a restored image, a hardware fault), and then its time, and the
real-time clock that local time comes from, go back across the reset. Taken at its word,
the last stroke would lie hours in the future (delivery stops until then) and the basal
owed meanwhile would come out at once. So the controller's time is the pump's plus a
skew that only ever grows, and local time is kept going from where it was: neither ever
goes back across a reset, and the step back is logged and alarmed instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Refusal, out_of_range

CLOCK_MIN_S = 946_684_800  # 2000-01-01
CLOCK_MAX_S = 4_102_444_800  # 2100-01-01
RTC_RESOLUTION_MS = 1_000  # the real-time clock counts whole seconds


def set_clock_refusal(clock_s: int) -> Refusal | None:
    """SR-013: a clock setting must be a date this century."""
    if not CLOCK_MIN_S <= clock_s < CLOCK_MAX_S:
        return out_of_range("clock_s", "the clock must lie in 2000..2099")
    return None


@dataclass(frozen=True)
class BootTime:
    pump_ms: int  # POWER_ON's time
    rtc_s: int  # POWER_ON's real-time clock
    skew_ms: int  # controller time minus pump time, as NVM last held it
    offset_s: int  # local time minus the real-time clock (clock settings), as NVM held it
    seen_ms: int | None  # the latest controller time NVM holds; None on a new pump
    seen_local_ms: int | None  # local time then


@dataclass(frozen=True)
class TimeVerdict:
    skew_ms: int
    offset_s: int
    pump_back_ms: int  # how far the pump's time went back (0: it did not)
    rtc_back_ms: int  # how far local time would have gone back

    @property
    def went_back(self) -> bool:
        return self.pump_back_ms > 0 or self.rtc_back_ms > 0


def at_boot(f: BootTime) -> TimeVerdict:
    """SR-042: the skew and clock offset that keep controller time and local time from
    going back at this boot."""
    pump_back = 0 if f.seen_ms is None else max(0, f.seen_ms - (f.pump_ms + f.skew_ms))
    local_ms = (f.rtc_s + f.offset_s) * 1000
    rtc_back = 0 if f.seen_local_ms is None else max(0, f.seen_local_ms - local_ms)
    if rtc_back < RTC_RESOLUTION_MS:
        rtc_back = 0  # the same second read twice is not a step back
    return TimeVerdict(
        skew_ms=f.skew_ms + pump_back,
        offset_s=f.offset_s + -(-rtc_back // 1000),
        pump_back_ms=pump_back,
        rtc_back_ms=rtc_back,
    )
