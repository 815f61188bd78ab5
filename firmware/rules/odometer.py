"""Counting strokes no report covered (SR-008, SR-019).

The pump's odometer counts every stroke the mechanism made. When it shows more than the
reports said (a run's last report was lost, or a run went on while the controller was
dead until the watchdog stopped it), the difference is delivery, but only as much of it as
the runs the controller commanded could have made: each no more than its strokes still
unreported, and no faster than its interval since its start or its last report. Anything
beyond is not counted as delivered and is logged (a forged or faulty odometer must not
move the reservoir estimate or fill the 24 h window with strokes that never were).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Outstanding:
    strokes_left: int  # commanded, not yet reported made
    interval_ms: int
    since_ms: int  # controller time of its start or its last report


def unreported_bound(runs: Iterable[Outstanding], now_ms: int) -> int:
    """SR-008: the most strokes these runs could have made that no report covered. A run
    makes its first stroke at once, the next one interval later: +1 covers either."""
    return sum(min(r.strokes_left, max(0, now_ms - r.since_ms) // r.interval_ms + 1) for r in runs)
