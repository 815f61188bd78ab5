"""The event log: a bounded ring of numbered entries that never reuses a number."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from protocol.codes import LogEvent


@dataclass(frozen=True)
class LogRecord:
    seq: int
    time_s: int
    event: LogEvent
    arg0: int = 0
    arg1: int = 0


class EventLog:
    def __init__(self, capacity: int, next_seq: int = 1) -> None:
        self.entries: deque[LogRecord] = deque(maxlen=capacity)
        self.next_seq = next_seq

    def add(self, time_s: int, event: LogEvent, arg0: int = 0, arg1: int = 0) -> LogRecord:
        rec = LogRecord(self.next_seq, time_s, event, arg0 & 0xFFFFFFFF, arg1 & 0xFFFFFFFF)
        self.next_seq += 1
        self.entries.append(rec)
        return rec

    @property
    def oldest_seq(self) -> int:
        return self.entries[0].seq if self.entries else self.next_seq

    def read(self, from_seq: int, max_entries: int) -> list[LogRecord]:
        if not self.entries:
            return []
        start = max(0, from_seq - self.entries[0].seq)
        return [self.entries[i] for i in range(start, min(len(self.entries), start + max_entries))]
