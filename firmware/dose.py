"""Dose arithmetic: integers only, drug in ng (or fg, 1e-6 ng, where exactness needs it),
volume in nL, time in ms. Dose to volume goes through the concentration (ng per mL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

MS_PER_DAY = 86_400_000
NL_PER_ML = 1_000_000
FG_PER_NG = 1_000_000


class Step(Protocol):
    start_s: int
    rate_ng_per_day: int


def volume_nl(dose_ng: int, concentration_ng_per_ml: int) -> int:
    """nL that carry dose_ng (rounded down)."""
    return dose_ng * NL_PER_ML // concentration_ng_per_ml


def stroke_fg(stroke_nl: int, concentration_ng_per_ml: int) -> int:
    """Drug in one stroke, exactly: nL * ng/mL = 1e-6 ng = 1 fg."""
    return stroke_nl * concentration_ng_per_ml


def strokes_for(dose_ng: int, stroke_fg: int) -> int:
    """Whole strokes of stroke_fg each nearest to a dose (at least one)."""
    return max(1, (dose_ng * FG_PER_NG + stroke_fg // 2) // stroke_fg)


def rate_at(steps: Sequence[Step], tod_ms: int) -> int:
    rate = steps[-1].rate_ng_per_day
    for s in steps:
        if s.start_s * 1000 <= tod_ms:
            rate = s.rate_ng_per_day
        else:
            break
    return rate


def next_change_ms(steps: Sequence[Step], tod_ms: int) -> int:
    """Time of day (ms, possibly MS_PER_DAY) when the rate next changes after tod_ms."""
    for s in steps:
        if s.start_s * 1000 > tod_ms:
            return s.start_s * 1000
    return MS_PER_DAY + steps[0].start_s * 1000


def basal_integral_fg_ms(steps: Sequence[Step], from_ms: int, to_ms: int) -> int:
    """Integral of the schedule over local-time ms [from_ms, to_ms), in ng*ms/day units
    times FG_PER_NG (so dividing by MS_PER_DAY gives fg). Exact."""
    total = 0
    t = from_ms
    while t < to_ms:
        tod = t % MS_PER_DAY
        seg_end = min(to_ms, t - tod + next_change_ms(steps, tod))
        total += rate_at(steps, tod) * (seg_end - t)
        t = seg_end
    return total * FG_PER_NG


class BasalAccumulator:
    """Basal owed, exactly: accumulates rate x time, pays out stroke by stroke.

    `owed` is in fg*ms/day units (fg times MS_PER_DAY): one stroke of c ng/mL costs
    stroke_nl * c * MS_PER_DAY. Rates that are not a whole number of strokes per hour
    come out exact over any run; nothing is ever dropped, only held."""

    def __init__(self, owed: int = 0, at_ms: int = 0) -> None:
        self.owed = owed
        self.at_ms = at_ms  # local-time ms up to which owed is counted

    def accrue(self, steps: Sequence[Step], to_ms: int) -> None:
        if to_ms > self.at_ms:
            self.owed += basal_integral_fg_ms(steps, self.at_ms, to_ms)
            self.at_ms = to_ms
        elif to_ms < self.at_ms:
            # The clock went back (clock set): accrual restarts from the new time, so basal
            # is owed for the time that passes from here on; what was owed is kept.
            self.at_ms = to_ms

    def strokes_due(self, cost: int) -> int:
        return self.owed // cost if cost > 0 else 0

    def pay(self, cost: int) -> None:
        self.owed -= cost

    def due_at_ms(self, steps: Sequence[Step], cost: int, horizon_ms: int = MS_PER_DAY) -> int | None:
        """Local-time ms when the next stroke falls due, or None beyond the horizon."""
        need = cost - self.owed
        if need <= 0:
            return self.at_ms
        t = self.at_ms
        end = self.at_ms + horizon_ms
        day_total = basal_integral_fg_ms(steps, 0, MS_PER_DAY)  # the schedule repeats daily
        while t < end:
            tod = t % MS_PER_DAY
            if tod == 0 and day_total and need > day_total:
                # Whole days at once (a low-reservoir projection looks months ahead), leaving
                # the last, partial day to the walk below.
                days = min((need - 1) // day_total, (end - t) // MS_PER_DAY)
                if days:
                    need -= days * day_total
                    t += days * MS_PER_DAY
                    continue
            seg_end = min(end, t - tod + next_change_ms(steps, tod))
            r = rate_at(steps, tod) * FG_PER_NG
            seg = r * (seg_end - t)
            if r and seg >= need:
                return t + -(-need // r)
            need -= seg
            t = seg_end
        return None
