"""The rig: pump hardware, its controller and the host, joined by frames.

Rig moves pump-link frames between PumpHardware and a controller port (in-process or a
pty), relays host-link frames to the controller inside HOST_RX / HOST_TX, answers
sim-control itself, applies injected link noise, and captures every frame. It does not
own the host port or the process: emulator/server.py does, and hands it bytes.

Lockstep: time moves only in advance(); before each step the controller must have
reported idle (SLEEP_UNTIL). A controller that does not within `idle_timeout_s` of wall
time is treated as silent: the hardware goes on, and its watchdog stops the motor. It is
still listened to (without waiting), so a controller that comes back is heard again.
While noise is injected on the pump link, a frame may be lost and never answered: the
rig then waits only briefly for the idle report and does not count the controller lost.

Durability: with a journal (emulator/journal.py) the physical state is checkpointed
before anything leaves the hardware (to the controller or to the host) and at the end of
each advance, so what anyone was told the hardware did survives a kill of the process.
While the emulator cannot write its state (`storage_fault`) every host request is
refused as BUSY, naming the condition, and the hardware refuses new motor runs.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from typing import Any, Protocol

from protocol import codec
from protocol.auth import AuthResult, FrameSigner, FrameVerifier
from protocol.codes import Link, NakReason, ResetCause, Role
from protocol.errors import DecodeError
from protocol.framing import (
    OLDER_VERSIONS,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    frame_body,
    in_version,
    wrap_body,
)
from protocol.messages import (
    HOST_MAX_BODY,
    PUMP_LINK_TYPES,
    REGISTRY,
    HostRx,
    Message,
)
from protocol.schema import FAMILY_RANGES, MessageFamily

from . import simcontrol
from .capture import Capture, Direction
from .capture import Link as CapLink
from .journal import Journal
from .model import PumpModel
from .noise import NoisyChannel
from .pump import PumpHardware
from .simcontrol import SimRefused

# While noise is injected on the pump link a frame may be lost and never answered: the
# rig then waits this long for an idle report instead of declaring the controller lost.
NOISY_IDLE_WAIT_S = 0.05
SIM_RANGE = next((lo, hi) for lo, hi, fam in FAMILY_RANGES if fam is MessageFamily.SIM_REQUEST)
EVENT_RANGE = next((lo, hi) for lo, hi, fam in FAMILY_RANGES if fam is MessageFamily.HOST_EVENT)
ASKED_MAX = 1024  # relayed requests remembered for routing a late answer (oldest forgotten)


class Controller(Protocol):
    """An in-process controller: pump-link bytes in, bytes out, ending idle."""

    def feed(self, data: bytes) -> bytes: ...


class ControllerPort(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, timeout_s: float) -> bytes | None:
        """Bytes from the controller (b"" on timeout), None when it is gone."""
        ...


class InProcessPort:
    """The default: the controller runs in this process; bytes still go through the codec."""

    def __init__(self, factory: Callable[[], Controller]) -> None:
        self.factory = factory
        self.controller = factory()
        self._pending = b""

    def restart(self) -> None:
        """Power cycle: a fresh controller object that must recover from its NVM alone."""
        self.controller = self.factory()
        self._pending = b""

    def write(self, data: bytes) -> None:
        self._pending += self.controller.feed(data)

    def read(self, timeout_s: float) -> bytes | None:
        data, self._pending = self._pending, b""
        return data


class PtyPort:
    """The pump link on a pty master (split mode); the controller holds the slave."""

    WRITE_WAIT_S = 1.0  # how long a full port may take to drain before bytes are dropped

    def __init__(self, master_fd: int) -> None:
        self.fd = master_fd
        self.stalled = False  # the last write found the port full and nobody draining it
        self.dropped = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
                view = view[n:]
                self.stalled = False
            except BlockingIOError:
                # Nobody is reading: the bytes are lost, as on a dead line. Wait for room
                # once; while the port stays full, drop at once (a dead controller's port
                # fills up, and waiting on every write would stall the emulator).
                if self.stalled or not select.select([], [self.fd], [], self.WRITE_WAIT_S)[1]:
                    self.stalled = True
                    self.dropped += len(view)
                    return
            except OSError:
                return

    def read(self, timeout_s: float) -> bytes | None:
        if not select.select([self.fd], [], [], timeout_s)[0]:
            return b""
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return b""
        except OSError:
            return None


class Rig:
    def __init__(
        self,
        model: PumpModel,
        port: ControllerPort,
        keys: dict[Role, bytes],
        state: dict[str, Any] | None = None,
        seed: int = 0,
        capture: Capture | None = None,
        host_write: Callable[[bytes], None] | None = None,
        idle_timeout_s: float = 2.0,
        wall_ms: Callable[[], int] | None = None,
        host_send: Callable[[bytes, int | None], None] | None = None,
        journal: Journal | None = None,
    ) -> None:
        """host_write takes every byte for the host (one client); host_send, when given,
        takes them with their destination instead: the client that asked (the `client`
        given to host_bytes), or None for every client (events, answers nobody owns)."""
        state = state or {}
        self.hw = PumpHardware(model, state, seed, on_host_tx=self._from_controller_to_host, reset_hook=self._reset)
        self.port = port
        self.capture = capture or Capture(None)
        self.host_write = host_write or (lambda data: None)
        self.host_send = host_send or (lambda data, client: self.host_write(data))
        self.idle_timeout_s = idle_timeout_s
        self.wall_ms = wall_ms or (lambda: 0)
        self.pump_rx = codec.MessageDecoder(PUMP_LINK_TYPES)
        # One decoder per host client (their bytes must not mix); any type: the controller
        # judges what it does not know.
        self._host_rx: dict[int, FrameDecoder] = {}
        self._serving: tuple[int, int] | None = None  # (client, seq) of the frame being handled
        self._asked: dict[int, int] = {}  # seq of a relayed request -> its client, until answered
        self.sim_auth = FrameVerifier({Role.SIM: keys[Role.SIM]}, {Role.SIM: state.get("sim_counter", 0)})
        # The emulator's own answers are signed too (SR-058): sim-control's under the sim
        # key (only the harness holds it, and only the emulator answers it), the NAKs it
        # gives host requests itself (storage fault, too long to relay) under the pump
        # key, as the pump's. Their counters live in RAM: an answer is bound to its
        # request's tag, which is what makes it fresh, and hosts check only events'.
        self._answer_signers = {r: FrameSigner(r, keys[r]) for r in (Role.SIM, Role.PUMP) if r in keys}
        self._serving_tag: bytes | None = None  # the auth tag of the frame being handled
        self.noise = {(link, way): NoisyChannel() for link in (Link.HOST, Link.PUMP) for way in ("in", "out")}
        self.speed_milli = 0  # 0 = lockstep
        self.responsive = True  # False once the controller has failed to report idle
        self._pump_seq = 0
        self.host_naks = 0
        self.journal = journal
        self._checkpointed: tuple | None = None  # what the last checkpoint was taken at
        self._storage_fault: str | None = None

    # ------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {**self.hw.to_state(), "sim_counter": self.sim_auth.last_counters[Role.SIM]}

    @property
    def now_ms(self) -> int:
        return self.hw.now_ms

    def checkpoint(self, force: bool = False) -> None:
        """Commit the physical state to the journal, unless nothing has moved since the
        last commit. Called before anything leaves the hardware, so no controller or host
        is ever told of a state that a kill of this process could take back. The test is
        cheap and complete: between two sim-control frames (which change the sim counter)
        the state changes only with time, a stroke, a tone, a power-on or the motor's state."""
        journal = self.journal
        if journal is None:
            return
        hw = self.hw
        key = (
            hw.sched.now_ms,
            hw.odometer,
            hw.beeper.total,
            hw.boot_count,
            hw.motor_state,
            self.sim_auth.last_counters[Role.SIM],
        )
        if key != self._checkpointed or force:
            self._checkpointed = key
            journal.commit_hardware(hw, key[5])

    @property
    def storage_fault(self) -> str | None:
        """Why the emulator cannot write its state now (None: it can)."""
        return self._storage_fault

    @storage_fault.setter
    def storage_fault(self, condition: str | None) -> None:
        # The hardware refuses new motor runs while it holds: a run in progress ends at
        # its bound, and no delivery happens that the state on disk could not follow.
        self._storage_fault = self.hw.runs_held = condition

    # ------------------------------------------------------------ the pump link

    def boot(self, cause: ResetCause | None = None) -> None:
        """In-process controller: power it on. (A split controller announces itself.)"""
        self.hw.power_on_controller(cause or self.hw.pending_cause)
        self.hw.pending_cause = ResetCause.PROCESS_RESTART
        self.exchange()

    def _reset(self, cause: ResetCause) -> None:
        self.restart_port()
        self.hw.power_on_controller(cause)

    def exchange(self) -> None:
        """Deliver what the hardware has for the controller and wait until it is idle."""
        hw = self.hw
        noisy = self.noise[(Link.PUMP, "out")].active or self.noise[(Link.PUMP, "in")].active
        while True:
            if hw.outbox:
                # What the controller said since (a late answer after a lost frame or a
                # missed idle report) is heard first, so that its answer to these
                # messages is not taken for the answer to earlier ones.
                late = self.port.read(0)
                if late:
                    self._from_controller(late)
                msgs, hw.outbox = hw.outbox, []
                wire = b"".join(self._encode_pump(m) for m in msgs)
                wire = self.noise[(Link.PUMP, "out")].apply(wire, hw.now_ms)
                if wire:  # (LINK_DELAY may have held all of it back)
                    self.checkpoint()
                    self.port.write(wire)
                    # Busy from the moment it is written: a SLEEP_UNTIL handled before
                    # these messages went out (same batch) is not the answer to them.
                    hw.controller_busy = True
            if not hw.controller_busy:
                return
            if not self.responsive:
                wait = 0.0  # lost: listen without waiting, so a controller that is back is heard
            elif noisy:
                wait = min(self.idle_timeout_s, NOISY_IDLE_WAIT_S)  # a lost frame gets no answer
            else:
                wait = self.idle_timeout_s
            data = self.port.read(wait)
            if data:
                self._from_controller(data)  # any intact frame makes it responsive again
                continue
            if self.responsive and (data is None or not noisy):
                self.responsive = False
                hw.controller_lost("link closed" if data is None else "no idle report in time")
            hw.controller_busy = False
            return

    def pump_bytes(self, data: bytes) -> None:
        """Bytes the controller sent unasked (split mode: a process announcing itself)."""
        self._from_controller(data)
        self.exchange()

    def _encode_pump(self, msg: Message) -> bytes:
        self._pump_seq = (self._pump_seq + 1) & 0xFFFF
        body_wire = codec.encode(msg, self._pump_seq)
        if self.capture.path is not None:
            self.capture.frame(
                CapLink.PUMP, Direction.PUMP_TO_CONTROLLER, self.hw.now_ms, codec.encode_to_body(msg, self._pump_seq)
            )
        return body_wire

    def _from_controller(self, data: bytes, noisy: bool = True) -> None:
        if noisy:  # bytes released after a LINK_DELAY have had their noise already
            data = self.noise[(Link.PUMP, "in")].apply(data, self.hw.now_ms)
        for item in self.pump_rx.feed(data):
            if isinstance(item, codec.Received):
                self.responsive = True
                if self.capture.path is not None:
                    self.capture.frame(
                        CapLink.PUMP, Direction.CONTROLLER_TO_PUMP, self.hw.now_ms, frame_body(item.frame)
                    )
                self.hw.handle(item.message)

    # ------------------------------------------------------------ time

    def advance(self, duration_ms: int) -> int:
        """Lockstep: run every event up to now + duration_ms, the controller idle between."""
        self.exchange()
        target = self.hw.now_ms + duration_ms
        while True:
            due = self._next_noise_release()
            hw_due = self.hw.sched.next_due_ms()
            if due is not None and due <= target and (hw_due is None or due <= hw_due):
                self.hw.advance_idle(due)
                self._release_noise()
                self.exchange()
                continue
            if not self.hw.run_due(target):
                break
            self.exchange()
        self.hw.advance_idle(target)
        self._release_noise()
        self.exchange()
        self.checkpoint()
        return self.hw.now_ms

    def run_until(self, sim_ms: int) -> None:
        """Realtime: run the events due by sim_ms (the server calls this as wall time passes)."""
        while self.hw.run_due(sim_ms):
            self.exchange()
        self.hw.advance_idle(sim_ms)
        self._release_noise()
        self.exchange()
        self.checkpoint()

    def next_due_ms(self) -> int | None:
        times = [t for t in (self.hw.sched.next_due_ms(), self._next_noise_release()) if t is not None]
        return min(times, default=None)

    def _next_noise_release(self) -> int | None:
        ch = self.noise[(Link.PUMP, "out")], self.noise[(Link.PUMP, "in")]
        return min((t for c in ch if (t := c.next_release_ms()) is not None), default=None)

    def _release_noise(self) -> None:
        out = self.noise[(Link.PUMP, "out")].release(self.hw.now_ms)
        if out:
            self.checkpoint()
            self.port.write(out)
            self.hw.controller_busy = True  # it may answer what was held back
        back = self.noise[(Link.PUMP, "in")].release(self.hw.now_ms)
        if back:
            self._from_controller(back, noisy=False)

    # ------------------------------------------------------------ the host link

    def host_bytes(self, data: bytes, client: int = 0, noisy: bool = True) -> None:
        """Bytes from a host client (0: the pty)."""
        if noisy:  # bytes released after a LINK_DELAY have had their noise already
            ch = self.noise[(Link.HOST, "in")]
            if ch.active:
                for owner, late in ch.release_tagged(self.wall_ms()):
                    self._host_frames(late, owner)  # type: ignore[arg-type]
                data = ch.apply(data, self.wall_ms(), client)
        self._host_frames(data, client)

    def forget_client(self, client: int) -> None:
        """A host client went away: its half-received frame and its open questions go."""
        self._host_rx.pop(client, None)
        for seq in [s for s, c in self._asked.items() if c == client]:
            del self._asked[seq]

    def _host_frames(self, data: bytes, client: int) -> None:
        rx = self._host_rx.get(client)
        if rx is None:
            rx = self._host_rx[client] = FrameDecoder(None)
        for item in rx.feed(data):
            if type(item) is FrameError:
                if item.kind is FrameErrorKind.UNKNOWN_VERSION and item.version in OLDER_VERSIONS:
                    # A host of an older version: told which one this pump speaks, in a
                    # frame of its own version (the header and the NAK read the same;
                    # bound to no tag: a trailer of another version is not read).
                    self._serving = (client, item.seq)
                    self._serving_tag = None
                    try:
                        detail = (
                            f"protocol version {item.version} is not spoken here: this pump speaks {PROTOCOL_VERSION}"
                        )
                        self._nak(item.msg_type, item.seq, NakReason.UNSUPPORTED_VERSION, "", detail, item.version)
                    finally:
                        self._serving = None
                    continue
                if item.kind is FrameErrorKind.BAD_LENGTH and item.msg_type is not None:
                    # Intact but malformed: its header is trustworthy, so it gets its NAK
                    # (bound to no tag: where a trailer would be cannot be trusted).
                    self._serving = (client, item.seq)
                    self._serving_tag = None
                    try:
                        self._nak(
                            item.msg_type, item.seq, NakReason.BAD_LENGTH, "", "frame length does not match header"
                        )
                    finally:
                        self._serving = None
                continue
            self._serving = (client, item.seq)
            self._serving_tag = item.auth.tag if item.auth is not None else None
            try:
                self._host_frame(item, client)
            finally:
                self._serving = None

    def _host_frame(self, frame: Frame, client: int) -> None:
        if self.capture.path is not None:
            self.capture.frame(CapLink.HOST, Direction.HOST_TO_PUMP, self.hw.now_ms, frame_body(frame))
        if self._storage_fault is not None:  # the one place: every request, sim-control too
            self._nak(frame.msg_type, frame.seq, NakReason.BUSY, "", f"storage fault: {self._storage_fault}")
            return
        if SIM_RANGE[0] <= frame.msg_type <= SIM_RANGE[1]:
            self._sim(frame)  # answered here, never relayed
        elif self.hw.controller_powered:
            body = frame_body(frame)
            if len(body) > HOST_MAX_BODY:
                # Intact but too long for a HOST_RX relay: the pump cannot pass it on.
                self._nak(frame.msg_type, frame.seq, NakReason.BAD_LENGTH, "", "frame too long to relay")
                return
            # An answer that comes later (a delayed link, a slow controller) still finds
            # its way back to this client by its seq.
            self._asked.pop(frame.seq, None)
            self._asked[frame.seq] = client
            if len(self._asked) > ASKED_MAX:
                del self._asked[next(iter(self._asked))]
            self.hw._send(HostRx(time_ms=self.hw.now_ms, frame=body))
            self.exchange()

    def next_host_release_wall_ms(self) -> int | None:
        """Wall-clock ms when delayed host-link bytes fall due (the server waits for it)."""
        ch = self.noise[(Link.HOST, "out")], self.noise[(Link.HOST, "in")]
        return min((t for c in ch if (t := c.next_release_ms()) is not None), default=None)

    def release_host_noise(self) -> None:
        now = self.wall_ms()
        for dest, late in self.noise[(Link.HOST, "out")].release_tagged(now):
            self.host_send(late, dest)  # type: ignore[arg-type]
        for owner, back in self.noise[(Link.HOST, "in")].release_tagged(now):
            self._host_frames(back, owner)  # type: ignore[arg-type]

    def _from_controller_to_host(self, body: bytes) -> None:
        self.checkpoint()  # the host is told nothing a kill could take back
        if self.capture.path is not None:
            self.capture.frame(CapLink.HOST, Direction.PUMP_TO_HOST, self.hw.now_ms, body)
        dest = self._destination(body)
        ch = self.noise[(Link.HOST, "out")]
        if not ch.active:
            self.host_send(wrap_body(body), dest)
            return
        now = self.wall_ms()
        for owner, late in ch.release_tagged(now):
            self.host_send(late, owner)  # type: ignore[arg-type]
        wire = ch.apply(wrap_body(body), now, dest)
        if wire:
            self.host_send(wire, dest)

    def _destination(self, body: bytes) -> int | None:
        """Whose this frame from the pump is: an answer goes to the client that asked (the
        frame being handled, else the one that sent a request with this seq); an event,
        or an answer nobody is waiting for, to every client."""
        msg_type, seq = body[1], body[3] | body[4] << 8
        if EVENT_RANGE[0] <= msg_type <= EVENT_RANGE[1]:
            return None
        serving = self._serving
        if serving is not None and serving[1] == seq:
            return serving[0]
        client = self._asked.pop(seq, None)
        if client is not None:
            return client
        return serving[0] if serving is not None else None

    def _reply(self, msg: Message, seq: int, request_type: int, version: int = PROTOCOL_VERSION) -> None:
        """An answer made here to the request being handled, bound to its tag (SR-058); in
        the request's own protocol version when that is an older one (its NAK)."""
        role = Role.SIM if SIM_RANGE[0] <= request_type <= SIM_RANGE[1] else Role.PUMP
        signer = self._answer_signers.get(role)
        body = codec.encode_to_body(msg, seq, signer.bound(self._serving_tag) if signer is not None else None)
        self._from_controller_to_host(body if version == PROTOCOL_VERSION else in_version(body, version))

    def _nak(
        self, request_type: int, seq: int, reason: NakReason, field: str, detail: str, version: int = PROTOCOL_VERSION
    ) -> None:
        self.host_naks += 1
        self._reply(codec.nak_for(request_type, reason, field, detail), seq, request_type, version)

    # ------------------------------------------------------------ sim-control

    def _sim(self, frame: Frame) -> None:
        t, seq = frame.msg_type, frame.seq
        cls = REGISTRY.get(t)
        if cls is None:
            self._nak(t, seq, NakReason.UNKNOWN_TYPE, "", f"no sim-control message 0x{t:02X}")
            return
        verdict = self.sim_auth.check(frame)
        if not verdict.ok:
            if verdict.result is AuthResult.REPLAYED:
                self._nak(t, seq, NakReason.REPLAYED, "", "counter not above the last accepted")
            elif verdict.result is AuthResult.UNKNOWN_KEY and frame.auth is not None and frame.auth.key_id in (1, 2):
                self._nak(t, seq, NakReason.NOT_PERMITTED, "", "sim-control needs the sim key")
            else:
                self._nak(t, seq, NakReason.AUTH_FAILED, "", f"authentication failed ({verdict.result.value})")
            return
        try:
            msg = codec.decode(frame)
        except DecodeError as e:
            self._nak(t, seq, e.reason, e.field or "", e.detail)
            return
        try:
            reply = self.sim_handle(msg)
        except SimRefused as e:
            self._nak(t, seq, e.reason, e.field, str(e))
            return
        self._reply(reply, seq, t)

    def sim_handle(self, msg: Message) -> Message:
        """A decoded sim-control request, answered here (emulator/simcontrol.py); raises
        SimRefused with the NAK's reason when it is refused."""
        return simcontrol.handle(self, msg)

    def restart_port(self) -> None:
        """A power cycle: an in-process controller starts afresh over its NVM (a split
        controller is restarted by its own process, or not at all)."""
        if isinstance(self.port, InProcessPort):
            self.port.restart()
