"""The beeper: sounds patterns and records every tone with its time (ground truth)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from protocol.codes import BeepPattern

HISTORY_MAX = 100_000  # tones kept for reading back; tones_total counts them all


@dataclass(frozen=True)
class ToneRecord:
    time_ms: int
    pattern: BeepPattern


class Beeper:
    def __init__(self, total: int = 0) -> None:
        self.history: deque[ToneRecord] = deque(maxlen=HISTORY_MAX)
        self.total = total  # tones since manufacture (persisted)
        self.first_index = total  # index of history[0] in the all-time count

    def sound(self, now_ms: int, pattern: BeepPattern) -> None:
        if len(self.history) == HISTORY_MAX:
            self.first_index += 1
        self.history.append(ToneRecord(now_ms, pattern))
        self.total += 1

    def since(self, index: int, limit: int) -> list[ToneRecord]:
        """Tones from all-time index `index` on (older ones dropped from memory are skipped)."""
        start = max(0, index - self.first_index)
        return [self.history[i] for i in range(start, min(len(self.history), start + limit))]
