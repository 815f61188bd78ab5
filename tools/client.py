"""Host-link client: open the pump's port, sign requests, match responses, collect events.

Counters: each request's auth counter is at least the wall clock in microseconds, so a
new client process always starts above anything an earlier one sent with the same key
(the pump rejects a counter that is not above the last it accepted, across power cycles).

Never re-send a dosing command after a lost response: ask STATUS for last_command_id.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import serial

from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import MessageFamily, NakReason, Role
from protocol.messages import HOST_LINK_TYPES, Message, Nak
from protocol.schema import family_of

DEFAULT_TIMEOUT_S = 5.0


class ClientError(Exception):
    """Base of the client's errors."""


class NoAnswer(ClientError):
    """No response within the timeout, or the port went away (CLI exit status 4)."""


class Refused(ClientError):
    """The pump answered NAK (CLI exit status 3)."""

    def __init__(self, nak: Nak) -> None:
        self.nak = nak
        self.reason: NakReason = nak.reason
        self.field = nak.field
        super().__init__(f"{nak.reason.name}" + (f" ({nak.field})" if nak.field else "") + f": {nak.detail}")


class WallClockSigner(FrameSigner):
    """A FrameSigner whose counter never falls below the wall clock in microseconds."""

    def __call__(self, head: bytes) -> bytes:
        floor = time.time_ns() // 1000
        if self.counter < floor:
            self.counter = floor
        return super().__call__(head)


def load_keys(path: str | Path) -> dict[Role, bytes]:
    import json

    raw = json.loads(Path(path).read_text())
    names = {"clinician": Role.CLINICIAN, "patient": Role.PATIENT, "sim": Role.SIM}
    return {names[k]: bytes.fromhex(v) for k, v in raw.items() if k in names}


class Client:
    def __init__(
        self,
        port: str,
        keys: dict[Role, bytes],
        role: Role = Role.CLINICIAN,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.port_path = port
        self.role = role
        self.timeout_s = timeout_s
        self._signers = {r: WallClockSigner(r, k) for r, k in keys.items()}
        try:
            self.ser = serial.Serial(port, timeout=0.05)
        except serial.SerialException as e:
            raise NoAnswer(f"cannot open {port}: {e}") from None
        self._rx = codec.MessageDecoder(HOST_LINK_TYPES)
        self._seq = int(time.time_ns() // 1000) & 0xFFFF
        self.events: deque[Message] = deque(maxlen=10_000)
        self._responses: dict[int, Message] = {}

    @classmethod
    def from_state_dir(cls, state_dir: str | Path, role: Role = Role.CLINICIAN, **kw) -> Client:
        d = Path(state_dir)
        try:
            port = (d / "port").read_text().strip()
        except FileNotFoundError:
            raise NoAnswer(f"no emulator has written {d / 'port'}") from None
        return cls(port, load_keys(d / "keys.json"), role, **kw)

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()

    def request(self, msg: Message, role: Role | None = None, timeout_s: float | None = None) -> Message:
        """Send one signed request; return its ACK, raise Refused on NAK, NoAnswer on silence."""
        role = role or (Role.SIM if family_of(msg.TYPE) is MessageFamily.SIM_REQUEST else self.role)
        signer = self._signers.get(role)
        if signer is None:
            raise ClientError(f"no key for role {role.name.lower()}")
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        self.send_raw(codec.encode(msg, seq, signer))
        reply = self._wait(lambda: self._responses.pop(seq, None), timeout_s or self.timeout_s)
        if isinstance(reply, Nak):
            raise Refused(reply)
        return reply

    def sim(self, msg: Message, timeout_s: float | None = None) -> Message:
        return self.request(msg, Role.SIM, timeout_s)

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
                return got
            if time.monotonic() >= deadline:
                raise NoAnswer(f"no answer from {self.port_path} within {timeout_s:g} s")
            self._pump_once()

    def _pump_once(self) -> None:
        try:
            # Wait (up to the port's timeout) for the first byte only, then take what has
            # arrived: read(65536) would sit out the whole timeout on every call.
            data = self.ser.read(1)
            if data and (waiting := self.ser.in_waiting):
                data += self.ser.read(waiting)
        except serial.SerialException as e:
            raise NoAnswer(f"port {self.port_path} lost: {e}") from None
        for item in self._rx.feed(data):
            if isinstance(item, codec.Received):
                fam = family_of(item.frame.msg_type)
                if fam is MessageFamily.HOST_EVENT:
                    self.events.append(item.message)
                else:
                    self._responses[item.frame.seq] = item.message
