"""The controller: an event loop. Pump-link bytes in, pump-link bytes out.

Written as firmware: one thread, no wall clock (time comes from the pump in every
message), integer quantities, bounded memory. Each feed() decodes what the pump sent,
hands each message to the part it concerns, lets the delivery engine ask the guard for
the next run, commits what changed to NVM, and only then lets out what the parts queued
(firmware/outbox.py), ending with SLEEP_UNTIL: the next time the controller must run.
The host is reached only through HOST_RX / HOST_TX relayed by the pump.

Where each rule lives: docs/architecture.md.
"""

from __future__ import annotations

from protocol import codec
from protocol.codes import AlarmId, BolusOutcome, NakReason, Role, TherapyState
from protocol.framing import Frame, parse_body
from protocol.messages import (
    PUMP_LINK_TYPES,
    Beep,
    HostRx,
    HwInfo,
    HwInfoRequest,
    Message,
    PowerOn,
    RunProgress,
    SensorRequest,
    Sensors,
    SleepUntil,
    Time,
    WatchdogKick,
)
from protocol.schema import NONE_U64

from . import boot, host, timed
from .catheter import Catheter
from .config import FirmwareConfig
from .druglib import DrugLibrary
from .guard import Fault, Made
from .nvm import Nvm
from .parts import Parts
from .persist import Persist

HW_INFO_RETRY_MS = 1_000  # ask again this often while HW_INFO has not come
KICK_PERCENT = 49  # wake to kick the watchdog by this share of its window
KICK = WatchdogKick()  # (a message without fields: one will do for every kick)


class Controller:
    def __init__(
        self, keys: dict[Role, bytes], nvm: Nvm, drugs: DrugLibrary, config: FirmwareConfig | None = None
    ) -> None:
        self.keys = keys  # to provision a new pump; once NVM holds keys, those are used
        self.config = config or FirmwareConfig()
        self.drugs = drugs
        self.persist = Persist(nvm)
        self._rx = codec.MessageDecoder(PUMP_LINK_TYPES)
        self._seq = 0
        self.powered = False
        self.parts = Parts.new(keys, self.config, drugs)
        self._boot_odometer: int | None = None  # POWER_ON's, to count at HW_INFO
        self._hw_asked_ms = 0
        self._last_kick_ms = -1

    @property
    def nvm(self) -> Nvm:
        return self.persist.nvm

    # ------------------------------------------------------------ the pump link

    def feed(self, data: bytes) -> bytes:
        for item in self._rx.feed(data):
            if isinstance(item, codec.Received):
                self._on_message(item.message)
        p = self.parts
        if self.powered:
            self._service()
            self.persist.commit(p)
        return b"".join(self._encode(m) for m in p.outbox.take_messages())

    def _encode(self, msg: Message) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        return codec.encode(msg, self._seq)

    def _on_message(self, msg: Message) -> None:
        t = type(msg)
        if not self.powered and t is not PowerOn and t is not HostRx:
            # Nothing is restored before POWER_ON: a report that comes first (held up on
            # the link from before a reset) would be judged against an empty state, e.g.
            # a late HW_INFO leaving boot for STOPPED before NVM said RUNNING.
            return
        p = self.parts
        if t is RunProgress:
            p.clock.observe(msg.time_ms)
            self._on_progress(msg)
        elif t is Time:
            p.clock.observe(msg.time_ms)
        elif t is HostRx:
            p.clock.observe(msg.time_ms)
            if p.hardware.info is None:
                self._busy(msg.frame)
            else:
                host.handle_frame(p, msg.frame)
        elif t is Sensors:
            p.clock.observe(msg.time_ms)
            self._on_sensors(msg)
        elif t is PowerOn:
            self._power_on(msg)
        elif t is HwInfo:
            self._on_hw_info(msg)

    def _busy(self, body: bytes) -> None:
        f = parse_body(body)
        if isinstance(f, Frame):
            nak = codec.nak_for(f.msg_type, NakReason.BUSY, "", "controller is starting")
            self.parts.outbox.host_reply(nak, f.seq, f.auth.tag if f.auth is not None else None)

    # ------------------------------------------------------------ boot

    def _power_on(self, msg: PowerOn) -> None:
        if self.powered:
            # A reset of a controller that kept running (split mode: the same process gets
            # POWER_ON again): RAM is gone, as on the real part. Only NVM remains.
            self.parts = Parts.new(self.keys, self.config, self.drugs)
            self._last_kick_ms = -1
        self.powered = True
        p = self.parts
        self._boot_odometer = boot.power_on(p, self.persist, msg)
        p.outbox.send(HwInfoRequest())
        self._hw_asked_ms = p.clock.now_ms

    def _on_hw_info(self, msg: HwInfo) -> None:
        p = self.parts
        e, s = p.engine, p.supervisor
        p.hardware.learn(msg)
        e.reservoir.capacity_nl = msg.reservoir_capacity_ul * 1000
        if self._boot_odometer is not None:
            # Strokes the runs before the reset made after their last report, counted
            # before anything else can happen (a refill would absorb them otherwise).
            self._count(p.guard.settle(self._boot_odometer, p.clock.now_ms))
            self._boot_odometer = None
        booting = s.state is TherapyState.BOOT  # (a later HW_INFO answers a request repeated)
        if booting:
            # SR-011: a bolus in progress at a reset is abandoned, never resumed, and
            # counts in full.
            e.end_bolus(BolusOutcome.INTERRUPTED)
        if e.catheter is None:
            # Not from the hardware, which cannot know it: the volume the clinician entered.
            e.catheter = Catheter(e.rx.catheter_volume_nl if e.rx else 0, e.reservoir_ng_per_ml)
        if booting:
            s.leave_boot()
            e.project_low(s.running)  # status shows the projection after a reset too
        p.outbox.send(SensorRequest())

    # ------------------------------------------------------------ what the pump reports

    def _count(self, made: list[Made]) -> None:
        p = self.parts
        if not made:
            return
        running = p.supervisor.running
        for m in made:
            p.engine.count(m, running)
        p.supervisor.check_reservoir()

    def _apply(self, fault: Fault | None) -> None:
        if fault is None:
            return
        s = self.parts.supervisor
        if fault.stops_delivery:
            s.fault_stop()
        for alarm, present in fault.conditions:
            s.set_condition(alarm, present)

    def _on_progress(self, msg: RunProgress) -> None:
        p = self.parts
        if p.hardware.limits is None:
            # Starting (no HW_INFO yet): a report held up on the link from a run before the
            # reset. That run died with it; POWER_ON's odometer settles the strokes it made.
            return
        made, fault = p.guard.on_progress(msg)
        self._count(made)
        e, s = p.engine, p.supervisor
        window_fg = e.history.window_fg(p.clock.now_ms)
        p.guard.recheck(s.state, s.high_alarm(), e.reservoir.volume_nl, window_fg, e.max_dose_24h_fg)
        self._apply(fault)

    def _on_sensors(self, msg: Sensors) -> None:
        p = self.parts
        s = p.supervisor
        p.hardware.battery_mv = msg.battery_mv
        was_stalled = p.guard.sensing.motor_stalled
        self._count(p.guard.on_sensors(msg))
        hw = p.hardware.info
        if hw is not None:
            s.set_condition(AlarmId.BATTERY_EOS, msg.battery_mv <= hw.battery_eos_mv)
            s.set_condition(AlarmId.BATTERY_ERI, msg.battery_mv <= hw.battery_eri_mv)
        if msg.motor_stalled and not was_stalled:
            s.fault_stop()
        s.set_condition(AlarmId.MOTOR_STALL, msg.motor_stalled)
        self._occlusion()

    def _occlusion(self) -> None:
        p = self.parts
        s = p.supervisor
        confirmed = p.guard.occlusion()
        if confirmed:
            if AlarmId.OCCLUSION not in p.alarms.active:
                s.fault_stop()
            s.set_condition(AlarmId.OCCLUSION, True)
        elif confirmed is False:
            s.set_condition(AlarmId.OCCLUSION, False)

    # ------------------------------------------------------------ the wake-up

    def _service(self) -> None:
        p = self.parts
        now = p.clock.now_ms
        out = p.outbox
        if p.hardware.info is None:
            # Starting: HW_INFO_REQUEST or its answer may have been lost on the link. Ask
            # again rather than sleep, unfed, until the watchdog resets us.
            if now >= self._hw_asked_ms + HW_INFO_RETRY_MS:
                out.send(HwInfoRequest())
                self._hw_asked_ms = now
            out.send(SleepUntil(wake_at_ms=p.clock.to_pump_ms(self._hw_asked_ms + HW_INFO_RETRY_MS)))
            return
        alarms, guard = p.alarms, p.guard
        due = p.supervisor.remind_stopped()  # (before the tones: a reminder raised now sounds now)
        due = _earliest(due, p.refusals.service())  # SR-056: counts of refusals whose time to be logged came
        if alarms.active or guard.sensing.pressure_high_since_ms is not None:
            self._occlusion()
            pattern = alarms.tones_due(now)
            if pattern is not None:
                out.send(Beep(pattern=pattern, repeat=1, repeat_interval_ms=0))
                out.touch("alarms")
            due = _earliest(due, alarms.next_tone_ms())
        guard.overdue()
        # A timed bolus at its time, before the run check: a basal run gives way to it.
        due = _earliest(due, timed.serve(p))
        if guard.run is not None:
            due = _earliest(due, guard.run.deadline_ms)  # (a run started below wakes us with its first report)
        else:
            s = p.supervisor
            due = _earliest(due, p.engine.deliver(s.state, s.high_alarm()))
        due = _earliest(due, guard.poll(AlarmId.OCCLUSION in alarms.active))
        due = _earliest(due, self._kick(now, p.hardware.info.watchdog_window_ms))
        out.send(SleepUntil(wake_at_ms=NONE_U64 if due is None else p.clock.to_pump_ms(max(due, now))))

    def _kick(self, now: int, window_ms: int) -> int:
        """Kick the watchdog on any wake-up once a tenth of its window has passed, and wake
        to kick before half of it has: a kick lost on the link is then made good by the
        next one inside the same window (two gaps between kicks make at most 98 % of it).
        Just under half, not less: stroke reports that come more often than that carry
        every kick, and the controller wakes for nothing else."""
        if self._last_kick_ms < 0 or now - self._last_kick_ms >= window_ms // 10:
            self.parts.outbox.send(KICK)
            self._last_kick_ms = now
        return self._last_kick_ms + window_ms * KICK_PERCENT // 100


def _earliest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None or a <= b else b
