"""Reservoir levels: low, empty, what a dose needs above empty, overfill and what a
refill's withdrawal says (SR-016, SR-017, SR-018, SR-045), and when the low level will
come: at the prescription (basal and timed boluses, SR-053) and if the patient also
takes every bolus allowed (the refill date, SR-054).

The controller never sees the physical volume: these rules judge its estimate (the last
fill minus the strokes the mechanism reported made). Nothing is delivered below the empty
level, since an implanted pump cannot be emptied; the low level warns in time for a refill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..dose import MS_PER_DAY, BasalAccumulator, Step, basal_integral_fg_ms

SMALL_PUMP_NL = 20_000_000  # up to 20 mL the tighter refill tolerance applies (Maino 2017)
PROJECTION_HORIZON_MS = 400 * MS_PER_DAY


def is_low(volume_nl: int, low_reservoir_ul: int) -> bool:
    """SR-016: at or below the prescription's low level (a medium alarm)."""
    return volume_nl <= low_reservoir_ul * 1000


def strokes_above_empty(volume_nl: int, empty_level_nl: int, stroke_nl: int) -> int:
    """Whole strokes the estimate holds above the empty level."""
    return max(0, volume_nl - empty_level_nl) // stroke_nl


def is_empty(volume_nl: int, empty_level_nl: int, stroke_nl: int | None) -> bool:
    """SR-016: at the empty level, or so near it that not one more stroke fits above it:
    either way nothing more can be delivered, and that must be said (a high alarm), not
    left as a silent stop. stroke_nl is None before the hardware has said it."""
    if volume_nl <= empty_level_nl:
        return True
    return stroke_nl is not None and strokes_above_empty(volume_nl, empty_level_nl, stroke_nl) == 0


def holds(volume_nl: int, take_nl: int, empty_level_nl: int) -> bool:
    """SR-016: the estimate holds take_nl above the empty level."""
    return volume_nl - take_nl >= empty_level_nl


def overfills(added_nl: int, capacity_nl: int) -> bool:
    """SR-018: the withdrawal at a refill empties the reservoir, so only a fill beyond its
    capacity overfills it (an estimate a few nL above what was withdrawn is no reason to
    refuse the record of a refill)."""
    return added_nl > capacity_nl


def impossible_withdrawal(withdrawn_nl: int, capacity_nl: int) -> bool:
    """SR-045: more withdrawn than the reservoir can hold did not come from it: the
    needle drew CSF through the catheter access port, or pocket fluid."""
    return withdrawn_nl > capacity_nl


def discrepancy_consequential(discrepancy_nl: int, capacity_nl: int, small_ul: int, large_ul: int) -> bool:
    """SR-017: withdrawn against expected beyond 1 mL on a pump up to 20 mL (2 mL above)
    points to a pocket fill or under-delivery."""
    limit_nl = (small_ul if capacity_nl <= SMALL_PUMP_NL else large_ul) * 1000
    return abs(discrepancy_nl) > limit_nl


@dataclass(frozen=True)
class EveryBolus:
    """SR-054: the patient taking every patient bolus allowed, from first_local_ms (the
    first time one could be granted: the lockout in force over, the count allowing)."""

    first_local_ms: int
    dose_fg: int
    lockout_ms: int
    max_per_24h: int

    def count(self, local_ms: int) -> int:
        """Patient boluses started by local_ms: each as soon as the lockout allows, at most
        max_per_24h in any 24 h. The past presses that still count against the first
        day's allotment are left out (only the first one's is known here), so this errs
        toward more boluses: an earlier refill date."""
        if local_ms < self.first_local_ms:
            return 0
        d = local_ms - self.first_local_ms
        if self.lockout_ms * self.max_per_24h <= MS_PER_DAY:
            return self.max_per_24h * (d // MS_PER_DAY) + min(self.max_per_24h, d % MS_PER_DAY // self.lockout_ms + 1)
        return d // self.lockout_ms + 1  # the lockout alone allows fewer than the count


def _basal_between(basal: Sequence[Step], day_fg_ms: int, a: int, b: int) -> int:
    """basal_integral_fg_ms over [a, b), whole days at once."""
    if b <= a:
        return 0
    midnight = a - a % MS_PER_DAY + MS_PER_DAY
    if b <= midnight:
        return basal_integral_fg_ms(basal, a, b)
    last = b - b % MS_PER_DAY
    days = (last - midnight) // MS_PER_DAY
    return basal_integral_fg_ms(basal, a, midnight) + days * day_fg_ms + basal_integral_fg_ms(basal, last, b)


def _daily_by(daily: Sequence[tuple[int, int]], after_local_ms: int, local_ms: int) -> int:
    """Drug (fg) of daily doses (time of day ms, fg) due in (after_local_ms, local_ms]."""
    return sum(fg * ((local_ms - tod) // MS_PER_DAY - (after_local_ms - tod) // MS_PER_DAY) for tod, fg in daily)


def low_at_local_ms(
    basal: Sequence[Step],
    local_ms: int,
    volume_nl: int,
    low_reservoir_ul: int,
    concentration: int,
    daily: Sequence[tuple[int, int]] = (),
    daily_after_local_ms: int | None = None,
    every_bolus: EveryBolus | None = None,
) -> int | None:
    """SR-016, SR-053, SR-054: local time the estimate reaches the low level (volume_nl net
    of a bolus still to come), or None when already there or not within the horizon. It
    uses up the basal schedule, the daily timed boluses (time of day ms, fg) due after
    daily_after_local_ms (one held at now counts now), and with every_bolus every patient
    bolus allowed; a bolus is counted whole when it starts."""
    left_nl = volume_nl - low_reservoir_ul * 1000
    if left_nl <= 0:
        return None
    need = left_nl * concentration * MS_PER_DAY  # fg*ms/day units
    if not daily and every_bolus is None:
        return BasalAccumulator(0, local_ms).due_at_ms(basal, need, horizon_ms=PROJECTION_HORIZON_MS)
    day_fg_ms = basal_integral_fg_ms(basal, 0, MS_PER_DAY)
    after = local_ms if daily_after_local_ms is None else min(daily_after_local_ms, local_ms)

    def used(t: int) -> int:
        fg = _daily_by(daily, after, max(t, local_ms))
        if every_bolus is not None:
            fg += every_bolus.count(t) * every_bolus.dose_fg
        return _basal_between(basal, day_fg_ms, local_ms, t) + fg * MS_PER_DAY

    # used() only grows with time: the first ms at which it reaches what the reservoir
    # holds above the low level, by bisection (a few dozen steps over the horizon).
    lo, hi = local_ms, local_ms + PROJECTION_HORIZON_MS
    if used(hi) < need:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if used(mid) >= need:
            hi = mid
        else:
            lo = mid + 1
    return lo
