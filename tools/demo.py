"""`thecal demo`: the protocol at work over a real pseudo-terminal.

Until the emulator and the firmware exist (issues 3 and 4) the demo exercises only the
protocol: a clinician's programmer signs the reference therapy (../shared/domain.md),
a patient's PTM asks for a bolus, and the frames cross a real pty opened with pyserial
with line noise mixed in. The receiving side decodes the stream, checks every
signature and counter, and answers NAK where it must, exactly as the pump will.
"""

from __future__ import annotations

import json
import os
import tty
from typing import Any

import serial

from protocol import codec
from protocol.auth import AuthResult, FrameSigner, FrameVerifier, Verdict
from protocol.codes import NakReason, Role
from protocol.framing import Frame, FrameError
from protocol.messages import REGISTRY, BolusRequest, Hello, Message, Program, Status
from protocol.vectors import reference_prescription

MG = 1_000_000  # ng


def reference_program(command_id: int) -> Program:
    """The reference therapy (../shared/domain.md), the same one the vectors carry."""
    return Program(command_id=command_id, **reference_prescription())


def _open_pty() -> tuple[int, str, int]:
    """A raw pty: the master end for the 'host', the slave path for pyserial."""
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline: frames are binary
    return master, os.ttyname(slave), slave


def _read_all(port: serial.Serial, master: int, data: bytes) -> bytes:
    os.write(master, data)
    want = len(data)
    got = b""
    while len(got) < want:
        chunk = port.read(want - len(got))
        if not chunk:
            break
        got += chunk
    return got


def run_demo(as_json: bool = False) -> int:
    keys = {Role.CLINICIAN: os.urandom(32), Role.PATIENT: os.urandom(32)}
    programmer = FrameSigner(Role.CLINICIAN, keys[Role.CLINICIAN])
    ptm = FrameSigner(Role.PATIENT, keys[Role.PATIENT])
    intruder = FrameSigner(Role.CLINICIAN, os.urandom(32), counter=10_000)
    verifier = FrameVerifier(keys)

    hello = codec.encode(Hello(), 1, programmer)
    program = codec.encode(reference_program(command_id=1), 2, programmer)
    status = codec.encode(Status(), 3, ptm)
    bolus = codec.encode(BolusRequest(command_id=2), 4, ptm)
    patient_program = codec.encode(reference_program(command_id=3), 5, ptm)
    forged = codec.encode(reference_program(command_id=4), 6, intruder)
    corrupted = bytearray(codec.encode(Status(), 7, ptm))
    corrupted[10] ^= 0x40
    stream = b"".join(
        [b"\x13\x37line noise\xff", hello, program, status, bolus, bytes(corrupted), patient_program, forged, bolus]
    )

    master, slave_path, slave_fd = _open_pty()
    steps: list[dict[str, Any]] = []
    try:
        with serial.Serial(slave_path, baudrate=115200, timeout=1.0) as port:
            received = _read_all(port, master, stream)
        decoder = codec.MessageDecoder()
        for item in decoder.feed(received):
            steps.append(_judge(item, verifier))
    finally:
        os.close(master)
        os.close(slave_fd)

    summary = {
        "port": slave_path,
        "bytes": len(stream),
        "frame_errors": {k.value: v for k, v in decoder.frames.errors.items() if v},
        "steps": steps,
        "note": "protocol only: the emulator and firmware arrive with issues 3 and 4",
    }
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"Thecal demo: {len(stream)} bytes through a real pty ({slave_path}), protocol only")
        print("(the emulated pump and its firmware arrive with issues 3 and 4)\n")
        for s in steps:
            print(f"  {s['seq']!s:>4}  {s['what']:<24} {s['verdict']}")
        print(f"\nframe errors counted: {summary['frame_errors'] or 'none'}")
    return 0


def _judge(item: codec.Received | codec.Rejected | FrameError, verifier: FrameVerifier) -> dict[str, Any]:
    """What the pump will do with each item: act, or NAK with one reason."""
    if isinstance(item, FrameError):
        return {"seq": None, "what": f"<{item.kind.value}>", "verdict": "dropped silently (no trustworthy header)"}
    frame: Frame = item.frame
    name = REGISTRY[frame.msg_type].NAME
    if isinstance(item, codec.Rejected):
        return {"seq": frame.seq, "what": name, "verdict": f"NAK {item.error.reason.name}"}
    verdict: Verdict = verifier.check(frame)
    if not verdict.ok:
        reason = NakReason.REPLAYED if verdict.result is AuthResult.REPLAYED else NakReason.AUTH_FAILED
        return {"seq": frame.seq, "what": name, "verdict": f"NAK {reason.name} ({verdict.result.value})"}
    msg: Message = item.message
    if verdict.role not in type(msg).ROLES:
        return {"seq": frame.seq, "what": name, "verdict": f"NAK NOT_PERMITTED ({verdict.role.name.lower()})"}
    detail = f"counter {verdict.counter}, role {verdict.role.name.lower()}"
    if isinstance(msg, Program):
        detail += f", {msg.drug} {msg.concentration_ng_per_ml / MG:g} mg/mL, {len(msg.basal)} basal steps"
    return {"seq": frame.seq, "what": name, "verdict": f"accepted ({detail})"}
