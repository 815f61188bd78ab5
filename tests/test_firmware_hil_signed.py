"""The pump's answers and events are signed, and the host refuses what is not (SR-058).

An attacker sits on the host link between a handset (tools.client.Client) and the pump:
a relay on a Unix socket in front of the emulator's host socket, which passes the bytes
on and can write frames of its own into the handset's side, drop the pump's or send a
recorded one again. Before SR-058 the pump's answers were unsigned and the client took
whatever came with the request's seq: a forged "bolus granted" or a replayed STATUS was
believed. Judged by what the client returns or raises; the pump is the real firmware.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import AlarmId, BolusDecision, Role, TherapyState
from protocol.framing import Frame, FrameDecoder, frame_body, wrap_body
from protocol.messages import AlarmCleared, BolusRequest, BolusRequestAck, Status, StatusAck, Stop
from tests.harness import Procs, PumpHost, firmware_pump
from tools.client import Client, Unauthentic
from tools.hostport import socket_of

FORGED_KEY = b"an attacker's guess at the key!!"


class Line:
    """The host link with an attacker on it. `before_request(frame)` returns wire bytes to
    write to the handset before the request goes on to the pump; `answer(frame)` what
    to write instead of a frame from the pump (None: pass it on unchanged)."""

    def __init__(self, directory: Path, upstream: Path) -> None:
        self.path = directory / "line.sock"
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(str(self.path))
        self._srv.listen(1)
        self._up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._up.connect(str(upstream))
        self.before_request: Callable[[Frame], bytes] = lambda f: b""
        self.answer: Callable[[Frame], bytes | None] = lambda f: None
        self.from_pump: list[Frame] = []  # every intact frame the pump sent, as it came
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self._srv.accept()
        to_pump, to_host = FrameDecoder(None), FrameDecoder(None)
        while not self._stop:
            ready, _, _ = select.select([conn, self._up], [], [], 0.1)
            if conn in ready:
                data = conn.recv(65536)
                if not data:
                    return
                for f in to_pump.feed(data):
                    if type(f) is Frame:
                        conn.sendall(self.before_request(f))
                self._up.sendall(data)
            if self._up in ready:
                data = self._up.recv(65536)
                if not data:
                    return
                for f in to_host.feed(data):
                    if type(f) is Frame:
                        self.from_pump.append(f)
                        out = self.answer(f)
                        conn.sendall(wrap_body(frame_body(f)) if out is None else out)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._up.close()
        self._srv.close()


@pytest.fixture
def pump_and_line(tmp_path: Path):
    with Procs(tmp_path) as procs:
        pump = firmware_pump(procs)
        line = Line(tmp_path, socket_of(pump.emulator.state_dir))
        handset = Client(str(line.path), pump.emulator.keys(), Role.PATIENT, timeout_s=10.0)
        try:
            yield pump, line, handset
        finally:
            handset.close()
            line.close()


def granted(command_id: int) -> BolusRequestAck:
    return BolusRequestAck(
        command_id=command_id, decision=BolusDecision.GRANTED, dose_ng=100_000, duration_s=60, next_available_at_s=1
    )


@pytest.mark.req("SR-058")
@pytest.mark.parametrize("how", ["unsigned", "forged key", "pump key id, wrong tag"])
def test_a_forged_bolus_granted_is_refused(pump_and_line: tuple[PumpHost, Line, Client], how: str):
    """The pump is stopped, so its answer to a bolus press is NOT_RUNNING; the attacker
    answers first, "granted". Before SR-058 the handset told the patient a bolus was on
    its way."""
    pump, line, handset = pump_and_line
    assert pump.status().state is TherapyState.STOPPED
    signer = {"unsigned": None, "forged key": FrameSigner(Role.CLINICIAN, FORGED_KEY, 10**15)}.get(how)
    if how == "pump key id, wrong tag":
        signer = FrameSigner(Role.PUMP, FORGED_KEY, 10**15)

    def forge(f: Frame) -> bytes:
        req = codec.decode(f)
        s = signer.bound(f.auth.tag) if signer is not None else None
        return codec.encode(granted(req.command_id), f.seq, s)

    line.before_request = forge
    with pytest.raises(Unauthentic, match=r"failed authentication.*spoofed or damaged"):
        handset.request(BolusRequest(command_id=7), Role.PATIENT)
    # The genuine answer came after it, signed, and says what the pump did: nothing.
    line.before_request = lambda f: b""
    ack = handset.request(BolusRequest(command_id=8), Role.PATIENT)
    assert ack.decision is BolusDecision.NOT_RUNNING
    assert all(f.auth is not None and f.auth.key_id == Role.PUMP for f in line.from_pump)


@pytest.mark.req("SR-058")
def test_a_recorded_answer_replayed_to_a_new_request_is_refused(pump_and_line: tuple[PumpHost, Line, Client]):
    """A genuine STATUS answer (therapy running), recorded; the clinician stops therapy;
    the handset asks STATUS again with the same seq (seqs wrap), and the attacker drops
    the pump's answer and sends the recorded one. Its tag is the pump's and its counter
    was never seen on an answer: only its binding to the first request gives it away."""
    pump, line, handset = pump_and_line
    pump.fill(12_000_000, 5_000_000)
    pump.program()
    pump.start()
    seq = handset._seq
    first = handset.request(Status(), Role.PATIENT)
    assert first.state is TherapyState.RUNNING
    recorded = [f for f in line.from_pump if f.seq == (seq + 1) & 0xFFFF and f.msg_type == StatusAck.TYPE][-1]
    pump.request(Stop(command_id=pump.next_id()))
    line.answer = lambda f: wrap_body(frame_body(recorded)) if f.msg_type == StatusAck.TYPE else None
    handset._seq = seq  # the next request reuses the first one's seq
    with pytest.raises(Unauthentic, match="recorded answer to another request"):
        handset.request(Status(), Role.PATIENT)
    line.answer = lambda f: None
    assert handset.request(Status(), Role.PATIENT).state is TherapyState.STOPPED


@pytest.mark.req("SR-058")
def test_forged_and_replayed_events_are_refused(pump_and_line: tuple[PumpHost, Line, Client]):
    """An "alarm cleared" the pump never sent, and a genuine event sent again: neither
    reaches the handset's reader as an event."""
    pump, line, handset = pump_and_line
    pump.fill(12_000_000, 5_000_000)
    pump.program()
    pump.start()  # a THERAPY_STATE_CHANGED event, signed
    handset.poll(0.5)
    genuine = list(handset.iter_events())
    assert genuine, "the handset saw the pump's events"
    event_frames = [f for f in line.from_pump if 0x90 <= f.msg_type <= 0x9F]
    assert event_frames and all(f.auth is not None and f.auth.key_id == Role.PUMP for f in event_frames)

    forged = AlarmCleared(time_s=1, alarm=AlarmId.OCCLUSION)
    line.before_request = lambda f: codec.encode(forged, 1, FrameSigner(Role.PUMP, FORGED_KEY, 10**18))
    handset.request(Status(), Role.PATIENT)
    with pytest.raises(Unauthentic, match=r"event .*failed authentication"):
        list(handset.iter_events())

    line.before_request = lambda f: wrap_body(frame_body(event_frames[-1]))
    handset.request(Status(), Role.PATIENT)
    with pytest.raises(Unauthentic, match="counter is not above"):
        list(handset.iter_events())
