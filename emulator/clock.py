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
    # The scheduler while the timer waits in its queue (None once run or cancelled): a
    # cancelled timer stays queued until it is dropped, and the scheduler counts them.
    owner: Scheduler | None = field(compare=False, default=None, repr=False)

    def cancel(self) -> None:
        self.cancelled = True
        if self.owner is not None:
            self.owner._dead += 1
            self.owner = None


# A cancelled timer stays in the heap until it reaches the top (cancelling costs O(1)).
# Most never do: each SLEEP_UNTIL replaces the wake timer, so a host flooding requests
# while time stands still (lockstep) would pile up cancelled wakes without bound. The
# heap is rebuilt without them once they outnumber the live ones (and this floor).
COMPACT_FLOOR = 256


class Scheduler:
    """A deterministic event queue: ties at the same millisecond run in the order
    scheduled. Its memory is bounded by the timers pending, not by those ever cancelled."""

    def __init__(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms
        self._heap: list[Timer] = []
        self._order = itertools.count()
        self.events_run = 0
        self._dead = 0  # cancelled timers still in the heap

    def at(self, at_ms: int, action: Callable[[], None], name: str = "") -> Timer:
        t = Timer(max(at_ms, self.now_ms), next(self._order), action, name, False, self)
        if self._dead > COMPACT_FLOOR and 2 * self._dead > len(self._heap):
            self._heap = [x for x in self._heap if not x.cancelled]
            heapq.heapify(self._heap)  # (at_ms, order) keys: the same order of ties as before
            self._dead = 0
        heapq.heappush(self._heap, t)
        return t

    def next_due_ms(self) -> int | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0].at_ms if heap else None

    def queued(self) -> int:
        """Timers in the queue, cancelled ones not yet dropped included (its memory)."""
        return len(self._heap)

    def run_next(self, limit_ms: int) -> bool:
        """Run the earliest event due at or before limit_ms; False if there is none."""
        due = self.next_due_ms()
        if due is None or due > limit_ms:
            return False
        t = heapq.heappop(self._heap)
        t.owner = None  # out of the queue: cancelling it now leaves nothing behind
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
