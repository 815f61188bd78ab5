"""What alarms and therapy states mean for delivery: the one place these consequences are
decided (SR-020, SR-021, SR-015, SR-016, SR-039).

  * A high-priority alarm halts therapy, and the guard refuses every run while it stands.
  * Leaving RUNNING stops the run going on and ends the bolus in progress (stopped by a
    person, or interrupted); no basal accrues while therapy does not run.
  * Alarms latch: acknowledging silences one, it never clears a condition that still
    holds; a halted pump resumes only once the condition is gone and a clinician has
    acknowledged it, and only to the state it was halted from.
  * After a reset the pump returns to the state NVM held, halted if a high alarm stands.
"""

from __future__ import annotations

from protocol.codes import AlarmId, BeepPattern, BolusOutcome, LogEvent, Priority, TherapyState
from protocol.messages import AlarmCleared, AlarmRaised, Beep, TherapyStateChanged

from .alarms import AlarmSet
from .clock import Clock
from .engine import Engine
from .guard import Guard
from .outbox import Outbox
from .rules import reservoir as reservoir_rule
from .therapy import Therapy

RUNNING, STOPPED, HALTED, REFILL = TherapyState.RUNNING, TherapyState.STOPPED, TherapyState.HALTED, TherapyState.REFILL


class Supervisor:
    def __init__(self, clock: Clock, outbox: Outbox, alarms: AlarmSet, engine: Engine, guard: Guard) -> None:
        self.clock = clock
        self.outbox = outbox
        self.alarms = alarms
        self.engine = engine
        self.guard = guard
        self.therapy = Therapy(self._can_deliver, self._changed)
        self.resume_running = False  # what a refill or a halt returns to
        self.saved_state = STOPPED  # the state NVM held, until the boot is over

    @property
    def state(self) -> TherapyState:
        return self.therapy.state

    @property
    def running(self) -> bool:
        return self.therapy.state is RUNNING

    def high_alarm(self) -> bool:
        return self.alarms.high_active()

    # ------------------------------------------------------------ alarms

    def set_condition(self, alarm: AlarmId, present: bool) -> None:
        held = self.alarms.active.get(alarm)
        # Conditions are reported at every stroke and wake-up: most change nothing.
        if held is None and not present:
            return
        if held is not None and present and held.condition:
            return
        if not present and held is not None and held.condition and held.priority is Priority.HIGH:
            # A high alarm halted therapy. Acknowledging it while its condition held only
            # silenced it: resuming is a person's decision once the condition is gone, so
            # it stays latched (and therapy halted) until acknowledged again.
            held.acknowledged = False
        change = self.alarms.condition(alarm, present, self.clock.now_ms)
        if change is None:
            return
        if change == "raised":
            a = self.alarms.active[alarm]
            self.outbox.record(LogEvent.ALARM_RAISED, int(alarm), int(a.priority))
            self.outbox.host_event(AlarmRaised(time_s=self.clock.now_s, alarm=alarm, priority=a.priority))
            if a.priority is Priority.HIGH:
                self.halt()  # (a lower alarm raised while a high one stands halts nothing more)
        elif change == "cleared":
            self._cleared(alarm)
        self.outbox.touch("alarms")

    def latch(self, alarm: AlarmId) -> None:
        """A one-shot condition (a memory error, a refill discrepancy, a clock that went
        back): raised, and latched until a clinician acknowledges it."""
        self.set_condition(alarm, True)
        self.set_condition(alarm, False)

    def acknowledge(self, alarm: AlarmId) -> tuple[bool, bool]:
        """(was it active, is it still active)."""
        was, change = self.alarms.acknowledge(alarm, self.clock.now_ms)
        if was:
            self.outbox.record(LogEvent.ALARM_ACKNOWLEDGED, int(alarm))
            self.outbox.touch("alarms")
            if not self.alarms.active:
                self.outbox.send(Beep(pattern=BeepPattern.SILENT, repeat=1, repeat_interval_ms=0))
        if change == "cleared":
            self._cleared(alarm)
        return was, alarm in self.alarms.active

    def clear(self, alarm: AlarmId) -> None:
        """Remove outright (a refill clears the reservoir alarms)."""
        if self.alarms.clear(alarm):
            self._cleared(alarm)

    def _cleared(self, alarm: AlarmId) -> None:
        self.outbox.record(LogEvent.ALARM_CLEARED, int(alarm))
        self.outbox.host_event(AlarmCleared(time_s=self.clock.now_s, alarm=alarm))
        self.outbox.touch("alarms")
        if self.therapy.state is HALTED and not self.alarms.high_active():
            if self.resume_running and self.therapy.fire("recover_running"):
                return
            self.therapy.fire("recover_stopped")

    # ------------------------------------------------------------ faults

    def halt(self) -> None:
        if self.therapy.state in (RUNNING, STOPPED):
            self.resume_running = self.therapy.state is RUNNING or self.resume_running
            self.therapy.fire("halt")
        self.guard.stop()  # the latched-alarm interlock

    def fault_stop(self) -> None:
        """A fault stops the current stroke run at once; a bolus in it is abandoned."""
        self.guard.stop()
        self.engine.end_bolus(BolusOutcome.INTERRUPTED)

    def check_reservoir(self) -> None:
        """SR-016, SR-046: the low alarm at the prescribed residual; at the empty level
        delivery stops with a high alarm, never silently. Not before a fill is recorded."""
        if not self.engine.reservoir_known:
            return  # (a pump never filled: no low or empty alarm on a guess, and no halt)
        rx = self.engine.rx
        if rx is not None:
            self.set_condition(
                AlarmId.LOW_RESERVOIR, reservoir_rule.is_low(self.engine.reservoir.volume_nl, rx.low_reservoir_ul)
            )
        empty = self.engine.reservoir_empty()
        if empty and AlarmId.EMPTY_RESERVOIR not in self.alarms.active:
            self.fault_stop()
        if empty or AlarmId.EMPTY_RESERVOIR in self.alarms.active:
            self.set_condition(AlarmId.EMPTY_RESERVOIR, empty)

    # ------------------------------------------------------------ states

    def leave_boot(self) -> None:
        """SR-015: back to the state NVM held; a critical memory error, or a standing high
        alarm on a pump that was running, halts it (one a clinician had stopped comes back
        stopped: nothing runs in either, and start is refused)."""
        saved = self.saved_state
        t = self.therapy
        if self.alarms.active.get(AlarmId.MEMORY_ERROR) is not None:
            t.fire("boot_to_halted")
        elif saved is REFILL:
            t.fire("boot_to_refill")
        elif saved is HALTED or (saved is RUNNING and self.alarms.high_active()):
            t.fire("boot_to_halted")
        elif saved is RUNNING and t.fire("boot_to_running"):
            pass
        else:
            t.fire("boot_to_stopped")

    def _can_deliver(self) -> bool:
        e = self.engine
        return (
            e.rx is not None
            and e.hardware.limits is not None
            and not self.alarms.high_active()
            and not (e.reservoir_empty())
        )

    def _changed(self, old: TherapyState, new: TherapyState) -> None:
        engine = self.engine
        if old is RUNNING and engine.rx is not None:
            # Bring basal up to the moment delivery stops. The accumulator is brought up
            # to date only between runs, so mid-run it has paid for strokes made but not
            # yet accrued the time they covered; restarting accrual from a later time
            # without this would lose that time's basal (a whole run's worth, at worst).
            engine.acc.accrue(engine.rx.basal, self.clock.local_ms)
        self.outbox.record(LogEvent.THERAPY_STATE, int(old), int(new))
        self.outbox.touch("state")
        self.outbox.host_event(TherapyStateChanged(time_s=self.clock.now_s, old_state=old, new_state=new))
        if new is not RUNNING:
            self.guard.stop()
            engine.end_bolus(BolusOutcome.STOPPED if new is STOPPED else BolusOutcome.INTERRUPTED)
        else:
            engine.restart_accrual()  # SR-039: none is owed for time spent not running
