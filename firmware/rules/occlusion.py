"""Occlusion: outlet pressure over the threshold for a whole dwell (SR-020).

A single pressure spike is not an occlusion; pressure held over the threshold for the
dwell time is, and it stops the run at once with a high alarm (IEC 60601-2-24).
"""

from __future__ import annotations


def confirmed(high_since_ms: int | None, now_ms: int, dwell_ms: int) -> bool:
    """SR-020: outlet pressure has been over the threshold since high_since_ms for at
    least the dwell."""
    return high_since_ms is not None and now_ms - high_since_ms >= dwell_ms
