"""Host-link client: open the pump's port, sign requests, match responses, collect events.

    with Client.from_state_dir(".thecal") as c:
        c.program(load_program("examples/morphine.toml", c.next_command_id()))
        c.start()
        ev = c.expect_event(lambda e: isinstance(e, AlarmRaised), sim_timeout_s=86_400, wall_timeout_s=30)

Counters: each request's auth counter is at least the wall clock in microseconds, so a
new client process always starts above anything an earlier one sent with the same key
(the pump rejects a counter that is not above the last it accepted, across power cycles).

Command ids: allocated by the client, unique per client, starting at a random 32-bit
value so two clients (or two runs of the CLI) do not share ids.

Never re-send a dosing command after a lost response: `command()` (and every typed
method of a command that carries an id) asks STATUS instead. If STATUS shows the
command's id as the last accepted, it returns `Confirmed`; if STATUS shows another id,
the pump never got the command and `NotAccepted` is raised (nothing changed; sending it
again as a new command is the caller's decision); if STATUS does not answer either,
`Uncertain` is raised. Read-only requests (status, info, log, prescription, ground
truth, fault switches) may be retried; commands and sim advance never are.

What the pump sends is checked when the client holds its key (SR-058): each answer must
carry a tag under the pump key (sim-control's: the sim key) that covers the tag of the
request it answers, and each event a tag under the pump key and a counter above the last
event's. A frame that fails is never acted on: the request waiting for it raises
Unauthentic, and so does reading the events at the place of a refused event.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import serial

from protocol import codec
from protocol.auth import AuthResult, FrameSigner, ResponseVerifier, wrap_key
from protocol.codes import AlarmId, Fault, Link, MessageFamily, MotorState, NakReason, Role
from protocol.framing import Frame, FrameDecoder
from protocol.keyfile import load_keys
from protocol.messages import (
    HOST_LINK_TYPES,
    LOG_PAGE_MAX,
    AlarmAck,
    AlarmAckAck,
    BolusRequest,
    BolusRequestAck,
    CatheterReplaced,
    CatheterReplacedAck,
    ClinicianBolus,
    ClinicianBolusAck,
    Hello,
    HelloAck,
    KeyUpdate,
    KeyUpdateAck,
    LogEntry,
    LogRead,
    LogReadAck,
    Message,
    Nak,
    Prime,
    PrimeAck,
    Program,
    ProgramAck,
    ReadPrescription,
    ReadPrescriptionAck,
    RefillBegin,
    RefillBeginAck,
    RefillComplete,
    RefillCompleteAck,
    SetClock,
    SetClockAck,
    SimAdvance,
    SimClearFault,
    SimClearFaultAck,
    SimGroundTruth,
    SimGroundTruthAck,
    SimInjectFault,
    SimInjectFaultAck,
    SimPowerCycle,
    SimRefill,
    SimRefillAck,
    SimReplaceCatheter,
    SimSetSpeed,
    Start,
    StartAck,
    Status,
    StatusAck,
    Stop,
    StopAck,
    Tone,
)
from protocol.schema import family_of
from tools.client_errors import (
    ClientError,
    Confirmed,
    EventTimeout,
    NoAnswer,
    NotAccepted,
    PortLost,
    Refused,
    Unauthentic,
    Uncertain,
)
from tools.hostport import open_port, port_of

DEFAULT_TIMEOUT_S = 5.0
ADVANCE_WALL_S_PER_DAY = 20.0  # wall time allowed per simulated day of SIM_ADVANCE, on top of the timeout
READ_RETRIES = 2  # extra attempts for read-only requests that went unanswered


_WHY = {
    AuthResult.NO_TRAILER: "it carries no auth trailer",
    AuthResult.UNKNOWN_KEY: "it is not signed with the key that must sign it",
    AuthResult.BAD_TAG: "its tag is wrong (forged, damaged, or a recorded answer to another request)",
    AuthResult.REPLAYED: "its counter is not above the last event's (a recorded event sent again)",
}


class WallClockSigner(FrameSigner):
    """A FrameSigner whose counter never falls below the wall clock in microseconds."""

    _pinned = False

    def reserve(self) -> int:
        """The counter the next frame will carry, fixed now (for a payload that depends on
        it: KEY_UPDATE's wrapped key)."""
        self.counter = max(self.counter, time.time_ns() // 1000)
        self._pinned = True
        return self.counter + 1

    def __call__(self, head: bytes) -> bytes:
        floor = time.time_ns() // 1000
        if self.counter < floor and not self._pinned:
            self.counter = floor
        self._pinned = False
        return super().__call__(head)


class Client:
    def __init__(
        self,
        port: str,
        keys: dict[Role, bytes],
        role: Role = Role.CLINICIAN,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        flush: bool = False,
    ) -> None:
        """Open `port`. `role` signs requests that do not say otherwise (sim-control is
        always signed with the sim key). flush=True discards what the port held before
        (answers and events meant for an earlier client)."""
        self.port_path = port
        self.role = role
        self.timeout_s = timeout_s
        self._signers = {r: WallClockSigner(r, k) for r, k in keys.items()}
        self._clinician_key = keys.get(Role.CLINICIAN)  # wraps a KEY_UPDATE's new key
        try:
            self.ser = open_port(port)
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortLost(f"cannot open {port}: {e}") from None
        if flush:
            try:
                self.ser.reset_input_buffer()
            except (serial.SerialException, OSError):
                pass
        self._rx = codec.MessageDecoder(HOST_LINK_TYPES)
        # SR-058: what each request sent (its seq) must be answered under: (key id, tag).
        self._verifier = ResponseVerifier(keys)
        self._tx = FrameDecoder(None)
        self._asked: dict[int, tuple[int, bytes | None]] = {}
        self._seq = int(time.time_ns() // 1000) & 0xFFFF
        self._command_id = secrets.randbelow(0xFFFF_0000) + 1
        self.events: deque[Message | Unauthentic] = deque(maxlen=10_000)
        self._responses: dict[int, Message | Unauthentic] = {}

    @classmethod
    def from_state_dir(
        cls, state_dir: str | Path, role: Role = Role.CLINICIAN, keys: str | Path | None = None, **kw
    ) -> Client:
        """Open the port the emulator in state_dir advertised, with its keys.json (or `keys`)."""
        d = Path(state_dir)
        port = port_of(d)
        keys_path = Path(keys) if keys is not None else d / "keys.json"
        try:
            key_map = load_keys(keys_path)
        except FileNotFoundError:
            raise NoAnswer(f"no keys at {keys_path}") from None
        return cls(port, key_map, role, **kw)

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ the wire

    def send_raw(self, data: bytes) -> None:
        # Whatever is sent, its answer must be bound to the tag it carried (a frame whose
        # header could not be read: none).
        for item in self._tx.feed(data):
            if item.msg_type is None:
                continue
            sim = family_of(item.msg_type) is MessageFamily.SIM_REQUEST
            auth = item.auth if type(item) is Frame else None
            self._asked[item.seq] = (Role.SIM if sim else Role.PUMP, auth.tag if auth is not None else None)
        try:
            self.ser.write(data)
            self.ser.flush()
        except (serial.SerialException, OSError) as e:
            raise PortLost(f"port {self.port_path} lost: {e}") from None

    def request(self, msg: Message, role: Role | None = None, timeout_s: float | None = None) -> Message:
        """Send one signed request; return its ACK, raise Refused on NAK, NoAnswer on silence."""
        seq = self._send(msg, role)
        reply = self._wait(lambda: self._responses.pop(seq, None), timeout_s or self.timeout_s)
        if isinstance(reply, Nak):
            raise Refused(reply)
        return reply

    def sim(self, msg: Message, timeout_s: float | None = None) -> Message:
        return self.request(msg, Role.SIM, timeout_s)

    def _send(self, msg: Message, role: Role | None) -> int:
        role = role or (Role.SIM if family_of(msg.TYPE) is MessageFamily.SIM_REQUEST else self.role)
        signer = self._signers.get(role)
        if signer is None:
            raise ClientError(f"no key for role {role.name.lower()}")
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        self._responses.pop(seq, None)  # a stale answer with this seq is not ours
        self.send_raw(codec.encode(msg, seq, signer))
        return seq

    def read(self, msg: Message, role: Role | None = None, timeout_s: float | None = None) -> Message:
        """A request that changes nothing: retried (a fresh frame each time) if unanswered."""
        for attempt in range(READ_RETRIES + 1):
            try:
                return self.request(msg, role, timeout_s)
            except PortLost:
                raise
            except NoAnswer:
                if attempt == READ_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def next_command_id(self) -> int:
        """A command id this client has not used (1..2**32-1)."""
        cid = self._command_id
        self._command_id = self._command_id % 0xFFFF_FFFF + 1
        return cid

    def command(self, msg: Message, role: Role | None = None, timeout_s: float | None = None) -> Message | Confirmed:
        """Send a command that carries a command_id, once. If its answer is lost, resolve
        the doubt with STATUS (never by sending it again): the late ACK if it came
        meanwhile, Confirmed if STATUS shows it accepted; NotAccepted or Uncertain raised
        otherwise. Refused on NAK."""
        seq = self._send(msg, role)
        timeout = timeout_s or self.timeout_s
        try:
            reply = self._wait(lambda: self._responses.pop(seq, None), timeout)
        except NoAnswer as lost:
            return self._resolve(msg, seq, role, lost)
        if isinstance(reply, Nak):
            raise Refused(reply)
        return reply

    def _resolve(self, msg: Message, seq: int, role: Role | None, lost: NoAnswer) -> Message | Confirmed:
        cid = msg.command_id
        name = type(msg).NAME
        ask = role if role in (Role.CLINICIAN, Role.PATIENT) else self.role
        try:
            st = self.read(Status(), ask)
        except (NoAnswer, Refused) as e:
            raise Uncertain(
                f"no answer to {name} (command id {cid}) ({lost}), and STATUS did not answer either ({e}): "
                "whether the pump accepted it is unknown; ask STATUS (last_command_id) before sending anything again",
                cid,
            ) from None
        late = self._responses.pop(seq, None)  # the ACK may have come after all, ahead of STATUS
        if late is not None:
            if isinstance(late, Nak):
                raise Refused(late)
            return late
        if st.last_command_id == cid:
            return Confirmed(msg, cid, st)
        raise NotAccepted(
            f"no answer to {name} (command id {cid}); STATUS shows the last accepted command is "
            f"{st.last_command_id}, so the pump did not accept it and nothing changed",
            cid,
            st,
        )

    def poll(self, wait_s: float = 0.0) -> None:
        """Read what has arrived (events, stray responses)."""
        deadline = time.monotonic() + wait_s
        while True:
            self._pump_once()
            if time.monotonic() >= deadline:
                return

    def _wait(self, get: Callable[[], Message | None], timeout_s: float) -> Message:
        deadline = time.monotonic() + timeout_s
        while True:
            got = get()
            if got is not None:
                if isinstance(got, Unauthentic):
                    raise got
                return got
            if time.monotonic() >= deadline:
                raise NoAnswer(f"no answer from {self.port_path} within {timeout_s:g} s")
            self._pump_once()

    def _pump_once(self, block: bool = True) -> None:
        try:
            if block:
                # Wait (up to the port's timeout) for the first byte only, then take what
                # has arrived: read(65536) would sit out the whole timeout on every call.
                data = self.ser.read(1)
                if data and (waiting := self.ser.in_waiting):
                    data += self.ser.read(waiting)
            else:
                waiting = self.ser.in_waiting
                data = self.ser.read(waiting) if waiting else b""
        except (serial.SerialException, OSError, TypeError) as e:
            raise PortLost(f"port {self.port_path} lost: {e}") from None
        for item in self._rx.feed(data):
            if isinstance(item, codec.Received):
                frame = item.frame
                if family_of(frame.msg_type) is MessageFamily.HOST_EVENT:
                    self.events.append(self._checked_event(item))
                elif not isinstance(self._responses.get(frame.seq), Unauthentic):
                    # A refused answer is not displaced by another with its seq that came
                    # in the same read: the caller hears that the link is being tampered with.
                    self._responses[frame.seq] = self._checked_answer(item)

    def _checked_answer(self, item: codec.Received) -> Message | Unauthentic:
        frame = item.frame
        key_id, tag = self._asked.get(frame.seq, (Role.PUMP, None))
        verdict = self._verifier.answer(frame, key_id, tag)
        if verdict is None or verdict is AuthResult.OK:
            return item.message
        return Unauthentic(
            f"the answer with seq {frame.seq} ({type(item.message).NAME}) failed authentication: "
            f"{_WHY[verdict]}. It is a spoofed or damaged answer and was not acted on; ask again "
            "(STATUS before any command), and if this repeats, someone else may be writing to the link"
        )

    def _checked_event(self, item: codec.Received) -> Message | Unauthentic:
        verdict = self._verifier.event(item.frame)
        if verdict is None or verdict is AuthResult.OK:
            return item.message
        return Unauthentic(
            f"an event ({type(item.message).NAME}) failed authentication: {_WHY[verdict]}. "
            "It is a spoofed, damaged or replayed event and was not acted on"
        )

    # ------------------------------------------------------------ events

    def iter_events(self, wait_s: float = 0.0) -> Iterator[Message]:
        """Unsolicited events, oldest first, each taken from `events` as it is yielded:
        first those already received, then what arrives within wait_s (wall time)."""
        deadline = time.monotonic() + wait_s
        while True:
            while self.events:
                ev = self.events.popleft()
                if isinstance(ev, Unauthentic):
                    raise ev
                yield ev
            if time.monotonic() >= deadline:
                return
            self._pump_once()

    def _take_event(self, predicate: Callable[[Message], bool]) -> Message | None:
        for i, ev in enumerate(self.events):
            if isinstance(ev, Unauthentic):
                del self.events[i]
                raise ev
            if predicate(ev):
                del self.events[i]
                return ev
        return None

    def expect_event(
        self,
        predicate: Callable[[Message], bool],
        sim_timeout_s: float,
        wall_timeout_s: float = 60.0,
        step_s: float = 600.0,
    ) -> Message:
        """The first event (received already, or to come) for which predicate is true,
        taken from `events`. Waits are measured in simulated time: in lockstep the
        simulator is advanced step_s at a time (never beyond sim_timeout_s from now) and
        the events each step produced are checked; in realtime the pump's own time is
        watched. EventTimeout when sim_timeout_s of simulated time passed with no match;
        NoAnswer when wall_timeout_s of wall time passed first (a stalled simulator)."""
        wall_deadline = time.monotonic() + wall_timeout_s
        self.poll()
        if (ev := self._take_event(predicate)) is not None:
            return ev
        start_ms = self.ground_truth(timeout_s=self._left(wall_deadline)).time_ms
        end_ms = start_ms + round(sim_timeout_s * 1000)
        now_ms = start_ms
        step_ms = max(1, round(step_s * 1000))
        realtime = False
        while now_ms < end_ms:
            left = self._left(wall_deadline)
            if realtime:
                self.poll(min(0.1, left))
                now_ms = self.ground_truth(timeout_s=left).time_ms
            else:
                try:
                    now_ms = self.sim(SimAdvance(duration_ms=min(step_ms, end_ms - now_ms)), timeout_s=left).time_ms
                except Refused as e:
                    if e.reason is not NakReason.WRONG_STATE:
                        raise
                    realtime = True  # the emulator runs in realtime: watch its clock instead
                    continue
                # Events of the step came before its answer (one ordered stream): take
                # what is there without waiting for more.
                self._pump_once(block=False)
            if (ev := self._take_event(predicate)) is not None:
                return ev
        raise EventTimeout(f"no matching event in {sim_timeout_s:g} s of simulated time")

    @staticmethod
    def _left(wall_deadline: float) -> float:
        left = wall_deadline - time.monotonic()
        if left <= 0:
            raise NoAnswer("wall-clock timeout waiting for an event (is the simulator stalled?)")
        return left

    # ------------------------------------------------------------ host requests

    def hello(self, role: Role | None = None) -> HelloAck:
        """Device information (serial, firmware and protocol version, capacity, stroke)."""
        return self.read(Hello(), role)

    info = hello

    def status(self, role: Role | None = None) -> StatusAck:
        return self.read(Status(), role)

    def read_prescription(self) -> ReadPrescriptionAck:
        return self.read(ReadPrescription())

    def read_log_page(self, from_seq: int = 0, max_entries: int = LOG_PAGE_MAX) -> LogReadAck:
        return self.read(LogRead(from_seq=from_seq, max_entries=max_entries))

    def read_log(self, from_seq: int = 0, limit: int | None = None) -> list[LogEntry]:
        """Event-log entries from from_seq on, oldest first (all of them, or the first
        `limit`), page by page."""
        out: list[LogEntry] = []
        seq = from_seq
        while limit is None or len(out) < limit:
            page = LOG_PAGE_MAX if limit is None else min(LOG_PAGE_MAX, limit - len(out))
            ack = self.read_log_page(seq, page)
            out.extend(ack.entries)
            if not ack.entries or ack.entries[-1].seq + 1 >= ack.next_seq:
                break
            seq = ack.entries[-1].seq + 1
        return out

    def program(self, prescription: Program, role: Role | None = None) -> ProgramAck | Confirmed:
        """Send a PROGRAM (its command_id as given; 0 gets the next of this client's)."""
        if prescription.command_id == 0:
            from dataclasses import replace

            prescription = replace(prescription, command_id=self.next_command_id())
        return self.command(prescription, role)

    def start(self, role: Role | None = None) -> StartAck | Confirmed:
        return self.command(Start(command_id=self.next_command_id()), role)

    def stop(self, role: Role | None = None) -> StopAck | Confirmed:
        return self.command(Stop(command_id=self.next_command_id()), role)

    def bolus(self, role: Role = Role.PATIENT) -> BolusRequestAck | Confirmed:
        """The patient presses the PTM button (signed with the patient key by default)."""
        return self.command(BolusRequest(command_id=self.next_command_id()), role)

    def clinician_bolus(self, dose_ng: int, duration_s: int, role: Role | None = None) -> ClinicianBolusAck | Confirmed:
        return self.command(
            ClinicianBolus(command_id=self.next_command_id(), dose_ng=dose_ng, duration_s=duration_s), role
        )

    def prime(self, volume_nl: int, role: Role | None = None) -> PrimeAck | Confirmed:
        return self.command(Prime(command_id=self.next_command_id(), volume_nl=volume_nl), role)

    def catheter_replaced(self, role: Role | None = None) -> CatheterReplacedAck | Confirmed:
        """Declare the catheter new and empty (implant or revision), of the programmed volume."""
        return self.command(CatheterReplaced(command_id=self.next_command_id()), role)

    def refill_begin(self, role: Role | None = None) -> RefillBeginAck | Confirmed:
        return self.command(RefillBegin(command_id=self.next_command_id()), role)

    def refill_complete(
        self, withdrawn_nl: int, added_nl: int, drug: str, concentration_ng_per_ml: int, role: Role | None = None
    ) -> RefillCompleteAck | Confirmed:
        return self.command(
            RefillComplete(
                command_id=self.next_command_id(),
                withdrawn_nl=withdrawn_nl,
                added_nl=added_nl,
                drug=drug,
                concentration_ng_per_ml=concentration_ng_per_ml,
            ),
            role,
        )

    def update_key(self, role: Role, new_key: bytes | None) -> KeyUpdateAck | Confirmed:
        """Replace `role`'s key with new_key, or revoke it (None), signed as the clinician
        (SR-059). The caller keeps the new key (keys.json) once this returns."""
        signer = self._signers.get(Role.CLINICIAN)
        if signer is None or self._clinician_key is None:
            raise ClientError("a key update is signed with the clinician key, and this client has none")
        counter = signer.reserve()
        wrapped = b"" if new_key is None else wrap_key(self._clinician_key, role, counter, new_key)
        return self.command(
            KeyUpdate(command_id=self.next_command_id(), role=role, wrapped_key=wrapped), Role.CLINICIAN
        )

    def ack_alarm(self, alarm: AlarmId, role: Role | None = None) -> AlarmAckAck:
        """Acknowledge (silence) an alarm. Changes only the alarm's acknowledged flag, so
        sent once like a command (not retried)."""
        return self.request(AlarmAck(alarm=alarm), role)

    def set_clock(self, clock_s: int, role: Role | None = None) -> SetClockAck | Confirmed:
        """Set the local wall clock: seconds since 1970-01-01T00:00 local."""
        return self.command(SetClock(command_id=self.next_command_id(), clock_s=clock_s), role)

    # ------------------------------------------------------------ sim-control

    def advance(self, duration_ms: int, timeout_s: float | None = None) -> int:
        """Lockstep: move simulated time on; returns the pump time now (ms). Never retried."""
        if timeout_s is None:
            timeout_s = self.timeout_s + ADVANCE_WALL_S_PER_DAY * duration_ms / 86_400_000
        return self.sim(SimAdvance(duration_ms=duration_ms), timeout_s).time_ms

    def set_speed(self, speed: float) -> int:
        """0 = lockstep, else realtime at this factor; returns speed x 1000 now."""
        return self.read(SimSetSpeed(speed_milli=round(speed * 1000)), Role.SIM).speed_milli

    def inject_fault(
        self, fault: Fault, value: int = 0, link: Link = Link.NONE, rate_ppm: int = 0, seed: int = 0
    ) -> SimInjectFaultAck:
        return self.read(SimInjectFault(fault=fault, link=link, value=value, rate_ppm=rate_ppm, seed=seed), Role.SIM)

    def clear_fault(self, fault: Fault) -> SimClearFaultAck:
        return self.read(SimClearFault(fault=fault), Role.SIM)

    def ground_truth(self, tones_from: int = 0, timeout_s: float | None = None) -> SimGroundTruthAck:
        return self.read(SimGroundTruth(tones_from=tones_from), Role.SIM, timeout_s)

    def tones(self, tones_from: int = 0) -> list[Tone]:
        """Every tone the beeper sounded from index tones_from on (page by page)."""
        out: list[Tone] = []
        while True:
            gt = self.ground_truth(tones_from + len(out))
            out.extend(gt.tones)
            if not gt.tones or tones_from + len(out) >= gt.tones_total:
                return out

    def motor_running(self) -> bool:
        return self.ground_truth().motor is MotorState.RUNNING

    def power_cycle(self, off_ms: int = 1_000) -> int:
        """Remove the controller's power for off_ms, restore it; returns the boot count."""
        return self.sim(SimPowerCycle(off_ms=off_ms), self.timeout_s + 10.0).boot_count

    def replace_catheter(self, volume_nl: int = 0) -> int:
        """Revision surgery in the emulator: an empty catheter of volume_nl (0: the pump
        model's) replaces the old one. Returns its volume. The firmware is not told."""
        return self.sim(SimReplaceCatheter(volume_nl=volume_nl)).volume_nl

    def sim_refill(
        self, withdraw_nl: int, add_nl: int, concentration_ng_per_ml: int, into_pocket: bool = False
    ) -> SimRefillAck:
        """The physical half of a refill (never retried: it moves fluid)."""
        return self.sim(
            SimRefill(
                withdraw_nl=withdraw_nl,
                add_nl=add_nl,
                concentration_ng_per_ml=concentration_ng_per_ml,
                into_pocket=into_pocket,
            )
        )
