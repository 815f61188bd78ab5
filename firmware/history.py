"""Rolling 24 h delivery history in bounded memory.

Drug delivered is kept in one-minute buckets (fg exact) with a running total, so "drug
in the last 24 h" costs O(1) per stroke; patient bolus starts are kept as a short list.
A bucket counts toward the last 24 h while any part of its minute does, so window sums
err on the side of too much, never too little. A rolling 24 h that ends part-way into a
minute touches 1441 minutes (the oldest one partly), so the window holds 1441 buckets:
with 1440 a delivery late in the oldest minute would leave the sum up to a minute before
it leaves the rolling 24 h.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
BUCKETS = DAY_MS // MINUTE_MS + 1  # minutes a rolling 24 h can touch
MAX_STARTS = 64


class DeliveryHistory:
    def __init__(self) -> None:
        self._fg = [0] * BUCKETS
        self._minute = [-1] * BUCKETS  # which absolute minute each slot holds
        self._head = -1  # latest minute seen; slots older than head - (BUCKETS - 1) are evicted
        self._total = 0
        self.dirty_minutes: set[int] = set()  # changed since the last NVM commit
        self.bolus_starts: deque[int] = deque(maxlen=MAX_STARTS)  # patient bolus start times, ms

    def _advance(self, m: int) -> None:
        if m <= self._head:
            return
        first = max(self._head + 1, m - BUCKETS + 1)
        for mm in range(first, m + 1):
            i = mm % BUCKETS
            if self._minute[i] != mm:
                self._total -= self._fg[i]
                self._fg[i] = 0
                self._minute[i] = mm
        if m - self._head >= BUCKETS:
            self._total = 0
        self._head = m

    def add(self, now_ms: int, fg: int) -> None:
        m = now_ms // MINUTE_MS
        self._advance(m)
        if m < self._head - BUCKETS + 1:
            return  # older than the window: nothing to count
        i = m % BUCKETS
        self._fg[i] += fg
        self._total += fg
        self.dirty_minutes.add(m)

    def window_fg(self, now_ms: int) -> int:
        """Drug delivered in the 24 h up to now (inclusive of the current minute)."""
        self._advance(now_ms // MINUTE_MS)
        return self._total

    def per_minute(self, now_ms: int) -> list[int]:
        """fg delivered in each of the last BUCKETS minutes, oldest first (index BUCKETS - 1 = now)."""
        m = now_ms // MINUTE_MS
        self._advance(m)
        # Once advanced to m, slot i holds the minute of the window that is i modulo
        # BUCKETS (or nothing, at 0 fg): the window oldest first is a rotation.
        start = (m + 1) % BUCKETS
        return self._fg[start:] + self._fg[:start]

    def bucket(self, minute: int) -> int:
        i = minute % BUCKETS
        return self._fg[i] if self._minute[i] == minute else 0

    def record_bolus_start(self, now_ms: int) -> None:
        self.bolus_starts.append(now_ms)

    def boluses_in_window(self, now_ms: int) -> int:
        return sum(1 for t in self.bolus_starts if now_ms - t < DAY_MS)

    def oldest_bolus_in_window(self, now_ms: int) -> int | None:
        return next((t for t in self.bolus_starts if now_ms - t < DAY_MS), None)

    @classmethod
    def from_data(cls, buckets: dict, bolus_starts: Iterable[int]) -> DeliveryHistory:
        h = cls()
        for mm, f in sorted((int(k), v) for k, v in buckets.items()):
            h.add(mm * MINUTE_MS, f)
        h.bolus_starts.extend(bolus_starts)
        h.dirty_minutes.clear()
        return h
