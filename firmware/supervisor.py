"""What alarms and therapy states mean for delivery: the one place these consequences are
decided (SR-020, SR-021, SR-015, SR-016, SR-039, SR-050, SR-051).

  * A high-priority alarm halts therapy, and the guard refuses every run while it holds
    therapy (rules/recovery.py).
  * Leaving RUNNING stops the run going on and ends the bolus in progress (stopped by a
    person, or interrupted); no basal accrues while therapy does not run.
  * Alarms latch: acknowledging silences one, it never clears a condition that still
    holds. Once the condition is gone, the recovery policy of the drug in force decides:
    `hold`, the pump resumes only once a clinician has acknowledged it; `resume`, it
    resumes by itself, logged (THERAPY_RECOVERED), the alarm still latched. Either way
    only once no other alarm holds it, and only to the state it was halted from.
  * A pump left stopped reminds (rules/reminder.py): the therapy_stopped alarm; starting
    clears it.
  * After a reset the pump returns to the state NVM held, halted if a high alarm stands.
"""

from __future__ import annotations

from protocol.codes import AlarmId, BeepPattern, BolusOutcome, LogEvent, Priority, TherapyState
from protocol.messages import AlarmCleared, AlarmRaised, Beep, TherapyStateChanged

from .alarms import Alarm, AlarmSet
from .clock import Clock
from .druglib import DrugLibrary
from .engine import Engine
from .guard import Guard
from .outbox import Outbox
from .rules import recovery, reminder
from .rules import reservoir as reservoir_rule
from .therapy import Therapy

RUNNING, STOPPED, HALTED, REFILL = TherapyState.RUNNING, TherapyState.STOPPED, TherapyState.HALTED, TherapyState.REFILL
BOOT = TherapyState.BOOT


class Supervisor:
    def __init__(
        self, clock: Clock, outbox: Outbox, alarms: AlarmSet, engine: Engine, guard: Guard, drugs: DrugLibrary
    ) -> None:
        self.clock = clock
        self.outbox = outbox
        self.alarms = alarms
        self.engine = engine
        self.guard = guard
        self.drugs = drugs
        self.therapy = Therapy(self._can_deliver, self._changed)
        self.resume_running = False  # what a refill or a halt returns to
        self.saved_state = STOPPED  # the state NVM held, until the boot is over
        # SR-050 (rules/reminder.py), kept in NVM with the state: time not running counts
        # from stopped_since_ms; therapy has run without a stop since run_since_ms.
        self.stopped_since_ms: int | None = None
        self.run_since_ms: int | None = None

    @property
    def state(self) -> TherapyState:
        return self.therapy.state

    @property
    def running(self) -> bool:
        return self.therapy.state is RUNNING

    def high_alarm(self) -> bool:
        """A high-priority alarm holds therapy (the interlock's fact): its condition is
        present, or gone without the reset its policy asks for."""
        return self.alarms.holds_therapy()

    # ------------------------------------------------------------ alarms

    def policy(self, alarm: AlarmId) -> recovery.Policy:
        """The drug library's recovery policy for the drug in force (the defaults without one)."""
        rx = self.engine.rx
        drug = self.drugs.get(rx.drug) if rx is not None else None
        return drug.policy(alarm) if drug is not None else recovery.DEFAULTS.get(alarm, recovery.Policy.HOLD)

    def needs_reset(self, alarm: AlarmId) -> bool:
        """SR-052: once its condition is gone, therapy stays halted until it is acknowledged."""
        a = self.alarms.active.get(alarm)
        return a is not None and recovery.needs_reset(a.latched(self.policy(alarm)))

    def set_condition(self, alarm: AlarmId, present: bool, priority: Priority | None = None) -> None:
        held = self.alarms.active.get(alarm)
        # Conditions are reported at every stroke and wake-up: most change nothing.
        if held is None and not present:
            return
        if held is not None and present and held.condition:
            return
        came_back = held is not None and present and held.recovered
        if not present and held is not None and held.condition and held.priority is Priority.HIGH:
            # A high alarm halted therapy. Acknowledging it while its condition held only
            # silenced it: resuming is a person's decision once the condition is gone, so
            # it stays latched (and therapy halted, under a hold policy) until acknowledged
            # again; under a resume policy it stays latched to say what happened.
            held.acknowledged = False
        change = self.alarms.condition(alarm, present, self.clock.now_ms, priority)
        if change is None:
            return
        a = self.alarms.active.get(alarm)
        if change == "raised" or came_back:
            # (A recovered alarm whose condition comes back is raised again: therapy runs.)
            self.outbox.record(LogEvent.ALARM_RAISED, int(alarm), int(a.priority))
            self.outbox.host_event(AlarmRaised(time_s=self.clock.now_s, alarm=alarm, priority=a.priority))
            if a.priority is Priority.HIGH:
                self.halt()  # (a lower alarm raised while a high one stands halts nothing more)
        elif change == "cleared":
            self._cleared(alarm)
        elif not present and a is not None:
            self._condition_gone(a)
        self.outbox.touch("alarms")

    def _condition_gone(self, a: Alarm) -> None:
        """SR-051: a latched alarm's condition went. Under a resume policy a high alarm no
        longer holds therapy, and the pump goes back by itself once no other alarm holds it."""
        if not recovery.recovers(a.latched(self.policy(a.alarm))):
            return
        a.recovered = True
        resumed = self._resume()
        if resumed is not None:
            self.outbox.record(LogEvent.THERAPY_RECOVERED, int(a.alarm), int(resumed))

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
        self._resume()

    def _resume(self) -> TherapyState | None:
        """A halted pump no alarm holds goes back to the state it was halted from (running
        only if it can deliver). Returns that state, None if it stays as it is."""
        if self.therapy.state is not HALTED or self.alarms.holds_therapy():
            return None
        if not (self.resume_running and self.therapy.fire("recover_running")):
            self.therapy.fire("recover_stopped")
        return self.therapy.state

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

    # ------------------------------------------------------------ a pump left stopped

    def remind_stopped(self) -> int | None:
        """SR-050: raise, or keep, the therapy_stopped alarm when therapy has not run for
        the reminder time on a pump with a prescription and a fill. Returns when it falls
        due otherwise (controller time), None when it will not."""
        state = self.therapy.state
        if state is BOOT or state is RUNNING:
            return None  # (at every stroke: running, the reminder was cleared when therapy started)
        e = self.engine
        commissioned = e.rx is not None and e.reservoir_known
        since = self.stopped_since_ms
        if not commissioned:
            since = None  # (counted from when it is: a prescription and a fill recorded)
        elif since is None:
            since = self.clock.now_ms
        if since != self.stopped_since_ms:
            self.stopped_since_ms = since
            self.outbox.touch("state")
        drug = self.drugs.get(e.rx.drug) if e.rx is not None else None
        r = reminder.therapy_stopped(
            reminder.StoppedFacts(
                now_ms=self.clock.now_ms,
                state=state,
                commissioned=commissioned,
                stopped_since_ms=self.stopped_since_ms,
                remind_after_ms=e.config.therapy_stopped_alarm_ms,
                withdrawal_dangerous=drug is not None and drug.withdrawal_dangerous,
            )
        )
        held = self.alarms.active.get(AlarmId.THERAPY_STOPPED)
        if r.present and held is not None and held.priority is not r.priority:
            held.priority = r.priority  # (the drug in force changed while it stood)
            self.outbox.touch("alarms")
        self.set_condition(AlarmId.THERAPY_STOPPED, r.present, r.priority)
        return r.due_ms

    def _run_changed(self, was_running: bool, running: bool) -> None:
        """SR-050: starting clears the reminder; stopping counts time not running on from
        where a short run left it, or afresh after a long one."""
        now = self.clock.now_ms
        if running and not was_running:
            self.run_since_ms = now
            self.clear(AlarmId.THERAPY_STOPPED)
        elif was_running and not running:
            self.stopped_since_ms = reminder.stopped_since_after_run(
                self.stopped_since_ms, self.run_since_ms, now, self.engine.config.therapy_stopped_alarm_ms
            )
        self.outbox.touch("state")

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
        elif saved is HALTED or (saved is RUNNING and self.alarms.holds_therapy()):
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
            and not self.alarms.holds_therapy()
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
        # (A reset goes on from the state NVM held: booting back to RUNNING is no new run.)
        self._run_changed(old is RUNNING or (old is BOOT and self.saved_state is RUNNING), new is RUNNING)
