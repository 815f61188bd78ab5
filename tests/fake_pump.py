"""A tiny deterministic fake pump for unit tests of the controller (firmware/controller.py).

The test plays the pump hardware: it owns the clock, answers HW_INFO_REQUEST and
SENSOR_REQUEST, makes the strokes of each MOTOR_RUN itself (one RUN_PROGRESS per stroke,
at the right pump time), delivers TIME (reason TIMER) when the controller's SLEEP_UNTIL
comes due, and relays host frames both ways. No emulator, no ports, no processes: time
jumps straight to the next event (the next stroke or the controller's wake-up).

Everything the controller said is recorded with the pump time it said it at, so tests
can check tones, watchdog kicks, motor commands and host events after the fact.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware.board.druglib import load_library
from firmware.config import FirmwareConfig
from firmware.controller import Controller
from firmware.druglib import DrugLibrary
from firmware.nvm import MemoryNvm
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import (
    BeepPattern,
    MessageFamily,
    ResetCause,
    Role,
    RunOutcome,
    WakeReason,
)
from protocol.framing import Frame, parse_body
from protocol.messages import (
    PUMP_LINK_TYPES,
    Beep,
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
    Time,
    WatchdogKick,
)
from protocol.schema import NONE_U64, family_of

ANY_RUN = 0xFFFF
# Local midnight (2023-11-14T00:00 local): the basal schedule's day starts at pump time 0.
RTC0_S = 19_675 * 86_400
DRUGS = load_library()
KEYS: dict[Role, bytes] = {Role.CLINICIAN: bytes(range(1, 33)), Role.PATIENT: bytes(range(101, 133))}


def hw_info(**changes: object) -> HwInfo:
    fields = {
        "serial": "FAKE-0001",
        "reservoir_capacity_ul": 20_000,
        "stroke_nl": 500,
        "min_stroke_interval_ms": 1_800,
        "min_flow_nl_per_day": 48_000,
        "max_strokes_per_run": 64,
        "watchdog_window_ms": 300_000,
        "battery_eri_mv": 3_300,
        "battery_eos_mv": 3_100,
        "odometer_strokes": 0,
    }
    fields.update(changes)
    return HwInfo(**fields)


@dataclass
class FakeRun:
    run_id: int
    strokes: int
    interval_ms: int
    next_ms: int
    made: int = 0


@dataclass
class Output:
    """One call of Controller.feed: the message fed and what came out."""

    time_ms: int
    fed: Message
    out: list[Message] = field(default_factory=list)


class FakePump:
    def __init__(
        self,
        nvm: MemoryNvm | None = None,
        config: FirmwareConfig | None = None,
        hw: HwInfo | None = None,
        keys: dict[Role, bytes] | None = None,
        start_ms: int = 0,
        rtc0_s: int = RTC0_S,
        drugs: DrugLibrary | None = None,
    ) -> None:
        self.nvm = nvm if nvm is not None else MemoryNvm()
        self.drugs = drugs or DRUGS
        self.config = config
        self.hw = hw or hw_info()
        self.keys = dict(keys or KEYS)
        self.rtc0_s = rtc0_s  # the RTC reads rtc0_s + now_ms // 1000
        self.now_ms = start_ms
        self.boot_count = 0
        self.odometer = 0
        self.run: FakeRun | None = None
        self.wake_at: int | None = None
        self.queue: deque[Message] = deque()  # pump -> controller, not yet delivered
        # Hardware state the sensors report.
        self.pressure_pa = 0
        self.stalled = False  # the next stroke stalls (and SENSORS say so) while True
        self.battery_mv = 3_600
        self.strokes_left: int | None = None  # the reservoir runs dry after this many more strokes
        self.on_stroke: Callable[[FakePump], None] | None = None  # called after each stroke made
        # What happened.
        self.outputs: list[Output] = []
        self.strokes: list[tuple[int, int]] = []  # (time_ms, run_id) of every stroke made
        self.runs: list[tuple[int, MotorRun]] = []
        self.stops: list[tuple[int, MotorStop]] = []
        self.kicks: list[int] = []
        self.beeps: list[tuple[int, BeepPattern]] = []
        self.sleeps: list[tuple[int, int, bool]] = []  # (time_ms, wake_at_ms, a run is going)
        self.events: list[tuple[int, Message]] = []  # host events (HOST_TX, not replies)
        self.replies: dict[int, list[Message]] = {}  # host replies by request seq
        self.violations: list[str] = []  # hardware limits the controller broke
        self._host_seq = 0
        self._seq = 0
        self._command_id = 0
        self._signers = {role: FrameSigner(role, key) for role, key in self.keys.items()}
        self._ctl_decoder = codec.MessageDecoder(PUMP_LINK_TYPES)
        self.ctl = self._new_controller()

    # ------------------------------------------------------------ controller lifecycle

    def _new_controller(self) -> Controller:
        return Controller(self.keys, self.nvm, self.drugs, self.config)

    def power_on(self, cause: ResetCause = ResetCause.POWER_UP, answer: bool = True) -> None:
        """POWER_ON; with answer=False the pump's answers (HW_INFO) stay queued, unsent."""
        self.boot_count += 1
        msg = PowerOn(
            reset_cause=cause,
            time_ms=self.now_ms,
            rtc_s=self.rtc0_s + self.now_ms // 1000,
            boot_count=self.boot_count,
            odometer_strokes=self.odometer,
        )
        if answer:
            self.deliver(msg)
        else:
            self._feed(msg)

    def reset(self, cause: ResetCause = ResetCause.POWER_CYCLE) -> None:
        """The controller loses power and starts again as a fresh object on the same NVM.
        The motor stops where it is (no report, as on a power loss); pending timers die."""
        self.run = None
        self.wake_at = None
        self.queue.clear()
        self._ctl_decoder = codec.MessageDecoder(PUMP_LINK_TYPES)
        self.ctl = self._new_controller()
        self.power_on(cause)

    # ------------------------------------------------------------ pump -> controller

    def send(self, msg: Message) -> None:
        """Queue a message for the controller and deliver everything queued."""
        self.queue.append(msg)
        self.pump()

    def pump(self) -> None:
        while self.queue:
            self._feed(self.queue.popleft())

    def deliver(self, msg: Message) -> Output:
        """Deliver one message now, then whatever the controller's answer provokes."""
        out = self._feed(msg)
        self.pump()
        return out

    def _feed(self, msg: Message) -> Output:
        self._seq = (self._seq + 1) & 0xFFFF
        data = self.ctl.feed(codec.encode(msg, self._seq))
        rec = Output(self.now_ms, msg)
        for item in self._ctl_decoder.feed(data):
            assert isinstance(item, codec.Received), f"controller sent an undecodable frame: {item}"
            rec.out.append(item.message)
        self.outputs.append(rec)
        for m in rec.out:
            self._handle(m)
        return rec

    def sensors(self) -> Sensors:
        return Sensors(
            time_ms=self.now_ms,
            outlet_pressure_pa=self.pressure_pa,
            motor_stalled=self.stalled,
            battery_mv=self.battery_mv,
            odometer_strokes=self.odometer,
        )

    def send_sensors(self) -> None:
        self.send(self.sensors())

    # ------------------------------------------------------------ controller -> pump

    def _handle(self, m: Message) -> None:
        t = type(m)
        now = self.now_ms
        if t is SleepUntil:
            self.sleeps.append((now, m.wake_at_ms, self.run is not None))
            if m.wake_at_ms < now:
                self.violations.append(f"SLEEP_UNTIL {m.wake_at_ms} in the past at {now}")
            self.wake_at = None if m.wake_at_ms == NONE_U64 else m.wake_at_ms
        elif t is WatchdogKick:
            self.kicks.append(now)
        elif t is MotorRun:
            self.runs.append((now, m))
            if self.run is not None:
                self._end_run(RunOutcome.STOPPED)
            hw = self.hw
            if not 1 <= m.strokes <= hw.max_strokes_per_run or m.interval_ms < hw.min_stroke_interval_ms:
                self.violations.append(f"MOTOR_RUN {m} breaks the hardware limits")
                self.queue.append(self._progress(m.run_id, 0, RunOutcome.REFUSED))
                return
            self.run = FakeRun(m.run_id, m.strokes, m.interval_ms, next_ms=now)
        elif t is MotorStop:
            self.stops.append((now, m))
            if self.run is not None and m.run_id in (self.run.run_id, ANY_RUN):
                self._end_run(RunOutcome.STOPPED)
        elif t is Beep:
            self.beeps.append((now, m.pattern))
        elif t is HwInfoRequest:
            self.queue.append(dataclasses.replace(self.hw, odometer_strokes=self.odometer))
        elif t is SensorRequest:
            self.queue.append(self.sensors())
        elif t is HostTx:
            f = parse_body(m.frame)
            assert isinstance(f, Frame), f"controller relayed a broken host frame: {f}"
            msg = codec.decode(f)
            if family_of(f.msg_type) is MessageFamily.HOST_RESPONSE:
                self.replies.setdefault(f.seq, []).append(msg)
            else:
                self.events.append((now, msg))
        else:
            self.violations.append(f"unexpected {type(m).__name__} from the controller")

    def _progress(self, run_id: int, made: int, outcome: RunOutcome) -> RunProgress:
        return RunProgress(
            run_id=run_id, strokes_made=made, outcome=outcome, odometer_strokes=self.odometer, time_ms=self.now_ms
        )

    def _end_run(self, outcome: RunOutcome) -> None:
        run = self.run
        self.run = None
        self.queue.append(self._progress(run.run_id, run.made, outcome))

    def _stroke(self) -> None:
        run = self.run
        if self.stalled:
            self._end_run(RunOutcome.STALLED)
            self.queue.append(self.sensors())
            return
        if self.strokes_left is not None:
            if self.strokes_left == 0:
                self._end_run(RunOutcome.EMPTY)
                return
            self.strokes_left -= 1
        self.odometer += 1
        run.made += 1
        self.strokes.append((self.now_ms, run.run_id))
        if run.made >= run.strokes:
            self._end_run(RunOutcome.COMPLETED)
        else:
            run.next_ms = self.now_ms + run.interval_ms
            self.queue.append(self._progress(run.run_id, run.made, RunOutcome.IN_PROGRESS))
        if self.on_stroke is not None:
            self.on_stroke(self)

    # ------------------------------------------------------------ time

    def next_event_ms(self) -> int | None:
        times = [t for t in (self.run.next_ms if self.run else None, self.wake_at) if t is not None]
        return min(times, default=None)

    def step(self) -> bool:
        """Jump to the next event and run it (with everything it provokes). False if none."""
        self.pump()
        nxt = self.next_event_ms()
        if nxt is None:
            return False
        self.now_ms = max(self.now_ms, nxt)
        if self.run is not None and self.run.next_ms == nxt:
            self._stroke()
        else:
            self.wake_at = None
            self.queue.append(Time(time_ms=self.now_ms, reason=WakeReason.TIMER))
        self.pump()
        return True

    def advance_to(self, t_ms: int) -> None:
        """Run every event up to and including t_ms, then let the clock reach t_ms."""
        same, last = 0, -1
        while (nxt := self.next_event_ms()) is not None and nxt <= t_ms:
            same = same + 1 if nxt == last else 0
            last = nxt
            assert same < 1_000, f"the controller keeps waking at {nxt} ms"
            self.step()
        self.now_ms = max(self.now_ms, t_ms)

    def advance(self, ms: int) -> None:
        self.advance_to(self.now_ms + ms)

    def run_until(self, cond: Callable[[], bool], limit_ms: int) -> None:
        """Run events until cond() holds; fail if it does not by limit_ms (pump time)."""
        while not cond():
            nxt = self.next_event_ms()
            assert nxt is not None and nxt <= limit_ms, f"condition not met by {limit_ms} ms (now {self.now_ms})"
            self.step()

    # ------------------------------------------------------------ the host

    def frame(self, msg: Message, role: Role | None = Role.CLINICIAN, signer: FrameSigner | None = None):
        """(body, seq) of a host frame, signed by role's key (or the signer given)."""
        self._host_seq = (self._host_seq + 1) & 0xFFFF
        s = signer if signer is not None else (self._signers[role] if role is not None else None)
        return codec.encode_to_body(msg, self._host_seq, s), self._host_seq

    def relay(self, body: bytes, seq: int) -> Message:
        """Relay a host frame body; return the one reply the controller gave."""
        self.replies.pop(seq, None)
        self.send(HostRx(time_ms=self.now_ms, frame=body))
        got = self.replies.pop(seq, [])
        assert len(got) == 1, f"expected exactly one reply to seq {seq}, got {got}"
        return got[0]

    def relay_maybe(self, body: bytes, seq: int) -> Message | None:
        """Relay a host frame body; the reply, or None if the controller dropped it
        unanswered (a frame that failed authentication beyond its NAK budget, SR-055)."""
        self.replies.pop(seq, None)
        self.send(HostRx(time_ms=self.now_ms, frame=body))
        got = self.replies.pop(seq, [])
        assert len(got) <= 1, f"expected at most one reply to seq {seq}, got {got}"
        return got[0] if got else None

    def request(self, msg: Message, role: Role | None = Role.CLINICIAN) -> Message:
        return self.relay(*self.frame(msg, role))

    @property
    def last_id(self) -> int:
        """The last command id handed out by next_id()."""
        return self._command_id

    def next_id(self) -> int:
        """A fresh command id for a dosing or therapy command."""
        self._command_id += 1
        return self._command_id

    def events_of(self, cls: type[Message]) -> list[tuple[int, Message]]:
        return [(t, e) for t, e in self.events if type(e) is cls]
