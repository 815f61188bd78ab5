"""The battery: voltage falls with charge used by strokes and by time (integers, nV)."""

from __future__ import annotations

MS_PER_HOUR = 3_600_000


class Battery:
    def __init__(self, full_mv: int, nv_per_stroke: int, nv_per_hour: int, used_nv: int = 0) -> None:
        self.full_mv = full_mv
        self.nv_per_stroke = nv_per_stroke
        self.nv_per_hour = nv_per_hour
        self.used_nv = used_nv
        self.forced_mv: int | None = None  # sim fault: battery_mv
        self._time_remainder = 0  # nV*ms not yet counted

    @property
    def mv(self) -> int:
        if self.forced_mv is not None:
            return self.forced_mv
        return max(0, self.full_mv - self.used_nv // 1_000_000)

    def stroke(self) -> None:
        self.used_nv += self.nv_per_stroke

    def elapse(self, ms: int) -> None:
        total = self.nv_per_hour * ms + self._time_remainder
        self.used_nv += total // MS_PER_HOUR
        self._time_remainder = total % MS_PER_HOUR
