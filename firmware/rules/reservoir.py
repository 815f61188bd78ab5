"""Reservoir levels: low, empty, what a dose needs above empty, overfill and what a
refill's withdrawal says (SR-016, SR-017, SR-018, SR-045).

The controller never sees the physical volume: these rules judge its estimate (the last
fill minus the strokes the mechanism reported made). Nothing is delivered below the empty
level, since an implanted pump cannot be emptied; the low level warns in time for a refill.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..dose import MS_PER_DAY, BasalAccumulator, Step

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


def low_at_local_ms(
    basal: Sequence[Step], local_ms: int, volume_nl: int, low_reservoir_ul: int, concentration: int
) -> int | None:
    """SR-016: local time the estimate reaches the low level at the basal schedule (volume_nl
    net of a bolus still to come), or None when already there or not within the horizon."""
    left_nl = volume_nl - low_reservoir_ul * 1000
    if left_nl <= 0:
        return None
    need = left_nl * concentration * MS_PER_DAY  # fg*ms/day units
    return BasalAccumulator(0, local_ms).due_at_ms(basal, need, horizon_ms=PROJECTION_HORIZON_MS)
