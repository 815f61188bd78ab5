"""The controller: pump-link bytes in, pump-link bytes out, every safety rule in between.

Written as firmware: one thread, no wall clock (time comes from the pump in every
message), integer quantities, bounded memory. Tickless: every call to feed() ends with
SLEEP_UNTIL naming the next time the controller needs to run. The host is reached only
through HOST_RX / HOST_TX relayed by the pump.
"""

from __future__ import annotations

import heapq
from collections import deque

from protocol import codec
from protocol.auth import AuthResult, FrameVerifier
from protocol.codes import (
    AlarmId,
    BeepPattern,
    BolusKind,
    BolusOutcome,
    LogEvent,
    NakReason,
    Priority,
    ResetCause,
    Role,
    RunOutcome,
    TherapyState,
)
from protocol.framing import Frame, parse_body
from protocol.messages import (
    HOST_LINK_TYPES,
    PUMP_LINK_TYPES,
    AlarmCleared,
    AlarmRaised,
    Beep,
    BolusFinished,
    BolusStarted,
    HostRx,
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
    TherapyStateChanged,
    Time,
    WatchdogKick,
)
from protocol.schema import NONE_U64, MessageFamily, family_of

from . import host
from .alarms import AlarmSet
from .config import FirmwareConfig
from .delivery import ActiveBolus, Catheter, Run
from .dose import FG_PER_NG, MS_PER_DAY, BasalAccumulator, next_change_ms, rate_at, stroke_fg
from .druglib import DrugLibrary, load_library
from .eventlog import EventLog, LogRecord
from .history import BUCKETS, DeliveryHistory
from .nvm import MemoryNvm, Nvm, NvmFault
from .prescription import HwLimits, Prescription
from .reservoir import Reservoir
from .safety import RunFacts, occlusion_confirmed, run_refusal, strokes_within_limit
from .therapy import Therapy

RECENT_COMMANDS = 32
MILESTONE_NL = 1_000_000  # a log entry for every whole mL delivered
ANY_RUN = 0xFFFF
HW_INFO_RETRY_MS = 1_000  # ask again this often while HW_INFO has not come
RUN_REPORT_GRACE_MS = 30_000  # a run's last report this late after its last stroke is lost
# A run is given up when this many of its stroke reports in a row have not come: a lost
# MOTOR_RUN (no report at all) is noticed within strokes, not at the end of the whole run.
RUN_REPORTS_MISSED = 2
MAX_ORPHANS = 8
OTHER_KEYS = 0  # the failure count and lockout shared by unsigned frames and unknown key ids


class Controller:
    def __init__(
        self,
        keys: dict[Role, bytes],
        nvm: Nvm | None = None,
        drugs: DrugLibrary | None = None,
        config: FirmwareConfig | None = None,
    ) -> None:
        self._made_with = (keys,)  # a reset starts over from these and NVM
        self.config = config or FirmwareConfig()
        self.drugs = drugs or load_library()
        self.nvm = nvm if nvm is not None else MemoryNvm()
        # Keys to provision on first boot; once NVM holds keys, those are the ones used.
        self.keys = {r: k for r, k in keys.items() if r in (Role.CLINICIAN, Role.PATIENT)}
        self._rx = codec.MessageDecoder(PUMP_LINK_TYPES)
        self._out: list[Message] = []
        self._seq = 0
        self._host_seq = 0
        self.now_ms = 0
        self.powered = False
        self.hw: HwInfo | None = None
        self.limits: HwLimits | None = None
        self.therapy = Therapy(self._can_deliver, self._state_changed)
        self.prescription: Prescription | None = None
        self.acc = BasalAccumulator()
        self.catheter: Catheter | None = None
        self.reservoir = Reservoir(20_000, 0)
        self.history = DeliveryHistory()
        self.alarms = AlarmSet(self.config)
        self.log = EventLog(self.config.log_capacity)
        self._log_unsaved: list[LogRecord] = []  # entries not yet in NVM
        self._log_nvm_oldest = 1  # oldest entry NVM holds
        self.bolus: ActiveBolus | None = None
        self.run: Run | None = None
        self._run_seq = 0
        # Runs given up on (stopped by us, or whose last report never came): strokes they
        # report late, or that the odometer shows they made, are still counted.
        self._orphans: list[Run] = []
        self._probe = False  # a run's report was lost: the next run is one stroke, to learn the odometer
        self.odometer: int | None = None  # the pump's stroke odometer at the last report
        self.last_stroke_ms: int | None = None  # pump time of the last stroke reported
        self._saved_last_stroke_ms: int | None = None
        self._saved_odometer: int | None = None
        self._hw_asked_ms = 0
        self.lockout_until_ms = 0
        self.last_command_id = 0
        # Ids of the last commands accepted: a blind retry of any of them is refused.
        self.recent_command_ids: deque[int] = deque(maxlen=RECENT_COMMANDS)
        self.delivered_total_nl = 0  # counted from strokes made, since manufacture
        self.clock_offset_s = 0
        self.rtc_at_boot_s = 0
        self.boot_ms = 0
        self.resume_running = False  # what refill/halt return to
        self.battery_mv = 0
        self.pressure_high_since_ms: int | None = None
        self.motor_stalled = False
        self.last_kick_ms = -1
        self.verifier = FrameVerifier(self.keys)
        # Per key: failure times inside the window, and the end of its lockout.
        self.auth_failures: dict[int, list[int]] = {}
        self.auth_locked_until: dict[int, int] = {}
        self._dirty: set[str] = set()
        self._saved_state = TherapyState.STOPPED
        self.low_at_ms: int | None = None  # projected low-reservoir time
        self._nvm_minutes: set[int] = set()  # history minutes held in NVM (to expire them)
        self._nvm_order: list[int] = []  # the same minutes as a heap, oldest first

    # ------------------------------------------------------------ the pump link

    def feed(self, data: bytes) -> bytes:
        for item in self._rx.feed(data):
            if isinstance(item, codec.Received):
                self._on_message(item.message)
        if self.powered:
            self._service()
            self._commit()
        out = b"".join(self._encode(m) for m in self._out)
        self._out.clear()
        return out

    def _encode(self, msg: Message) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        return codec.encode(msg, self._seq)

    def send(self, msg: Message) -> None:
        self._out.append(msg)

    def _on_message(self, msg: Message) -> None:
        t = type(msg)
        if not self.powered and t is not PowerOn and t is not HostRx:
            # Nothing is restored before POWER_ON: a report that comes first (held up on
            # the link from before a reset) would be judged against an empty state, e.g.
            # a late HW_INFO leaving boot for STOPPED before NVM said RUNNING.
            return
        if t is RunProgress:
            self.now_ms = max(self.now_ms, msg.time_ms)
            self._on_progress(msg)
        elif t is Time:
            self.now_ms = max(self.now_ms, msg.time_ms)
        elif t is HostRx:
            self.now_ms = max(self.now_ms, msg.time_ms)
            if self.hw is None:
                self._host_nak_raw(msg.frame, NakReason.BUSY, "controller is starting")
            else:
                host.handle_frame(self, msg.frame)
        elif t is Sensors:
            self.now_ms = max(self.now_ms, msg.time_ms)
            self._on_sensors(msg)
        elif t is PowerOn:
            if self.powered:
                # A reset of a controller that kept running (split mode: the same process
                # gets POWER_ON again): RAM is gone, as on the real part. Only NVM remains.
                self.__init__(self._made_with[0], self.nvm, self.drugs, self.config)
            self._power_on(msg)
        elif t is HwInfo:
            self._on_hw_info(msg)

    # ------------------------------------------------------------ time

    @property
    def now_s(self) -> int:
        return self.now_ms // 1000

    @property
    def clock_s(self) -> int:
        return self.rtc_at_boot_s + self.clock_offset_s + (self.now_ms - self.boot_ms) // 1000

    @property
    def local_ms(self) -> int:
        return (self.rtc_at_boot_s + self.clock_offset_s) * 1000 + (self.now_ms - self.boot_ms)

    # ------------------------------------------------------------ boot and recovery

    def _power_on(self, msg: PowerOn) -> None:
        self.now_ms = msg.time_ms
        self.boot_ms = msg.time_ms
        self.rtc_at_boot_s = msg.rtc_s
        self.powered = True
        self._restore()
        self.log_event(LogEvent.BOOT, int(msg.reset_cause), msg.boot_count)
        if msg.reset_cause is ResetCause.WATCHDOG:
            self.log_event(LogEvent.WATCHDOG_RESET)
        self._nvm_faults(self.nvm.faults())
        if self.bolus is not None:
            # A bolus in progress at a reset is abandoned, never resumed, and counts in full.
            self._end_bolus(BolusOutcome.INTERRUPTED)
        self.run = None
        self._orphans.clear()
        self._probe = False
        # The odometer as last reported survives too: strokes the mechanism made after that
        # (a run going on while this controller was dead, until the watchdog stopped it)
        # show up at the first report after the reset and are counted as delivered.
        self.odometer = self._saved_odometer
        # The last stroke's time survives a reset (NVM): a new run after the reset must
        # still keep the mechanism's minimum interval from it.
        self.last_stroke_ms = self._saved_last_stroke_ms
        self.send(HwInfoRequest())
        self._hw_asked_ms = self.now_ms

    def _on_hw_info(self, msg: HwInfo) -> None:
        self.hw = msg
        self.limits = HwLimits(
            msg.stroke_nl, msg.min_stroke_interval_ms, msg.reservoir_capacity_ul, msg.max_strokes_per_run
        )
        self.reservoir.capacity_nl = msg.reservoir_capacity_ul * 1000
        self.battery_mv = self.battery_mv or msg.battery_eri_mv + 1
        if self.run is None and not self._orphans:
            # Settle the count before any run starts: strokes made after our last report
            # (a run that went on while this controller was dead) count as delivered.
            self._odometer_report(msg.odometer_strokes, self.now_ms, 0)
        if self.catheter is None:
            conc = self.prescription.concentration_ng_per_ml if self.prescription else 0
            self.catheter = Catheter(msg.catheter_dead_volume_nl, conc)
        if self.therapy.state == "boot":
            self._leave_boot()
            host.project_low(self)  # status shows the projection after a reset too
        self.send(SensorRequest())

    def _leave_boot(self) -> None:
        if self.alarms.active.get(AlarmId.MEMORY_ERROR) is not None:
            self.therapy.fire("boot_to_halted")
        elif self._saved_state is TherapyState.REFILL:
            self.therapy.fire("boot_to_refill")
        elif self._saved_state is TherapyState.HALTED or (
            # A standing high alarm halts a pump that was running; one a clinician had
            # stopped comes back stopped (nothing runs in either, and start is refused).
            self._saved_state is TherapyState.RUNNING and self.alarms.high_active()
        ):
            self.therapy.fire("boot_to_halted")
        elif self._saved_state is TherapyState.RUNNING and self.therapy.fire("boot_to_running"):
            pass
        else:
            self.therapy.fire("boot_to_stopped")

    def _restore(self) -> None:
        data = self.nvm.load() or {}
        self._saved_state = TherapyState(data.get("state", TherapyState.STOPPED))
        rx = data.get("prescription")
        self.prescription = Prescription.from_dict(rx) if rx else None
        acc = data.get("acc")
        if acc:
            self.acc = BasalAccumulator(*acc)
        cath = data.get("catheter")
        if cath is not None:
            self.catheter = Catheter(0, 0)
            self.catheter.load(cath)
            self.catheter.dead_volume_nl = sum(s[0] for s in cath)
        self.reservoir.volume_nl = data.get("reservoir_nl", 0)
        if "history" in data or "bolus_starts" in data:
            self.history = DeliveryHistory.from_data(data.get("history", {}), data.get("bolus_starts", []))
            self._nvm_minutes = {int(m) for m in data.get("history", {})}
            self._nvm_order = sorted(self._nvm_minutes)
        if "alarms" in data:
            self.alarms.load(data["alarms"])
        log = data.get("log")
        if log:
            entries = sorted((int(q), e) for q, e in data.get("log_entries", {}).items())
            self.log.entries.clear()
            self.log.entries.extend(LogRecord(q, t, LogEvent(ev), a0, a1) for q, (t, ev, a0, a1) in entries)
            self.log.next_seq = log["next_seq"]
            self._log_nvm_oldest = self.log.oldest_seq
        b = data.get("bolus")
        self.bolus = ActiveBolus.from_data(b) if b else None
        self.lockout_until_ms = data.get("lockout_until_ms", 0)
        self.last_command_id = data.get("last_command_id", 0)
        self.recent_command_ids.extend(data.get("recent_command_ids", []))
        self.delivered_total_nl = data.get("delivered_total_nl", 0)
        self._saved_last_stroke_ms = data.get("last_stroke_ms")
        self._saved_odometer = data.get("odometer")
        self.clock_offset_s = data.get("clock_offset_s", 0)
        self.resume_running = data.get("resume_running", False)
        stored = data.get("keys")
        if stored:
            self.keys = {Role(int(r)): bytes.fromhex(k) for r, k in stored.items()}
        else:
            self.dirty("keys")  # first boot: provision the keys given into NVM
        self.verifier = FrameVerifier(self.keys)
        counters = data.get("auth_counters")
        if counters:
            self.verifier.last_counters.update({int(k): v for k, v in counters.items()})
        for k, (until, failures) in (data.get("auth_lockouts") or {}).items():
            self.auth_locked_until[int(k)] = until
            self.auth_failures[int(k)] = list(failures)

    def _nvm_faults(self, faults: list[NvmFault]) -> None:
        """Log what the store found damaged. A lost record (or an unreadable minute of the
        delivery history) leaves the controller unable to vouch for its own state: raise
        the memory-error alarm, which halts therapy until a clinician acknowledges it, and
        never resume on its own after that."""
        if not faults:
            return
        lost = set()
        for f in faults:
            self.log_event(LogEvent.NVM_ERROR, f.record_id, f.slots | (f.position << 2))
            if f.critical:
                lost.add(f.record)
        # Rewrite every record, so damaged copies are replaced at the next commit.
        self.dirty("state", "prescription", "delivery", "alarms", "log", "limits", "auth", "keys")
        if not lost:
            return
        self.resume_running = False
        if lost & {"superblock", "history", "bolus_starts"}:
            # What was delivered in the last 24 h is not known: no patient bolus for a day.
            self.lockout_until_ms = max(self.lockout_until_ms, self.now_ms + MS_PER_DAY)
        self.set_condition(AlarmId.MEMORY_ERROR, True)
        self.set_condition(AlarmId.MEMORY_ERROR, False)  # latched until acknowledged

    def dirty(self, *records: str) -> None:
        self._dirty.update(records)

    def _commit(self) -> None:
        """Write what changed to NVM before the pump is told anything further."""
        if not self._dirty:
            return
        d = self._dirty
        nvm = self.nvm
        if "state" in d:
            nvm.save("state", int(self.therapy.code) if self.therapy.state != "boot" else int(self._saved_state))
            nvm.save("resume_running", self.resume_running)
        if "prescription" in d:
            nvm.save("prescription", self.prescription.to_dict() if self.prescription else None)
        if "delivery" in d:
            nvm.save("acc", [self.acc.owed, self.acc.at_ms])
            nvm.save("catheter", self.catheter.to_data() if self.catheter else None)
            nvm.save("reservoir_nl", self.reservoir.volume_nl)
            nvm.save("delivered_total_nl", self.delivered_total_nl)
            nvm.save("last_stroke_ms", self.last_stroke_ms)
            nvm.save("odometer", self.odometer)
            h = self.history
            if h.dirty_minutes:
                lo = self.now_ms // 60_000 - (BUCKETS - 1)  # every minute a rolling 24 h touches
                fresh = {m: h.bucket(m) for m in h.dirty_minutes if m >= lo}
                held, order = self._nvm_minutes, self._nvm_order
                expired = []
                while order and order[0] < lo:
                    m = heapq.heappop(order)
                    if m in held:
                        held.discard(m)
                        expired.append(m)
                for m in fresh:
                    if m not in held:
                        held.add(m)
                        heapq.heappush(order, m)
                nvm.save_items("history", {str(m): f for m, f in fresh.items()}, [str(m) for m in expired])
                h.dirty_minutes.clear()
            nvm.save("bolus_starts", list(h.bolus_starts))
            nvm.save("bolus", self.bolus.to_data() if self.bolus else None)
        if "alarms" in d:
            nvm.save("alarms", self.alarms.to_data())
        if "log" in d:
            # The entries themselves, not only the numbering: the log must outlive a reset.
            oldest = self.log.oldest_seq
            fresh = {str(r.seq): [r.time_s, int(r.event), r.arg0, r.arg1] for r in self._log_unsaved if r.seq >= oldest}
            gone = [str(q) for q in range(self._log_nvm_oldest, oldest)]
            nvm.save_items("log_entries", fresh, gone)
            nvm.save("log", {"next_seq": self.log.next_seq})
            self._log_unsaved.clear()
            self._log_nvm_oldest = oldest
        if "limits" in d:
            nvm.save("lockout_until_ms", self.lockout_until_ms)
            nvm.save("last_command_id", self.last_command_id)
            nvm.save("recent_command_ids", list(self.recent_command_ids))
            nvm.save("clock_offset_s", self.clock_offset_s)
        if "auth" in d:
            nvm.save("auth_counters", {str(k): v for k, v in self.verifier.last_counters.items()})
            nvm.save(
                "auth_lockouts",
                {
                    str(int(k)): [self.auth_locked_until.get(k, 0), self.auth_failures.get(k, [])]
                    for k in (*self.keys, OTHER_KEYS)
                },
            )
        if "keys" in d:
            nvm.save("keys", {str(int(r)): k.hex() for r, k in self.keys.items()})
        nvm.commit()
        self._dirty = set()

    # ------------------------------------------------------------ log and events

    def log_event(self, event: LogEvent, arg0: int = 0, arg1: int = 0) -> None:
        self._log_unsaved.append(self.log.add(self.now_s, event, arg0, arg1))
        self.dirty("log")

    def host_event(self, msg: Message) -> None:
        self._host_seq = (self._host_seq + 1) & 0xFFFF
        self.send(HostTx(frame=codec.encode_to_body(msg, self._host_seq)))

    def host_reply(self, msg: Message, seq: int) -> None:
        self.send(HostTx(frame=codec.encode_to_body(msg, seq)))

    def _host_nak_raw(self, body: bytes, reason: NakReason, detail: str) -> None:
        f = parse_body(body)
        if isinstance(f, Frame):
            self.host_reply(codec.nak_for(f.msg_type, reason, "", detail), f.seq)

    def _state_changed(self, old: TherapyState, new: TherapyState) -> None:
        if old is TherapyState.RUNNING and self.prescription is not None:
            # Bring basal up to the moment delivery stops. The accumulator is brought up
            # to date only between runs, so mid-run it has paid for strokes made but not
            # yet accrued the time they covered; restarting accrual from a later time
            # without this would lose that time's basal (a whole run's worth, at worst).
            self.acc.accrue(self.prescription.basal, self.local_ms)
        self.log_event(LogEvent.THERAPY_STATE, int(old), int(new))
        self.dirty("state")
        self.host_event(TherapyStateChanged(time_s=self.now_s, old_state=old, new_state=new))
        if new is not TherapyState.RUNNING:
            self._stop_run()
            if self.bolus is not None:
                self._end_bolus(BolusOutcome.STOPPED if new is TherapyState.STOPPED else BolusOutcome.INTERRUPTED)
        else:
            # Basal accrues only while running: none is owed for time spent stopped.
            self.acc.at_ms = self.local_ms
            self.dirty("delivery")

    # ------------------------------------------------------------ alarms

    def set_condition(self, alarm: AlarmId, present: bool) -> None:
        held = self.alarms.active.get(alarm)
        if not present and held is not None and held.condition and held.priority is Priority.HIGH:
            # A high alarm halted therapy. Acknowledging it while its condition held only
            # silenced it: resuming is a person's decision once the condition is gone, so
            # it stays latched (and therapy halted) until acknowledged again.
            held.acknowledged = False
        change = self.alarms.condition(alarm, present, self.now_ms)
        if change == "raised":
            a = self.alarms.active[alarm]
            self.log_event(LogEvent.ALARM_RAISED, int(alarm), int(a.priority))
            self.host_event(AlarmRaised(time_s=self.now_s, alarm=alarm, priority=a.priority))
            if self.alarms.high_active():
                self._halt()
        elif change == "cleared":
            self._alarm_cleared(alarm)
        self.dirty("alarms")

    def _alarm_cleared(self, alarm: AlarmId) -> None:
        self.log_event(LogEvent.ALARM_CLEARED, int(alarm))
        self.host_event(AlarmCleared(time_s=self.now_s, alarm=alarm))
        self.dirty("alarms")
        self._maybe_recover()

    def acknowledge(self, alarm: AlarmId) -> tuple[bool, bool]:
        """(was active, still active)."""
        was, change = self.alarms.acknowledge(alarm, self.now_ms)
        if was:
            self.log_event(LogEvent.ALARM_ACKNOWLEDGED, int(alarm))
            self.dirty("alarms")
            if not self.alarms.active:
                self.send(Beep(pattern=BeepPattern.SILENT, repeat=1, repeat_interval_ms=0))
        if change == "cleared":
            self._alarm_cleared(alarm)
        return was, alarm in self.alarms.active

    def clear_alarm(self, alarm: AlarmId) -> None:
        if self.alarms.clear(alarm):
            self._alarm_cleared(alarm)

    def _halt(self) -> None:
        if self.therapy.state in ("running", "stopped"):
            self.resume_running = self.therapy.state == "running" or self.resume_running
            self.therapy.fire("halt")
        self._stop_run()

    def _maybe_recover(self) -> None:
        if self.therapy.state == "halted" and not self.alarms.high_active():
            if self.resume_running and self.therapy.fire("recover_running"):
                return
            self.therapy.fire("recover_stopped")

    def _can_deliver(self) -> bool:
        return (
            self.prescription is not None
            and self.limits is not None
            and not self.alarms.high_active()
            and not self.reservoir_empty()
        )

    def strokes_above_empty(self) -> int:
        """Whole strokes the reservoir estimate holds above the empty level."""
        if self.limits is None:
            return 0
        return max(0, self.reservoir.volume_nl - self.config.empty_reservoir_ul * 1000) // self.limits.stroke_nl

    def reservoir_empty(self) -> bool:
        """At the empty level, or so near it that not one more stroke fits above it:
        either way nothing more can be delivered, and that must be said (EMPTY alarm),
        not left as a silent stop."""
        return self.reservoir.is_empty(self.config) or (self.limits is not None and self.strokes_above_empty() == 0)

    # ------------------------------------------------------------ sensors and faults

    def _on_sensors(self, msg: Sensors) -> None:
        self.battery_mv = msg.battery_mv
        if self.run is None and not self._orphans and self.limits is not None:
            # No run of ours is moving: every stroke the odometer shows is settled now, at
            # boot above all, before a refill could be recorded on top of an old count.
            self._odometer_report(msg.odometer_strokes, msg.time_ms, 0)
        hw = self.hw
        if hw is not None:
            self.set_condition(AlarmId.BATTERY_EOS, msg.battery_mv <= hw.battery_eos_mv)
            self.set_condition(AlarmId.BATTERY_ERI, msg.battery_mv <= hw.battery_eri_mv)
        if msg.motor_stalled and not self.motor_stalled:
            self._fault_stop()
        self.motor_stalled = msg.motor_stalled
        self.set_condition(AlarmId.MOTOR_STALL, msg.motor_stalled)
        if msg.outlet_pressure_pa >= self.config.occlusion_pressure_pa:
            if self.pressure_high_since_ms is None:
                self.pressure_high_since_ms = self.now_ms
        else:
            self.pressure_high_since_ms = None
        self._check_occlusion()

    def _check_occlusion(self) -> None:
        if occlusion_confirmed(self.pressure_high_since_ms, self.now_ms, self.config.occlusion_dwell_ms):
            if AlarmId.OCCLUSION not in self.alarms.active:
                self._fault_stop()
            self.set_condition(AlarmId.OCCLUSION, True)
        elif self.pressure_high_since_ms is None:
            self.set_condition(AlarmId.OCCLUSION, False)

    def _fault_stop(self) -> None:
        """A fault stops the current stroke run at once; a bolus in it is abandoned."""
        self._stop_run()
        if self.bolus is not None:
            self._end_bolus(BolusOutcome.INTERRUPTED)

    # ------------------------------------------------------------ delivery

    def _stop_run(self) -> None:
        if self.run is not None:
            self.send(MotorStop(run_id=self.run.run_id))
            self._orphans.append(self.run)  # its STOPPED report still counts what it made
            del self._orphans[:-MAX_ORPHANS]
            self.run = None

    def replan_basal(self) -> None:
        """The basal schedule or the clock changed: a basal run planned at the old rate
        must not go on at its spacing (for up to a whole run). Stop it; what is owed stays
        owed, and the next run is planned at the rate now in force."""
        if self.run is not None and self.run.purpose == "basal":
            self._stop_run()

    def strokes_to_bridge_end(self) -> int | None:
        """While bridging: strokes until the tip segment (the old drug) is pushed out (the
        last of them may carry some of the new drug). A run must end there, since from
        then on a stroke carries a different dose; None when not bridging."""
        cath = self.catheter
        if cath is None or not cath.bridging:
            return None
        return max(1, -(-cath.segments[0][0] // self.limits.stroke_nl))

    def _cap_run(self, n: int) -> int:
        """A run's strokes cut to what fits above the empty level and to the bridge end."""
        n = min(n, self.strokes_above_empty())
        bridge = self.strokes_to_bridge_end()
        return n if bridge is None else min(n, bridge)

    def tip_stroke_fg(self) -> int:
        conc = self.catheter.tip_concentration if self.catheter and self.catheter.segments else 0
        if not conc and self.prescription:
            conc = self.prescription.concentration_ng_per_ml
        return stroke_fg(self.limits.stroke_nl, conc)

    def _on_progress(self, msg: RunProgress) -> None:
        if self.limits is None:
            # Starting (no HW_INFO yet): a report held up on the link from a run before the
            # reset. That run died with it; HW_INFO's odometer settles the strokes it made.
            return
        run = self.run
        if run is not None and msg.run_id == run.run_id:
            target = run
        else:
            target = next((o for o in reversed(self._orphans) if o.run_id == msg.run_id), None)
        new = max(0, msg.strokes_made - target.reported) if target is not None else 0
        self._odometer_report(msg.odometer_strokes, msg.time_ms, new)
        if target is None:
            return
        if new > 0:
            target.reported = msg.strokes_made
            self._account(new, self._purpose(target))
        if target is run and msg.outcome is RunOutcome.IN_PROGRESS:
            left = run.strokes - msg.strokes_made
            run.deadline_ms = max(run.deadline_ms, self._report_deadline(msg.time_ms, left, run.interval_ms))
        if target is run:
            # Everything made before this run is accounted for now.
            self._orphans.clear()
            self._probe = False
        if msg.outcome is RunOutcome.IN_PROGRESS:
            return
        if target is run:
            self.run = None
        else:
            self._orphans.remove(target)
            if msg.outcome is RunOutcome.STOPPED:
                return
        if msg.outcome is RunOutcome.STALLED:
            self.motor_stalled = True
            self._fault_stop()
            self.set_condition(AlarmId.MOTOR_STALL, True)
        elif msg.outcome in (RunOutcome.EMPTY, RunOutcome.REFUSED):
            self.log_event(LogEvent.DELIVERY_SHORTFALL, target.strokes, msg.strokes_made)
            self._fault_stop()
            self.set_condition(AlarmId.DELIVERY_SHORTFALL, True)
            if msg.outcome is RunOutcome.EMPTY:
                self.set_condition(AlarmId.EMPTY_RESERVOIR, True)

    def _odometer_report(self, odometer: int, time_ms: int, new: int) -> None:
        """The pump's odometer, with `new` strokes that a report of ours covers."""
        known = self.odometer
        prev_stroke_ms = self.last_stroke_ms
        if new > 0 or (known is not None and odometer > known):
            self.last_stroke_ms = time_ms
        if known is not None and odometer - known > new:
            # Strokes made that no report of ours covered (a run's last report was lost,
            # or a run went on while this controller was dead until the watchdog stopped
            # it). Sceptical: no more than the mechanism could have made since the last stroke.
            claimed = odometer - known - new
            possible = claimed
            if prev_stroke_ms is not None and self.limits is not None:
                elapsed = max(0, time_ms - prev_stroke_ms)
                possible = max(0, elapsed // self.limits.min_stroke_interval_ms + 1 - new)
            if claimed > possible:
                self.log_event(LogEvent.DELIVERY_SHORTFALL, claimed, possible)
            self._account_unreported(min(claimed, possible))
        # (A late report, held up on the link, must not wind the odometer back.)
        self.odometer = odometer if known is None else max(known, odometer)

    @staticmethod
    def _report_deadline(since_ms: int, strokes_left: int, interval_ms: int) -> int:
        """When a run's next report is overdue: RUN_REPORTS_MISSED stroke reports after
        `since_ms` (its start, whose first stroke comes at once, or its last report), but
        never before its last stroke, plus the grace."""
        return since_ms + min(strokes_left, RUN_REPORTS_MISSED) * interval_ms + RUN_REPORT_GRACE_MS

    def _purpose(self, run: Run) -> str:
        """What a run's strokes count as: a bolus run's only while that bolus lasts."""
        if run.purpose == "bolus" and (self.bolus is None or self.bolus.command_id != run.bolus_id):
            return "drug"
        return run.purpose

    def _account_unreported(self, strokes: int) -> None:
        """The odometer moved further than the reports said: give the strokes to the runs
        whose last report was lost (oldest first), up to what each was commanded; any
        left over count as drug delivered (toward the limits and out of the reservoir)."""
        for o in list(self._orphans):
            take = min(strokes, o.strokes - o.reported)
            if take > 0:
                o.reported += take
                self._account(take, self._purpose(o))
                strokes -= take
        if strokes > 0:
            self._account(strokes, "drug")

    def _account(self, strokes: int, purpose: str) -> None:
        """Strokes the mechanism made: volume out of the reservoir, drug to the patient.
        purpose "basal" pays the basal owed, "bolus" the bolus in progress, "drug" neither."""
        stroke_nl = self.limits.stroke_nl
        res_conc = self.prescription.concentration_ng_per_ml if self.prescription else 0
        bolus = self.bolus if purpose == "bolus" else None
        if self.prescription is not None and self.therapy.state == "running":
            # Keep basal accrued up to each stroke, so the accumulator (and what NVM holds
            # of it) is never a run behind: a reset loses at most the time since the last
            # stroke, not the time a whole run covered.
            self.acc.accrue(self.prescription.basal, self.local_ms)
        for _ in range(strokes):
            fg = self.catheter.push(stroke_nl, res_conc) if self.catheter else stroke_nl * res_conc
            self.reservoir.delivered(stroke_nl)
            if bolus is not None:
                bolus.made += 1
                bolus.delivered_nl += stroke_nl
                if bolus.counts_as_drug:
                    bolus.delivered_fg += fg
                    self.history.add(self.now_ms, fg)
            else:
                if purpose == "basal":
                    self.acc.pay(fg * MS_PER_DAY)
                self.history.add(self.now_ms, fg)
        before = self.delivered_total_nl // MILESTONE_NL
        self.delivered_total_nl += strokes * stroke_nl
        if self.delivered_total_nl // MILESTONE_NL != before:
            self.log_event(LogEvent.DELIVERY_MILESTONE, self.delivered_total_nl // MILESTONE_NL)
        if bolus is not None and bolus.kind is BolusKind.PRIMING and bolus.made >= bolus.planned_strokes:
            self.catheter.fill(res_conc)
        self.dirty("delivery")
        self._check_reservoir()

    def _check_reservoir(self) -> None:
        rx = self.prescription
        if rx is not None:
            self.set_condition(AlarmId.LOW_RESERVOIR, self.reservoir.is_low(rx.low_reservoir_ul))
        empty = self.reservoir_empty()
        if empty and AlarmId.EMPTY_RESERVOIR not in self.alarms.active:
            self._fault_stop()
        if empty or AlarmId.EMPTY_RESERVOIR in self.alarms.active:
            self.set_condition(AlarmId.EMPTY_RESERVOIR, empty)

    def start_bolus(self, bolus: ActiveBolus) -> None:
        self.bolus = bolus
        if bolus.kind is BolusKind.PATIENT:
            self.history.record_bolus_start(self.now_ms)
            self.lockout_until_ms = self.now_ms + self.prescription.patient_bolus.lockout_s * 1000
            self.dirty("limits")
        self._stop_run()  # a basal stroke run gives way; what it owed stays owed
        self.log_event(LogEvent.BOLUS_STARTED, bolus.command_id, int(bolus.kind))
        self.host_event(
            BolusStarted(
                time_s=self.now_s,
                command_id=bolus.command_id,
                kind=bolus.kind,
                dose_ng=bolus.dose_ng,
                volume_nl=bolus.volume_nl,
                duration_s=bolus.duration_s,
            )
        )
        self.dirty("delivery")

    def _end_bolus(self, outcome: BolusOutcome) -> None:
        b = self.bolus
        if b is None:
            return
        self.bolus = None
        if self.run is not None and self.run.purpose == "bolus":
            self._stop_run()
        if outcome is not BolusOutcome.COMPLETED and b.counts_as_drug:
            # Abandoned: the undelivered part counts toward the limits as if given.
            left = b.dose_ng * FG_PER_NG - b.delivered_fg
            if left > 0:
                self.history.add(self.now_ms, left)
        self.log_event(LogEvent.BOLUS_FINISHED, b.command_id, int(outcome))
        self.host_event(
            BolusFinished(
                time_s=self.now_s,
                command_id=b.command_id,
                kind=b.kind,
                outcome=outcome,
                delivered_ng=b.delivered_fg // FG_PER_NG,
                delivered_nl=b.delivered_nl,
            )
        )
        self.dirty("delivery")

    def bolus_active_until_ms(self) -> int | None:
        return self.bolus.end_ms if self.bolus is not None else None

    def _run_facts(self, volume_nl: int, drug_fg: int, priming: bool) -> RunFacts:
        return RunFacts(
            running=self.therapy.state == "running",
            priming=priming,
            high_alarm=self.alarms.high_active(),
            reservoir_nl=self.reservoir.volume_nl,
            empty_level_nl=self.config.empty_reservoir_ul * 1000,
            run_volume_nl=volume_nl,
            window_fg=self.history.window_fg(self.now_ms),
            run_drug_fg=drug_fg,
            max_dose_24h_fg=self.prescription.max_dose_24h_ng * FG_PER_NG if self.prescription else 0,
        )

    def _start_run(self, purpose: str, strokes: int, interval_ms: int, drug_fg: int, priming: bool = False) -> bool:
        lim = self.limits
        strokes = min(strokes, lim.max_strokes_per_run)
        if self._probe:
            # The last run's final report never came: one stroke, whose report (with the
            # pump's odometer) tells what that run made, before anything more is asked.
            drug_fg = drug_fg // strokes
            strokes = 1
        interval_ms = max(interval_ms, lim.min_stroke_interval_ms)
        if run_refusal(self._run_facts(strokes * lim.stroke_nl, drug_fg, priming)) is not None:
            return False
        self._run_seq = self._run_seq % 0xFFFE + 1
        deadline = self._report_deadline(self.now_ms, strokes, interval_ms)
        bolus_id = self.bolus.command_id if purpose == "bolus" and self.bolus is not None else 0
        self.run = Run(self._run_seq, purpose, strokes, interval_ms, deadline_ms=deadline, bolus_id=bolus_id)
        self.send(MotorRun(run_id=self._run_seq, strokes=strokes, interval_ms=interval_ms))
        return True

    # ------------------------------------------------------------ the wake-up

    def _service(self) -> None:
        now = self.now_ms
        if self.hw is None:
            # Starting: HW_INFO_REQUEST or its answer may have been lost on the link. Ask
            # again rather than sleep, unfed, until the watchdog resets us.
            if now >= self._hw_asked_ms + HW_INFO_RETRY_MS:
                self.send(HwInfoRequest())
                self._hw_asked_ms = now
            self.send(SleepUntil(wake_at_ms=self._hw_asked_ms + HW_INFO_RETRY_MS))
            return
        self._check_occlusion()
        pattern = self.alarms.tones_due(now)
        if pattern is not None:
            self.send(Beep(pattern=pattern, repeat=1, repeat_interval_ms=0))
            self.dirty("alarms")
        wake = [self.alarms.next_tone_ms()]
        run = self.run
        if run is not None and now >= run.deadline_ms:
            # Its last report is long overdue (lost on the link, or the MOTOR_RUN was): stop
            # it if it still goes, and find out from the next report what it made, instead
            # of waiting for ever with delivery stalled.
            self.log_event(LogEvent.DELIVERY_SHORTFALL, run.strokes, run.reported)
            self._stop_run()
            self._probe = True
        if self.run is not None:
            wake.append(self.run.deadline_ms)
        if self.run is None and self.therapy.state == "running":
            wake.append(self._deliver())
        elif self.run is None and self.bolus is not None and self.bolus.kind is BolusKind.PRIMING:
            wake.append(self._deliver())
        if self.pressure_high_since_ms is not None or self.motor_stalled or AlarmId.OCCLUSION in self.alarms.active:
            if self.pressure_high_since_ms is not None and AlarmId.OCCLUSION not in self.alarms.active:
                wake.append(self.pressure_high_since_ms + self.config.occlusion_dwell_ms)
            if now >= self._next_poll_ms():
                self.send(SensorRequest())
                self._last_poll_ms = now
            wake.append(self._next_poll_ms())
        # Kick on any wake-up once a tenth of the window has passed, and make sure to wake
        # before two fifths of it: stroke wake-ups usually carry the kick for free. Two
        # fifths, so that a kick lost on the link is made good by the next one inside the
        # same window (two kicks apart are at most four fifths of it).
        window = self.hw.watchdog_window_ms
        if self.last_kick_ms < 0 or now - self.last_kick_ms >= window // 10:
            self.send(WatchdogKick())
            self.last_kick_ms = now
        wake.append(self.last_kick_ms + window * 2 // 5)
        due = min((w for w in wake if w is not None), default=NONE_U64)
        self.send(SleepUntil(wake_at_ms=max(due, now)))

    _last_poll_ms = -(10**12)

    def _next_poll_ms(self) -> int:
        return self._last_poll_ms + self.config.sensor_poll_ms

    def _basal_run_plan(self, owed: int, cost: int) -> tuple[int, int]:
        """Strokes and interval for the next basal run.

        Strokes already owed (after a bolus, say) are paid out at a gentle fixed pace.
        Otherwise one stroke is due now and the run carries on at the current rate's
        stroke spacing (rounded up, so no stroke is ever early) up to the next schedule
        change: the controller then wakes once per stroke, for the progress report,
        instead of twice. The accumulator still pays stroke by stroke."""
        lim = self.limits
        if owed > 1:
            return owed, lim.min_stroke_interval_ms * self.config.payout_interval_factor
        rx = self.prescription
        local = self.local_ms
        tod = local % MS_PER_DAY
        rate_fg = rate_at(rx.basal, tod) * FG_PER_NG
        if rate_fg <= 0:
            return 1, lim.min_stroke_interval_ms
        interval = max(lim.min_stroke_interval_ms, -(-cost // rate_fg))
        until_change = next_change_ms(rx.basal, tod) - tod
        n = 1 + max(0, until_change - 1) // interval
        return max(1, min(n, lim.max_strokes_per_run)), interval

    def _deliver(self) -> int | None:
        """Start the next run if one is due; return when to look again (pump time)."""
        rx = self.prescription
        if rx is None or self.limits is None or self.catheter is None:
            return None
        lim = self.limits
        sfg = self.tip_stroke_fg()
        # The mechanism's fastest pace holds across runs too: a run's first stroke comes
        # at once, so no run starts sooner than that after the last stroke.
        ready_ms = self.now_ms if self.last_stroke_ms is None else self.last_stroke_ms + lim.min_stroke_interval_ms
        b = self.bolus
        if b is not None:
            left = b.remaining_strokes(sfg)
            if left == 0:
                self._end_bolus(BolusOutcome.COMPLETED)
                b = None
            elif ready_ms > self.now_ms:
                return ready_ms
            else:
                left = max(1, self._cap_run(left)) if b.counts_as_drug else left
                drug = sfg * min(left, lim.max_strokes_per_run) if b.counts_as_drug else 0
                if self._start_run("bolus", left, b.interval_ms, drug, priming=not b.counts_as_drug):
                    return None
                self._end_bolus(BolusOutcome.INTERRUPTED)
                b = None
        if self.therapy.state != "running":
            return None  # (a priming bolus while stopped): no basal accrues while stopped
        # Basal: accrue to now, pay what is owed (held back during a bolus, never dropped).
        self.acc.accrue(rx.basal, self.local_ms)
        self.dirty("delivery")
        cost = sfg * MS_PER_DAY
        owed = self.acc.strokes_due(cost)  # negative while a run paid ahead of accrual
        if owed > 0 and ready_ms > self.now_ms:
            return ready_ms
        if owed > 0:
            n, interval = self._basal_run_plan(owed, cost)
            window = self.history.window_fg(self.now_ms)
            n = strokes_within_limit(window, sfg, rx.max_dose_24h_ng * FG_PER_NG, self._cap_run(n))
            if n and self._start_run("basal", n, interval, sfg * min(n, lim.max_strokes_per_run)):
                return None
            # Held by the hard limit or the reservoir: look again in a minute.
            return self.now_ms + 60_000
        due_local = self.acc.due_at_ms(rx.basal, cost)
        if due_local is None:
            return self.now_ms + MS_PER_DAY
        return self.now_ms + max(1, due_local - self.local_ms)


def verify_role(ctl: Controller, frame: Frame) -> tuple[Role | None, NakReason | None, str]:
    """Authenticate a relayed host frame; log security events; persist counters first.
    Returns (role, None, "") or (None, NAK reason, detail)."""
    key = frame.auth.key_id if frame.auth else 0
    # Failures are counted per key the pump holds; unsigned frames and every other key id
    # share one count, so no sender, known or not, can log failures one by one for ever.
    bucket = key if key in ctl.keys else OTHER_KEYS
    until = ctl.auth_locked_until.get(bucket, 0)
    if ctl.now_ms < until:
        # Not logged frame by frame: a flood must not push the real history out of the log.
        return None, NakReason.AUTH_FAILED, f"key locked out for {-(-(until - ctl.now_ms) // 1000)} s"
    v = ctl.verifier.check(frame)
    if v.ok:
        ctl.dirty("auth")
        return v.role, None, ""
    if v.result is AuthResult.REPLAYED:
        ctl.log_event(LogEvent.REPLAY_REJECTED, key, frame.msg_type)
        nak, detail = NakReason.REPLAYED, "replay"
    else:
        ctl.log_event(LogEvent.AUTH_FAILED, key, frame.msg_type)
        nak, detail = NakReason.AUTH_FAILED, "authentication failed"
    _auth_failure(ctl, bucket)
    return None, nak, detail


def _auth_failure(ctl: Controller, key: int) -> None:
    """Count a failure against a key the pump holds (or OTHER_KEYS: unsigned frames and
    keys it does not hold, together); too many in the window lock it out. Bounded memory
    whatever is sent: one count per key held, and one more."""
    cfg = ctl.config
    recent = [t for t in ctl.auth_failures.get(key, []) if ctl.now_ms - t < cfg.auth_failure_window_ms]
    recent.append(ctl.now_ms)
    if len(recent) >= cfg.auth_max_failures:
        ctl.auth_locked_until[key] = ctl.now_ms + cfg.auth_lockout_ms
        ctl.log_event(LogEvent.KEY_LOCKED_OUT, key, cfg.auth_lockout_ms // 1000)
        recent = []
    ctl.auth_failures[key] = recent
    ctl.dirty("auth")


def is_host_request(msg_type: int) -> bool:
    return msg_type in HOST_LINK_TYPES and family_of(msg_type) is MessageFamily.HOST_REQUEST
