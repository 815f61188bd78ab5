"""Virtual time: integer milliseconds and a queue of what falls due when.

Lockstep: time moves only when asked, jumping from one scheduled event to the next, so
thirty simulated days cost only as many steps as there are events. Realtime: the same
queue, drained as the wall clock (scaled by a speed factor) passes each event.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class Timer:
    at_ms: int
    order: int
    action: Callable[[], None] = field(compare=False)
    name: str = field(compare=False, default="")
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """A deterministic event queue: ties at the same millisecond run in the order scheduled."""

    def __init__(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms
        self._heap: list[Timer] = []
        self._order = itertools.count()
        self.events_run = 0

    def at(self, at_ms: int, action: Callable[[], None], name: str = "") -> Timer:
        t = Timer(max(at_ms, self.now_ms), next(self._order), action, name)
        heapq.heappush(self._heap, t)
        return t

    def next_due_ms(self) -> int | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].at_ms if heap else None

    def run_next(self, limit_ms: int) -> bool:
        """Run the earliest event due at or before limit_ms; False if there is none."""
        due = self.next_due_ms()
        if due is None or due > limit_ms:
            return False
        t = heapq.heappop(self._heap)
        self.now_ms = t.at_ms
        self.events_run += 1
        t.action()
        return True

    def pending(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)


class RealtimeClock:
    """Maps wall time to simulated time at a speed factor (speed_milli / 1000)."""

    def __init__(self, sim_ms: int, wall_s: float, speed_milli: int) -> None:
        self.sim0 = sim_ms
        self.wall0 = wall_s
        self.speed_milli = speed_milli

    def sim_at(self, wall_s: float) -> int:
        return self.sim0 + int((wall_s - self.wall0) * self.speed_milli)

    def wall_at(self, sim_ms: int) -> float:
        return self.wall0 + (sim_ms - self.sim0) / self.speed_milli
