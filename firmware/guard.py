"""The guard: the only code that moves or stops the mechanism.

The delivery engine (firmware/engine.py) is credulous: it plans what to run next and
counts what the pump says was made. The guard doubts both. It alone builds MOTOR_RUN and
MOTOR_STOP, and
  * admits a run only when every rule holds for the whole run (rules/run.py): a bounded
    run cannot be recalled if the controller dies part-way;
  * re-checks every stroke the pump reports and stops the run the moment a rule fails;
  * counts strokes from the pump's reports and its odometer, never from strokes
    commanded, and no more than the runs it commanded could have made
    (rules/odometer.py);
  * gives up a run whose reports stop coming, and learns from a one-stroke probe what
    it made;
  * confirms occlusions from outlet pressure held over the threshold (rules/occlusion.py)
    and follows motor stalls, stopping the run at once;
  * refuses every run while a high-priority alarm stands (the latched-alarm interlock).
What the strokes it counted were for is the engine's business; what the faults it
found mean for therapy is the supervisor's (firmware/supervisor.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import AlarmId, LogEvent, RunOutcome, TherapyState
from protocol.messages import MotorRun, MotorStop, RunProgress, SensorRequest, Sensors

from .clock import Clock
from .config import FirmwareConfig
from .hardware import Hardware
from .outbox import Outbox
from .rules import limit24h, occlusion, odometer
from .rules import run as run_rule
from .rules.run import Purpose

RUN_REPORT_GRACE_MS = 30_000  # a run's last report this late after its last stroke is lost
# A run is given up when this many of its stroke reports in a row have not come: a lost
# MOTOR_RUN (no report at all) is noticed within strokes, not at the end of the whole run.
RUN_REPORTS_MISSED = 2
MAX_ORPHANS = 8


@dataclass(frozen=True)
class RunRequest:
    """What the engine wants run next."""

    purpose: Purpose
    strokes: int
    interval_ms: int
    bolus_id: int = 0  # the command id of the bolus a bolus run serves


@dataclass(frozen=True)
class DeliveryFacts:
    """What the engine and the supervisor know that the run rules judge."""

    state: TherapyState
    high_alarm: bool
    reservoir_nl: int
    window_fg: int
    catheter: tuple[tuple[int, int], ...]  # (nL, ng/mL), tip first
    reservoir_ng_per_ml: int
    max_dose_24h_fg: int


@dataclass(frozen=True)
class Made:
    """Strokes the mechanism made, counted now, and the run they belong to."""

    strokes: int
    purpose: Purpose
    bolus_id: int


@dataclass(frozen=True)
class Fault:
    """A fault the guard found: it has stopped the run; the supervisor raises the alarms."""

    conditions: tuple[tuple[AlarmId, bool], ...]
    stops_delivery: bool  # the run was stopped by a fault: a bolus in it is abandoned


@dataclass
class Run:
    """A bounded motor run the guard commanded."""

    run_id: int
    purpose: Purpose
    strokes: int
    interval_ms: int
    bolus_id: int = 0
    reported: int = 0  # strokes already counted
    since_ms: int = 0  # controller time of its start or its last report
    deadline_ms: int = 0  # its next report is overdue after this

    def outstanding(self) -> odometer.Outstanding:
        return odometer.Outstanding(self.strokes - self.reported, self.interval_ms, self.since_ms)

    def to_data(self) -> list[int]:
        return [
            self.run_id,
            int(self.purpose),
            self.strokes,
            self.interval_ms,
            self.bolus_id,
            self.reported,
            self.since_ms,
            self.deadline_ms,
        ]

    @staticmethod
    def from_data(d: list[int]) -> Run:
        return Run(d[0], Purpose(d[1]), *d[2:])


@dataclass
class Sensing:
    """What the guard follows from SENSORS."""

    pressure_high_since_ms: int | None = None
    motor_stalled: bool = False
    last_poll_ms: int = -(10**12)


class Guard:
    def __init__(self, clock: Clock, config: FirmwareConfig, hardware: Hardware, outbox: Outbox) -> None:
        self.clock = clock
        self.config = config
        self.hardware = hardware
        self.outbox = outbox
        self.run: Run | None = None
        # Runs given up on (stopped by us, or whose last report never came): strokes they
        # report late, or that the odometer shows they made, are still counted.
        self.orphans: list[Run] = []
        self.probe = False  # a run's report was lost: the next run is one stroke, to learn the odometer
        self.odometer: int | None = None  # the pump's stroke odometer at the last report
        self.last_stroke_ms: int | None = None  # controller time of the last stroke reported
        self.sensing = Sensing()
        self._run_seq = 0

    # ------------------------------------------------------------ runs

    def ready_ms(self) -> int:
        """When the next run's first stroke may come: the mechanism's fastest pace holds
        across runs too (a run's first stroke comes at once)."""
        now = self.clock.now_ms
        lim = self.hardware.limits
        if self.last_stroke_ms is None or lim is None:
            return now
        return max(now, self.last_stroke_ms + lim.min_stroke_interval_ms)

    def admit(self, req: RunRequest, facts: DeliveryFacts) -> bool:
        """Start the run if every rule holds for all of it; False (nothing sent) if not."""
        lim = self.hardware.limits
        if lim is None:
            return False
        strokes = req.strokes
        if self.probe:
            # The last run's final report never came: one stroke, whose report (with the
            # pump's odometer) tells what that run made, before anything more is asked.
            strokes = 1
        now = self.clock.now_ms
        verdict = run_rule.refusal(
            run_rule.RunFacts(
                purpose=req.purpose,
                state=facts.state,
                high_alarm=facts.high_alarm,
                strokes=strokes,
                interval_ms=req.interval_ms,
                max_strokes_per_run=lim.max_strokes_per_run,
                min_interval_ms=lim.min_stroke_interval_ms,
                now_ms=now,
                last_stroke_ms=self.last_stroke_ms,
                stroke_nl=lim.stroke_nl,
                reservoir_nl=facts.reservoir_nl,
                empty_level_nl=self.config.empty_reservoir_ul * 1000,
                window_fg=facts.window_fg,
                drug_fg=limit24h.drug_out_fg(facts.catheter, facts.reservoir_ng_per_ml, lim.stroke_nl, strokes),
                max_dose_24h_fg=facts.max_dose_24h_fg,
            )
        )
        if verdict is not None:
            return False
        self._run_seq = self._run_seq % 0xFFFE + 1
        run = Run(self._run_seq, req.purpose, strokes, req.interval_ms, req.bolus_id, since_ms=now)
        run.deadline_ms = _report_deadline(now, strokes, req.interval_ms)
        self.run = run
        self.outbox.send(MotorRun(run_id=run.run_id, strokes=strokes, interval_ms=req.interval_ms))
        self.outbox.touch("delivery")  # committed before MOTOR_RUN leaves: a reset knows what may move
        return True

    def stop(self) -> None:
        """Stop the run going on, if any, without completing its stroke."""
        run = self.run
        if run is None:
            return
        self.outbox.send(MotorStop(run_id=run.run_id))
        self.orphans.append(run)  # its STOPPED report still counts what it made
        del self.orphans[:-MAX_ORPHANS]
        self.run = None
        self.outbox.touch("delivery")

    def stop_if(self, purpose: Purpose) -> None:
        if self.run is not None and self.run.purpose is purpose:
            self.stop()

    def recheck(self, state: TherapyState, high_alarm: bool, reservoir_nl: int, window_fg: int, max_fg: int) -> None:
        """After the strokes just reported were counted: stop the run going on if a rule
        no longer holds for it (the reservoir, the rolling 24 h and the 24 h limit as the
        engine now counts them)."""
        run = self.run
        if run is None:
            return
        verdict = run_rule.stroke_refusal(
            run_rule.StrokeFacts(
                purpose=run.purpose,
                state=state,
                high_alarm=high_alarm,
                made=run.reported,
                commanded=run.strokes,
                reservoir_nl=reservoir_nl,
                empty_level_nl=self.config.empty_reservoir_ul * 1000,
                window_fg=window_fg,
                max_dose_24h_fg=max_fg,
            )
        )
        if verdict is not None:
            self.stop()

    def overdue(self) -> bool:
        """The run's next report is long overdue (lost on the link, or the MOTOR_RUN was):
        stop it if it still goes, and learn from the next report what it made, instead of
        waiting for ever with delivery stalled."""
        run = self.run
        if run is None or self.clock.now_ms < run.deadline_ms:
            return False
        self.outbox.record(LogEvent.DELIVERY_SHORTFALL, run.strokes, run.reported)
        self.stop()
        self.probe = True
        return True

    def deadline_ms(self) -> int | None:
        return self.run.deadline_ms if self.run is not None else None

    # ------------------------------------------------------------ what the pump reports

    def on_progress(self, msg: RunProgress) -> tuple[list[Made], Fault | None]:
        """A run's report: the strokes to count now (odometer extras first, for the runs
        they belong to), and the fault its outcome shows, if any."""
        run = self.run
        if run is not None and msg.run_id == run.run_id:
            target = run
        else:
            target = next((o for o in reversed(self.orphans) if o.run_id == msg.run_id), None)
        new = max(0, msg.strokes_made - target.reported) if target is not None else 0
        t = msg.time_ms + self.clock.skew_ms
        made = self._odometer_report(msg.odometer_strokes, t, new)
        if target is None:
            return made, None
        if new > 0:
            target.reported = msg.strokes_made
            made.append(Made(new, target.purpose, target.bolus_id))
        target.since_ms = t
        self.outbox.touch("delivery")
        if target is run:
            if msg.outcome is RunOutcome.IN_PROGRESS:
                left = run.strokes - msg.strokes_made
                run.deadline_ms = max(run.deadline_ms, _report_deadline(t, left, run.interval_ms))
            # Everything made before this run is accounted for now.
            self.orphans.clear()
            self.probe = False
        if msg.outcome is RunOutcome.IN_PROGRESS:
            return made, None
        if target is run:
            self.run = None
        else:
            self.orphans.remove(target)
            if msg.outcome is RunOutcome.STOPPED:
                return made, None
        if msg.outcome is RunOutcome.STALLED:
            self.sensing.motor_stalled = True
            self.stop()
            return made, Fault(((AlarmId.MOTOR_STALL, True),), True)
        if msg.outcome in (RunOutcome.EMPTY, RunOutcome.REFUSED):
            self.outbox.record(LogEvent.DELIVERY_SHORTFALL, target.strokes, msg.strokes_made)
            self.stop()
            conditions = ((AlarmId.DELIVERY_SHORTFALL, True),)
            if msg.outcome is RunOutcome.EMPTY:
                conditions += ((AlarmId.EMPTY_RESERVOIR, True),)
            return made, Fault(conditions, True)
        return made, None

    def _odometer_report(self, odometer_strokes: int, time_ms: int, new: int) -> list[Made]:
        """The pump's odometer, with `new` strokes that a report of ours covers: strokes
        no report covered go to the runs given up on, oldest first, as far as each could
        have made them; any beyond are not counted, and are logged."""
        known = self.odometer
        if new > 0 or (known is not None and odometer_strokes > known):
            self.last_stroke_ms = time_ms
        made: list[Made] = []
        if known is not None and odometer_strokes - known > new:
            claimed = odometer_strokes - known - new
            possible = odometer.unreported_bound((o.outstanding() for o in self.orphans), time_ms)
            if claimed > possible:
                self.outbox.record(LogEvent.DELIVERY_SHORTFALL, claimed, possible)
            made = self._give_to_orphans(min(claimed, possible))
        # (A late report, held up on the link, must not wind the odometer back.)
        self.odometer = odometer_strokes if known is None else max(known, odometer_strokes)
        return made

    def _give_to_orphans(self, strokes: int) -> list[Made]:
        made = []
        for o in self.orphans:
            take = min(strokes, o.strokes - o.reported)
            if take > 0:
                o.reported += take
                made.append(Made(take, o.purpose, o.bolus_id))
                strokes -= take
        return made

    # ------------------------------------------------------------ boot

    def restore(self, odometer_strokes: int | None, last_stroke_ms: int | None, runs: list[Run]) -> None:
        """What NVM held: every run of the controller before the reset is one given up on
        (the hardware ended it at the reset); settle() counts what it made."""
        self.odometer = odometer_strokes
        self.last_stroke_ms = last_stroke_ms
        self.orphans = runs

    def unreported_bound(self, now_ms: int) -> int:
        return odometer.unreported_bound((o.outstanding() for o in self.orphans), now_ms)

    def settle(self, odometer_strokes: int, now_ms: int) -> list[Made]:
        """At boot, with POWER_ON's odometer: the strokes the runs before the reset made
        after their last report (a run going on while the controller was dead, until the
        watchdog stopped it). Counted before anything else can happen: a refill recorded
        on top of an old count would absorb them."""
        made = self._odometer_report(odometer_strokes, now_ms, 0)
        self.orphans.clear()
        self.outbox.touch("delivery")
        return made

    def rebase(self, odometer_strokes: int) -> None:
        """The hardware's odometer is not the one NVM knew (it went back, or NVM is not to
        be trusted): count from it afresh, and forget the runs NVM held."""
        self.odometer = odometer_strokes
        self.orphans.clear()
        self.outbox.touch("delivery")

    # ------------------------------------------------------------ sensors

    def on_sensors(self, msg: Sensors) -> list[Made]:
        """The odometer with no run of ours going or given up on (nothing should have
        moved), and the pressure and stall readings."""
        made: list[Made] = []
        if self.run is None and not self.orphans and self.hardware.limits is not None:
            made = self._odometer_report(msg.odometer_strokes, msg.time_ms + self.clock.skew_ms, 0)
        s = self.sensing
        if msg.motor_stalled and not s.motor_stalled:
            self.stop()
        s.motor_stalled = msg.motor_stalled
        if msg.outlet_pressure_pa >= self.config.occlusion_pressure_pa:
            if s.pressure_high_since_ms is None:
                s.pressure_high_since_ms = self.clock.now_ms
        else:
            s.pressure_high_since_ms = None
        return made

    def occlusion(self) -> bool | None:
        """SR-020: True once outlet pressure has held over the threshold for the dwell
        (the run is stopped at once), False when the pressure is down, None meanwhile."""
        s = self.sensing
        if occlusion.confirmed(s.pressure_high_since_ms, self.clock.now_ms, self.config.occlusion_dwell_ms):
            self.stop()
            return True
        return False if s.pressure_high_since_ms is None else None

    def poll(self, occlusion_alarm: bool) -> int | None:
        """While pressure is high, the motor stalled or an occlusion alarm stands, ask the
        pump for sensors every poll period (a condition that clears is seen without a run
        to report it). Returns when to wake next for it."""
        s = self.sensing
        if s.pressure_high_since_ms is None and not s.motor_stalled and not occlusion_alarm:
            return None
        now = self.clock.now_ms
        wake = []
        if s.pressure_high_since_ms is not None and not occlusion_alarm:
            wake.append(s.pressure_high_since_ms + self.config.occlusion_dwell_ms)
        if now >= s.last_poll_ms + self.config.sensor_poll_ms:
            self.outbox.send(SensorRequest())
            s.last_poll_ms = now
        wake.append(s.last_poll_ms + self.config.sensor_poll_ms)
        return min(wake)

    # ------------------------------------------------------------ NVM

    def runs_data(self) -> list[list[int]]:
        return [r.to_data() for r in (*self.orphans, *([self.run] if self.run else []))]


def _report_deadline(since_ms: int, strokes_left: int, interval_ms: int) -> int:
    """When a run's next report is overdue: RUN_REPORTS_MISSED stroke reports after
    `since_ms` (its start, whose first stroke comes at once, or its last report), but
    never before its last stroke, plus the grace."""
    return since_ms + min(strokes_left, RUN_REPORTS_MISSED) * interval_ms + RUN_REPORT_GRACE_MS
