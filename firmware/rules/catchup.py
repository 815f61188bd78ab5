"""Basal that could not be delivered for a long time is given up, not caught up (SR-043).

Basal owed while a bolus holds it back, or while a lost report is recovered, is paid out
after, at a gentle pace: that is minutes of basal, and nothing is lost. Basal owed for
hours (the pump's time leapt forward, delivery was held that long) would come out as a
burst of hours of drug in minutes. So the accumulator never holds more than the catch-up
limit's worth at the schedule's highest rate: the rest is given up, whole strokes at a
time, and logged.
"""

from __future__ import annotations

from ..dose import FG_PER_NG


def strokes_to_forfeit(owed: int, stroke_cost: int, max_rate_ng_per_day: int, catchup_max_ms: int) -> int:
    """SR-043: whole strokes of owed basal (owed and stroke_cost in fg*ms/day units, as
    dose.BasalAccumulator keeps them) beyond catchup_max_ms at the highest rate."""
    if stroke_cost <= 0:
        return 0
    keep = max_rate_ng_per_day * FG_PER_NG * catchup_max_ms
    return max(0, owed - keep) // stroke_cost
