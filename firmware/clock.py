"""The controller's clock: the pump's time, never taken back.

Every pump-link message carries the pump's time; the controller keeps none of its own.
`now_ms` is the pump's time plus a skew (rules/clock.py grows it at a boot where the pump's
time went back), and never goes back within a boot either: a report held up on the link
carries an older time than one already seen. Local time, which the basal schedule runs
on, is the pump's real-time clock at boot plus the offset clock settings made, plus the
time since the boot. Parts read the clock; only the controller moves it.
"""

from __future__ import annotations


class Clock:
    def __init__(self) -> None:
        self.now_ms = 0
        self.skew_ms = 0  # controller time minus pump time
        self.boot_ms = 0  # controller time at the last boot
        self.rtc_at_boot_s = 0
        self.offset_s = 0  # local time minus the real-time clock

    def observe(self, pump_ms: int) -> None:
        """Time from a message: the clock moves forward to it, never back."""
        t = pump_ms + self.skew_ms
        if t > self.now_ms:
            self.now_ms = t

    def boot(self, pump_ms: int, rtc_s: int, skew_ms: int, offset_s: int) -> None:
        self.skew_ms = skew_ms
        self.offset_s = offset_s
        self.now_ms = self.boot_ms = pump_ms + skew_ms
        self.rtc_at_boot_s = rtc_s

    def to_pump_ms(self, ms: int) -> int:
        """A controller time as the pump counts it (for SLEEP_UNTIL)."""
        return ms - self.skew_ms

    @property
    def now_s(self) -> int:
        return self.now_ms // 1000

    @property
    def local_ms(self) -> int:
        return (self.rtc_at_boot_s + self.offset_s) * 1000 + (self.now_ms - self.boot_ms)

    @property
    def clock_s(self) -> int:
        return self.local_ms // 1000

    def set_local(self, clock_s: int) -> None:
        """A clock setting: local time is clock_s from now on."""
        self.offset_s += clock_s - self.clock_s
