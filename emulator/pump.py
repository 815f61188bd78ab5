"""The pump hardware as the controller sees it over the pump link.

PumpHardware holds the physical parts (fluid path, stroke mechanism, battery, beeper,
hardware watchdog) and the event queue, takes pump-link messages from the controller and
puts its answers in `outbox`. It knows nothing of ports or processes: the server moves
bytes, this decides what the hardware does. Its own safeguards do not trust the
controller: a run is bounded, a silent controller has the motor stopped by the watchdog.
Whoever needs to see each stroke as it is made (tests, campaigns) registers a stroke tap
(add_stroke_tap) rather than patching the fluid path.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.codes import BeepPattern, Fault, MotorState, ResetCause, RunOutcome, WakeReason
from protocol.messages import (
    Beep,
    ControllerStart,
    HostTx,
    HwInfo,
    HwInfoRequest,
    Message,
    MotorRun,
    MotorStop,
    PowerOn,
    RunProgress,
    SensorRequest,
    Sensors,
    SleepUntil,
    Time,
    TimeRequest,
    WatchdogKick,
)
from protocol.schema import NONE_U64

from .battery import Battery
from .beeper import Beeper
from .clock import Scheduler, Timer
from .fluid import FluidPath, fg_for
from .model import PumpModel

ANY_RUN = 0xFFFF
DEFAULT_RTC_EPOCH_S = 1_767_225_600  # 2026-01-01T00:00 local, as seconds since 1970
EVENT_LOG_MAX = 10_000


@dataclass
class Run:
    run_id: int
    strokes: int
    interval_ms: int
    made: int = 0
    timer: Timer | None = None


@dataclass(frozen=True, slots=True)
class StrokeEvent:
    """One stroke the mechanism attempted, as the fluid path saw it (for stroke taps).

    Drug is in fg (ng/mL x nL). A stroke into an occluded catheter delivers nothing at
    once: its volume is held (`held_*`) and vents later, outside any stroke, so the
    fluid's cumulative `total_delivered_*` and `pending_*` are given too: an observer
    that counts held volume as out when it was pushed needs no further tap."""

    time_ms: int  # pump time of the stroke
    run_id: int
    moved_nl: int  # left the reservoir (0: the mechanism stalled or the reservoir was dry)
    delivered_nl: int  # left the catheter tip into the patient in this stroke
    delivered_fg: int
    held_nl: int  # pushed out of the reservoir side but held behind an occlusion
    held_fg: int
    leaked_nl: int  # lost through a catheter leak in this stroke
    reservoir_fg_per_nl: int  # the reservoir's concentration before the stroke (= ng/mL)
    total_delivered_nl: int  # the fluid path's cumulative figures after the stroke
    total_delivered_fg: int
    pending_nl: int
    pending_fg: int
    odometer_strokes: int  # after the stroke (counts only strokes that moved fluid)
    stalled: bool = False  # the motor could not move (stall fault, or pressure at the stall level)

    @property
    def made(self) -> bool:
        """The stroke moved fluid (and was counted on the odometer)."""
        return self.moved_nl > 0


StrokeTap = Callable[[StrokeEvent], None]


@dataclass(frozen=True)
class HardwareEvent:
    """Something the hardware itself noticed (for the emulator's own record and tests)."""

    time_ms: int
    what: str
    detail: str = ""


class PumpHardware:
    def __init__(
        self,
        model: PumpModel,
        state: dict[str, Any] | None = None,
        seed: int = 0,
        on_host_tx: Callable[[bytes], None] | None = None,
        reset_hook: Callable[[ResetCause], None] | None = None,
        rtc_epoch_s: int = DEFAULT_RTC_EPOCH_S,
    ) -> None:
        self.model = model
        s = state or {}
        self.sched = Scheduler(s.get("time_ms", 0))
        fill_nl = model.initial_fill_ul * 1000
        conc = model.initial_concentration_ng_per_ml
        self.fluid = FluidPath(
            capacity_nl=model.reservoir_capacity_ul * 1000,
            reservoir_nl=s.get("reservoir_nl", fill_nl),
            reservoir_fg=s.get("reservoir_fg", fg_for(fill_nl, conc)),
            dead_volume_nl=model.catheter_dead_volume_nl,
            catheter_fg=fg_for(model.catheter_dead_volume_nl, conc),
            pa_per_nl=model.occlusion_pa_per_nl,
            stall_pa=model.stall_pressure_pa,
            vent_nl_per_s=model.vent_nl_per_s,
        )
        if "catheter" in s:
            self.fluid.catheter = deque([list(seg) for seg in s["catheter"]])
        for key in ("pending_nl", "pending_fg", "delivered_nl", "delivered_fg", "leaked_nl", "pocket_nl"):
            setattr(self.fluid, key, s.get(key, 0))
        self.fluid._settled_ms = self.sched.now_ms
        self.battery = Battery(model.battery_full_mv, model.battery_nv_per_stroke, model.battery_nv_per_hour)
        self.battery.used_nv = s.get("battery_used_nv", 0)
        self.beeper = Beeper(s.get("tones_total", 0))
        self.odometer = s.get("odometer_strokes", 0)
        self.boot_count = s.get("boot_count", 0)
        # The RTC reads rtc_epoch_s at pump time 0 (`--start`); kept with the pump's state.
        self.rtc_epoch_s = s.get("rtc_epoch_s", rtc_epoch_s)
        self.rng = random.Random(seed)
        self.on_host_tx = on_host_tx
        # Called to restart the controller (watchdog); default: send it POWER_ON.
        self.reset_hook = reset_hook
        # What the next CONTROLLER_START is told (split mode: a process announcing itself).
        self.pending_cause = ResetCause.POWER_UP if self.boot_count == 0 else ResetCause.PROCESS_RESTART
        self.outbox: list[Message] = []
        self.events: deque[HardwareEvent] = deque(maxlen=EVENT_LOG_MAX)
        self.run: Run | None = None
        self.motor_state = MotorState.IDLE
        self.stall_fault = False
        self.stroke_fault_ppm = 0
        self.runs_held: str | None = None  # why new motor runs are refused (emulator/rig.py storage_fault)
        self.controller_busy = False  # sent something, no SLEEP_UNTIL since
        self.controller_powered = False
        self._volume_rem = 0  # sub-nL stroke volume carried from one stroke to the next (of 1e6)
        self.last_kick_ms: int | None = None  # None: no kick since the controller (re)started
        self._window_from_ms = self.sched.now_ms  # the watchdog window runs from here
        self._watchdog: Timer | None = None
        self._wake: Timer | None = None
        self._vent: Timer | None = None
        self._beeps: list[Timer] = []
        self._last_ms = self.sched.now_ms
        # A tuple, replaced on change: a tap may remove itself (or add another) while the
        # taps of a stroke are being called. Empty, the hot path pays one truth test.
        self._stroke_taps: tuple[StrokeTap, ...] = ()
        # Injected hardware conditions are physical: a blocked catheter stays blocked
        # across an emulator restart (link noise, a property of the line, does not).
        self.fluid.occluded = s.get("occluded", False)
        self.fluid.leak_ppm = s.get("leak_ppm", 0)
        self.stall_fault = s.get("stall_fault", False)
        self.stroke_fault_ppm = s.get("stroke_fault_ppm", 0)
        self.battery.forced_mv = s.get("forced_mv")
        if s.get("motor_stalled"):
            self.motor_state = MotorState.STALLED
        self._pressure_high = self.fluid.pressure_pa >= model.pressure_report_pa
        self._battery_band = self._band(self.battery.mv)
        self._schedule_vent()

    # ------------------------------------------------------------ time

    @property
    def now_ms(self) -> int:
        return self.sched.now_ms

    @property
    def rtc_s(self) -> int:
        return self.rtc_epoch_s + self.sched.now_ms // 1000

    def _elapse(self) -> None:
        """Bring continuous processes (battery drain, venting) up to now."""
        now = self.sched.now_ms
        if now > self._last_ms:
            self.battery.elapse(now - self._last_ms)
            self._last_ms = now
        self.fluid.settle(now)

    def run_due(self, limit_ms: int) -> bool:
        """Run the next hardware event at or before limit_ms. False if none is due."""
        due = self.sched.next_due_ms()
        if due is None or due > limit_ms:
            return False
        self.sched.now_ms = due
        self._elapse()
        return self.sched.run_next(limit_ms)

    def advance_idle(self, to_ms: int) -> None:
        """Move time to to_ms when nothing is due before it."""
        if to_ms > self.sched.now_ms:
            self.sched.now_ms = to_ms
        self._elapse()
        self._check_battery()

    def record(self, what: str, detail: str = "") -> None:
        self.events.append(HardwareEvent(self.sched.now_ms, what, detail))

    # ------------------------------------------------------------ controller lifecycle

    def power_on_controller(self, cause: ResetCause) -> None:
        """The controller (re)starts: it gets POWER_ON and a fresh watchdog window."""
        self.boot_count += 1
        self.controller_powered = True
        self.last_kick_ms = None
        self._window_from_ms = self.now_ms
        self._arm_watchdog()
        self.record("controller_power_on", cause.name.lower())
        self._send(
            PowerOn(
                reset_cause=cause,
                time_ms=self.now_ms,
                rtc_s=self.rtc_s,
                boot_count=self.boot_count,
                odometer_strokes=self.odometer,
            )
        )

    def power_off_controller(self, why: str) -> None:
        """Power goes from the controller: the motor stops where it is, timers die."""
        self._end_run(RunOutcome.POWER_LOSS, report=False)
        for t in (self._wake, self._watchdog, *self._beeps):
            if t is not None:
                t.cancel()
        self._wake = self._watchdog = None
        self._beeps.clear()
        self.controller_powered = False
        self.controller_busy = False
        self.outbox.clear()
        self.record("controller_power_off", why)

    def controller_lost(self, why: str) -> None:
        """The controller stopped answering (process died, no idle report in time).
        The hardware carries on: the watchdog will stop the motor within its window."""
        self.controller_busy = False
        self.record("controller_silent", why)

    # ------------------------------------------------------------ messages from the controller

    def handle(self, msg: Message) -> None:
        self._elapse()
        t = type(msg)
        if t is SleepUntil:
            self.controller_busy = False
            if self._wake is not None:
                self._wake.cancel()
                self._wake = None
            if msg.wake_at_ms != NONE_U64:
                self._wake = self.sched.at(msg.wake_at_ms, self._on_wake, "wake")
        elif t is ControllerStart:
            cause = ResetCause.PROCESS_RESTART if self.controller_powered else self.pending_cause
            if self.controller_powered:
                self.power_off_controller("controller restarted")
            self.pending_cause = ResetCause.PROCESS_RESTART
            self.power_on_controller(cause)
        elif t is WatchdogKick:
            self.last_kick_ms = self._window_from_ms = self.now_ms
            self._arm_watchdog()
        elif t is RunProgress or t is PowerOn:  # pump-to-controller types: a confused peer
            self.record("unexpected_message", t.NAME)
        elif t is MotorRun:
            self._start_run(msg)
        elif t is MotorStop:
            if self.run is not None and msg.run_id in (self.run.run_id, ANY_RUN):
                self._end_run(RunOutcome.STOPPED)
        elif t is Beep:
            self._beep(msg)
        elif t is TimeRequest:
            self._send(Time(time_ms=self.now_ms, reason=WakeReason.POLL))
        elif t is HwInfoRequest:
            m = self.model
            self._send(
                HwInfo(
                    serial=m.serial,
                    reservoir_capacity_ul=m.reservoir_capacity_ul,
                    stroke_nl=m.stroke_nl,
                    min_stroke_interval_ms=m.min_stroke_interval_ms,
                    min_flow_nl_per_day=m.min_flow_nl_per_day,
                    max_strokes_per_run=m.max_strokes_per_run,
                    watchdog_window_ms=m.watchdog_window_ms,
                    battery_eri_mv=m.battery_eri_mv,
                    battery_eos_mv=m.battery_eos_mv,
                    odometer_strokes=self.odometer,
                )
            )
        elif t is SensorRequest:
            self._send_sensors()
        elif t is HostTx:
            if self.on_host_tx is not None:
                self.on_host_tx(msg.frame)
        else:
            self.record("unexpected_message", t.NAME)

    def _send(self, msg: Message) -> None:
        if not self.controller_powered:
            return
        self.outbox.append(msg)
        self.controller_busy = True

    def _on_wake(self) -> None:
        self._wake = None
        self._send(Time(time_ms=self.now_ms, reason=WakeReason.TIMER))

    # ------------------------------------------------------------ watchdog

    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self.sched.at(
            self._window_from_ms + self.model.watchdog_window_ms, self._on_watchdog, "watchdog"
        )

    def _on_watchdog(self) -> None:
        """The controller has been silent for a whole window: stop the motor, sound the
        hardware tone, and reset the controller (as a real watchdog resets the MCU)."""
        self._watchdog = None
        self.record("watchdog_expired", f"silent since {self._window_from_ms} ms")
        self._end_run(RunOutcome.WATCHDOG, report=False)
        self.beeper.sound(self.now_ms, BeepPattern.HARDWARE_ALARM)
        self.power_off_controller("watchdog")
        if self.reset_hook is not None:
            self.reset_hook(ResetCause.WATCHDOG)
        else:
            self.power_on_controller(ResetCause.WATCHDOG)

    @property
    def controller_alive(self) -> bool:
        """Powered and has kicked the watchdog within the last window."""
        return (
            self.controller_powered
            and self.last_kick_ms is not None
            and self.now_ms - self.last_kick_ms < self.model.watchdog_window_ms
        )

    # ------------------------------------------------------------ stroke taps

    def add_stroke_tap(self, tap: StrokeTap) -> None:
        """Call `tap` with a StrokeEvent for every stroke the mechanism attempts from now
        on: made, stalled, or finding the reservoir dry (see StrokeEvent.made)."""
        self._stroke_taps = (*self._stroke_taps, tap)

    def remove_stroke_tap(self, tap: StrokeTap) -> None:
        """Stop calling `tap` (ValueError if it was not added)."""
        taps = list(self._stroke_taps)
        taps.remove(tap)
        self._stroke_taps = tuple(taps)

    @property
    def stroke_taps(self) -> tuple[StrokeTap, ...]:
        return self._stroke_taps

    def _fluid_before(self) -> tuple[int, ...]:
        f = self.fluid
        return (f.reservoir_nl, f.reservoir_fg, f.delivered_nl, f.delivered_fg, f.pending_nl, f.pending_fg, f.leaked_nl)

    def _tap(self, run_id: int, before: tuple[int, ...], moved_nl: int, stalled: bool) -> None:
        res_nl, res_fg, del_nl, del_fg, pend_nl, pend_fg, leaked_nl = before
        f = self.fluid
        event = StrokeEvent(
            time_ms=self.now_ms,
            run_id=run_id,
            moved_nl=moved_nl,
            delivered_nl=f.delivered_nl - del_nl,
            delivered_fg=f.delivered_fg - del_fg,
            held_nl=f.pending_nl - pend_nl,
            held_fg=f.pending_fg - pend_fg,
            leaked_nl=f.leaked_nl - leaked_nl,
            reservoir_fg_per_nl=res_fg // res_nl if res_nl else 0,
            total_delivered_nl=f.delivered_nl,
            total_delivered_fg=f.delivered_fg,
            pending_nl=f.pending_nl,
            pending_fg=f.pending_fg,
            odometer_strokes=self.odometer,
            stalled=stalled,
        )
        for tap in self._stroke_taps:
            tap(event)

    # ------------------------------------------------------------ the stroke mechanism

    def _start_run(self, msg: MotorRun) -> None:
        m = self.model
        if self.run is not None:
            self._end_run(RunOutcome.STOPPED)
        held = self.runs_held
        if held or not 1 <= msg.strokes <= m.max_strokes_per_run or msg.interval_ms < m.min_stroke_interval_ms:
            # Hardware limits are enforced here whatever the controller asks.
            self.record("run_refused", held or f"{msg.strokes} strokes every {msg.interval_ms} ms")
            self._send(self._progress(msg.run_id, 0, RunOutcome.REFUSED))
            return
        self.run = Run(msg.run_id, msg.strokes, msg.interval_ms)
        self.motor_state = MotorState.RUNNING
        self.run.timer = self.sched.at(self.now_ms, self._stroke, "stroke")

    def _progress(self, run_id: int, made: int, outcome: RunOutcome) -> RunProgress:
        return RunProgress(
            run_id=run_id, strokes_made=made, outcome=outcome, odometer_strokes=self.odometer, time_ms=self.now_ms
        )

    def _end_run(self, outcome: RunOutcome, report: bool = True) -> None:
        run = self.run
        if run is None:
            return
        if run.timer is not None:
            run.timer.cancel()
        self.run = None
        self.motor_state = MotorState.STALLED if outcome is RunOutcome.STALLED else MotorState.IDLE
        if report:
            self._send(self._progress(run.run_id, run.made, outcome))

    def stroke_volume_nl(self) -> int:
        m = self.model
        ppm = m.stroke_bias_ppm + self.stroke_fault_ppm
        if m.stroke_error_sd_ppm:
            ppm += round(self.rng.gauss(0.0, m.stroke_error_sd_ppm))
        # Whole nL per stroke, the remainder carried to the next: rounding each stroke down
        # would make the pump deliver 0.1 % less than its error model says.
        total = max(0, m.stroke_nl * (1_000_000 + ppm)) + self._volume_rem
        self._volume_rem = total % 1_000_000
        return total // 1_000_000

    def _stroke(self) -> None:
        run = self.run
        if run is None:
            return
        run.timer = None
        # The fluid path's figures before the stroke, only when someone is watching: the
        # 30-day benchmark makes tens of thousands of strokes and must not pay for taps.
        before = self._fluid_before() if self._stroke_taps else None
        if self.stall_fault:
            if before is not None:
                self._tap(run.run_id, before, 0, stalled=True)
            self._end_run(RunOutcome.STALLED)
            self._send_sensors()
            return
        result = self.fluid.stroke(self.stroke_volume_nl())
        if result.stalled:
            if before is not None:
                self._tap(run.run_id, before, 0, stalled=True)
            self.record("pressure_stall", f"{self.fluid.pressure_pa} Pa")
            self._end_run(RunOutcome.STALLED)
            self._send_sensors()
            return
        if result.moved_nl == 0:
            if before is not None:
                self._tap(run.run_id, before, 0, stalled=False)
            self._end_run(RunOutcome.EMPTY)
            return
        self.odometer += 1
        if before is not None:
            self._tap(run.run_id, before, result.moved_nl, stalled=False)
        self.battery.stroke()
        run.made += 1
        if run.made >= run.strokes:
            self._end_run(RunOutcome.COMPLETED)
        else:
            run.timer = self.sched.at(self.now_ms + run.interval_ms, self._stroke, "stroke")
            self._send(self._progress(run.run_id, run.made, RunOutcome.IN_PROGRESS))
        self._check_pressure()
        self._check_battery()

    # ------------------------------------------------------------ sensors

    def _send_sensors(self) -> None:
        self._send(
            Sensors(
                time_ms=self.now_ms,
                outlet_pressure_pa=min(self.fluid.pressure_pa, 0x7FFFFFFF),
                motor_stalled=self.motor_state is MotorState.STALLED or self.stall_fault,
                battery_mv=min(self.battery.mv, 0xFFFF),
                odometer_strokes=self.odometer,
            )
        )

    def _check_pressure(self) -> None:
        high = self.fluid.pressure_pa >= self.model.pressure_report_pa
        if high != self._pressure_high:
            self._pressure_high = high
            self._send_sensors()

    def _band(self, mv: int) -> int:
        return 0 if mv > self.model.battery_eri_mv else 1 if mv > self.model.battery_eos_mv else 2

    def _check_battery(self) -> None:
        band = self._band(self.battery.mv)
        if band != self._battery_band:
            self._battery_band = band
            self._send_sensors()

    # ------------------------------------------------------------ beeper

    def _beep(self, msg: Beep) -> None:
        for t in self._beeps:
            t.cancel()
        self._beeps.clear()
        if msg.pattern is BeepPattern.SILENT:
            return
        pattern = msg.pattern
        for i in range(max(1, msg.repeat)):
            at = self.now_ms + i * msg.repeat_interval_ms
            if i == 0:
                self.beeper.sound(at, pattern)
            else:
                self._beeps.append(self.sched.at(at, lambda p=pattern: self.beeper.sound(self.now_ms, p), "beep"))

    # ------------------------------------------------------------ faults (sim-control)

    def inject(self, fault: Fault, value: int) -> None:
        self._elapse()
        if fault is Fault.OCCLUSION:
            self.fluid.occluded = True
            self._schedule_vent()  # blocked again: no venting to finish
        elif fault is Fault.MOTOR_STALL:
            self.stall_fault = True
        elif fault is Fault.BATTERY_MV:
            self.battery.forced_mv = value
            self._check_battery()
            self._send_sensors()
        elif fault is Fault.STROKE_ERROR:
            self.stroke_fault_ppm = value
        elif fault is Fault.CATHETER_LEAK:
            self.fluid.leak_ppm = value
        self.record("fault_injected", f"{fault.name.lower()} {value}")

    def clear(self, fault: Fault) -> None:
        self._elapse()
        if fault is Fault.OCCLUSION:
            self.fluid.occluded = False
            self.fluid._settled_ms = self.now_ms
            self._schedule_vent()
        elif fault is Fault.MOTOR_STALL:
            self.stall_fault = False
            if self.motor_state is MotorState.STALLED:
                self.motor_state = MotorState.IDLE
        elif fault is Fault.BATTERY_MV:
            self.battery.forced_mv = None
            self._check_battery()
        elif fault is Fault.STROKE_ERROR:
            self.stroke_fault_ppm = 0
        elif fault is Fault.CATHETER_LEAK:
            self.fluid.leak_ppm = 0
        self.record("fault_cleared", fault.name.lower())

    def _schedule_vent(self) -> None:
        """When held volume is venting (occlusion cleared), wake when it is done."""
        if self._vent is not None:
            self._vent.cancel()
            self._vent = None
        done = self.fluid.vent_done_at(self.now_ms)
        if done is not None:
            self._vent = self.sched.at(done, self._on_vented, "vented")

    def _on_vented(self) -> None:
        self._vent = None
        self._check_pressure()
        if self.motor_state is MotorState.STALLED and not self.stall_fault:
            self.motor_state = MotorState.IDLE

    def refill(self, withdraw_nl: int, add_nl: int, concentration_ng_per_ml: int, into_pocket: bool) -> int:
        self._elapse()
        w = self.fluid.refill(withdraw_nl, add_nl, concentration_ng_per_ml, into_pocket)
        self.record("refill", f"withdrew {w} nL, injected {add_nl} nL{' into the pocket' if into_pocket else ''}")
        return w

    def replace_catheter(self, volume_nl: int) -> int:
        """Revision surgery: the old catheter, and what it held, leaves with the surgeon;
        a new, empty one of volume_nl (0: the model's) takes its place."""
        self._elapse()
        volume_nl = volume_nl or self.model.catheter_dead_volume_nl
        self.fluid.replace_catheter(volume_nl)
        self.record("catheter", f"replaced with an empty catheter of {volume_nl} nL")
        return volume_nl

    # ------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        f = self.fluid
        return {
            "time_ms": self.now_ms,
            "reservoir_nl": f.reservoir_nl,
            "reservoir_fg": f.reservoir_fg,
            "catheter": f.catheter_segments(),
            "pending_nl": f.pending_nl,
            "pending_fg": f.pending_fg,
            "delivered_nl": f.delivered_nl,
            "delivered_fg": f.delivered_fg,
            "leaked_nl": f.leaked_nl,
            "pocket_nl": f.pocket_nl,
            "battery_used_nv": self.battery.used_nv,
            "tones_total": self.beeper.total,
            "odometer_strokes": self.odometer,
            "boot_count": self.boot_count,
            "rtc_epoch_s": self.rtc_epoch_s,
            "occluded": f.occluded,
            "leak_ppm": f.leak_ppm,
            "stall_fault": self.stall_fault,
            "stroke_fault_ppm": self.stroke_fault_ppm,
            "forced_mv": self.battery.forced_mv,
            "motor_stalled": self.motor_state is MotorState.STALLED,
        }
