"""Alarms: priorities, latching, acknowledgement and the tones a patient hears.

An alarm is raised when its condition becomes true and latches: it stays listed until
its condition is gone *and* it has been acknowledged. Acknowledging silences its tone
for a while; it never clears a condition that still holds. Tones repeat by priority
(IEC 60601-1-8: high two-tone often, medium single tone about hourly, low rarely).
Which latched alarms hold therapy halted is rules/recovery.py's to say.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import AlarmId, BeepPattern, Priority

from .config import FirmwareConfig
from .rules import recovery

PRIORITY: dict[AlarmId, Priority] = {
    AlarmId.LOW_RESERVOIR: Priority.MEDIUM,
    AlarmId.EMPTY_RESERVOIR: Priority.HIGH,
    AlarmId.MOTOR_STALL: Priority.HIGH,
    AlarmId.OCCLUSION: Priority.HIGH,
    AlarmId.DELIVERY_SHORTFALL: Priority.MEDIUM,
    AlarmId.BATTERY_ERI: Priority.MEDIUM,
    AlarmId.BATTERY_EOS: Priority.HIGH,
    AlarmId.MEMORY_ERROR: Priority.HIGH,
    AlarmId.REFILL_DISCREPANCY: Priority.MEDIUM,
    AlarmId.PUMP_LINK_LOST: Priority.HIGH,
    AlarmId.CLOCK_ERROR: Priority.MEDIUM,
    AlarmId.IMPOSSIBLE_WITHDRAWAL: Priority.MEDIUM,
    AlarmId.THERAPY_STOPPED: Priority.LOW,  # medium for a drug whose withdrawal is dangerous (rules/reminder.py)
}
PATTERN = {
    Priority.HIGH: BeepPattern.TWO_TONE,
    Priority.MEDIUM: BeepPattern.SINGLE_TONE,
    Priority.LOW: BeepPattern.SINGLE_TONE,
}


@dataclass
class Alarm:
    alarm: AlarmId
    priority: Priority
    raised_ms: int
    condition: bool = True
    acknowledged: bool = False
    silenced_until_ms: int = 0
    next_tone_ms: int = 0
    # Its condition went and, by its recovery policy, therapy went on without a reset
    # (rules/recovery.py): latched until acknowledged, it no longer holds therapy.
    recovered: bool = False

    def latched(self, policy: recovery.Policy = recovery.Policy.HOLD) -> recovery.LatchedAlarm:
        return recovery.LatchedAlarm(self.priority, self.condition, self.recovered, policy)


class AlarmSet:
    def __init__(self, config: FirmwareConfig) -> None:
        self.config = config
        self.active: dict[AlarmId, Alarm] = {}

    def _interval(self, p: Priority) -> int:
        c = self.config
        return {Priority.HIGH: c.tone_interval_high_ms, Priority.MEDIUM: c.tone_interval_medium_ms}.get(
            p, c.tone_interval_low_ms
        )

    def _silence(self, p: Priority) -> int:
        c = self.config
        return {Priority.HIGH: c.silence_high_ms, Priority.MEDIUM: c.silence_medium_ms}.get(p, c.silence_low_ms)

    def condition(self, alarm: AlarmId, present: bool, now_ms: int, priority: Priority | None = None) -> str | None:
        """Report an alarm's condition (raised at `priority`, else its usual one). Returns
        "raised", "cleared", "changed" (still latched, its condition changed) or None
        (nothing changed)."""
        a = self.active.get(alarm)
        if present:
            if a is None:
                self.active[alarm] = Alarm(alarm, priority or PRIORITY[alarm], now_ms, next_tone_ms=now_ms)
                return "raised"
            if not a.condition:
                # Came back while still latched: it needs acknowledging again, and it holds
                # therapy again if it had recovered.
                a.condition = True
                a.acknowledged = False
                a.recovered = False
                a.silenced_until_ms = 0
                a.next_tone_ms = now_ms
                return "changed"
            return None
        if a is None or not a.condition:
            return None
        a.condition = False
        if a.acknowledged:
            del self.active[alarm]
            return "cleared"
        return "changed"

    def clear(self, alarm: AlarmId) -> bool:
        """Remove outright (refill completion clears the reservoir alarms)."""
        return self.active.pop(alarm, None) is not None

    def acknowledge(self, alarm: AlarmId, now_ms: int) -> tuple[bool, str | None]:
        """(was it active, "cleared" if acknowledging ended it)."""
        a = self.active.get(alarm)
        if a is None:
            return False, None
        a.acknowledged = True
        a.silenced_until_ms = now_ms + self._silence(a.priority)
        if not a.condition:
            del self.active[alarm]
            return True, "cleared"
        return True, None

    def holding(self) -> list[Alarm]:
        """The alarms that hold therapy halted (rules/recovery.py), in the order raised."""
        return [a for a in self.active.values() if recovery.holds_therapy(a.latched())]

    def holds_therapy(self) -> bool:
        """SR-020, SR-021: the latched-alarm interlock's fact."""
        return any(recovery.holds_therapy(a.latched()) for a in self.active.values())

    def silenced(self, alarm: AlarmId, now_ms: int) -> bool:
        a = self.active.get(alarm)
        return a is not None and now_ms < a.silenced_until_ms

    def tones_due(self, now_ms: int) -> BeepPattern | None:
        """The pattern to sound now (the highest priority due), rescheduling each due alarm."""
        best: Priority | None = None
        for a in self.active.values():
            if now_ms < a.silenced_until_ms:
                a.next_tone_ms = max(a.next_tone_ms, a.silenced_until_ms)
                continue
            if a.next_tone_ms <= now_ms:
                a.next_tone_ms = now_ms + self._interval(a.priority)
                if best is None or a.priority > best:
                    best = a.priority
        return PATTERN[best] if best is not None else None

    def next_tone_ms(self) -> int | None:
        times = [max(a.next_tone_ms, a.silenced_until_ms) for a in self.active.values()]
        return min(times, default=None)

    def to_data(self) -> list[list[int]]:
        return [
            [
                int(a.alarm),
                a.raised_ms,
                int(a.condition),
                int(a.acknowledged),
                a.silenced_until_ms,
                a.next_tone_ms,
                int(a.priority),
                int(a.recovered),
            ]
            for a in self.active.values()
        ]

    def load(self, data: list[list[int]]) -> None:
        self.active.clear()
        for row in data:
            alarm, raised, cond, ack, silenced, nxt = row[:6]
            aid = AlarmId(alarm)
            # (Rows written before issue 12 hold neither the priority nor the recovery.)
            priority = Priority(row[6]) if len(row) > 6 else PRIORITY[aid]
            recovered = bool(row[7]) if len(row) > 7 else False
            self.active[aid] = Alarm(aid, priority, raised, bool(cond), bool(ack), silenced, nxt, recovered)
