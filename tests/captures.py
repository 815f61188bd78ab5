"""Real captures for the decoder and dissector tests, and hand-made frames to break them.

make_capture() runs the emulator's Rig with the controller firmware in this process (the
code path of `thecal emulator --capture`, without the ptys) through a short session
that puts most kinds of field on the wire: signed requests from each role, a refused
PROGRAM (NAK OUT_OF_RANGE), the relays both ways, events, ground truth with tones, and
the pump link's own traffic.
"""

from __future__ import annotations

from pathlib import Path

from emulator.capture import LINKTYPE_USER0, PCAP_HEADER, PSEUDO_HEADER, RECORD_HEADER, Capture, Direction, Link
from emulator.model import PumpModel
from emulator.rig import InProcessPort, Rig
from firmware.board import ControllerFactory
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import Fault, Role
from protocol.codes import Link as FaultLink
from protocol.framing import encode_body
from protocol.messages import (
    BasalStep,
    BolusRequest,
    Hello,
    Message,
    Program,
    RefillBegin,
    RefillComplete,
    SimAdvance,
    SimGroundTruth,
    SimInjectFault,
    Start,
    Status,
)
from protocol.vectors import reference_prescription
from tests.strategies import a_valid, field_spans

REPO = Path(__file__).resolve().parents[1]
KEYS = {role: bytes([0x10 + role]) * 32 for role in Role}


def make_capture(path: Path, wall_time: bool = True) -> Path:
    cap = Capture(path, wall_time=wall_time)
    rig = Rig(PumpModel(), InProcessPort(ControllerFactory(KEYS)), KEYS, capture=cap)
    signers = {role: FrameSigner(role, key) for role, key in KEYS.items()}
    seq = 0

    def send(msg: Message, role: Role) -> None:
        nonlocal seq
        seq += 1
        rig.host_bytes(codec.encode(msg, seq, signers[role]))

    rig.boot()
    send(Hello(), Role.CLINICIAN)
    send(RefillBegin(command_id=1), Role.CLINICIAN)
    send(
        RefillComplete(
            command_id=2, withdrawn_nl=0, added_nl=12_000_000, drug="morphine", concentration_ng_per_ml=5_000_000
        ),
        Role.CLINICIAN,
    )
    bad = {**reference_prescription(), "basal": (BasalStep(start_s=3600, rate_ng_per_day=1_000_000),)}
    send(Program(command_id=3, **bad), Role.CLINICIAN)  # refused: the first step must start at 0
    send(Program(command_id=4, **reference_prescription()), Role.CLINICIAN)
    send(Start(command_id=5), Role.CLINICIAN)
    send(SimAdvance(duration_ms=300_000), Role.SIM)  # a basal stroke: MOTOR_RUN, RUN_PROGRESS
    send(BolusRequest(command_id=6), Role.PATIENT)
    send(SimInjectFault(fault=Fault.BATTERY_MV, link=FaultLink.NONE, value=3_200, rate_ppm=0, seed=0), Role.SIM)
    send(SimAdvance(duration_ms=60_000), Role.SIM)
    send(Status(), Role.PATIENT)
    send(SimGroundTruth(tones_from=0), Role.SIM)
    cap.close()
    return path


def body(msg: Message, seq: int = 1, role: Role | None = None) -> bytes:
    """A frame body as the capture stores it (before COBS)."""
    return codec.encode_to_body(msg, seq, FrameSigner(role, KEYS[role]) if role is not None else None)


def raw_body(msg_type: int, payload: bytes, seq: int = 1) -> bytes:
    """A body with a valid CRC around any payload (to build frames the codec refuses)."""
    return encode_body(msg_type, seq, payload)


def patched_body(cls: type[Message], field: str, byte: int) -> bytes:
    """A valid CRC around a valid payload of `cls` whose `field` starts with `byte` instead
    (an enum or bool value the codec refuses, wherever the field sits)."""
    msg = a_valid(cls)
    payload = bytearray(msg.encode_payload())
    (span,) = [s for s in field_spans(msg) if s.name == field]
    payload[span.start] = byte
    return encode_body(cls.TYPE, 1, bytes(payload))


def write_records(path: Path, records: list[tuple[Link, Direction, bytes]], tail: bytes = b"") -> Path:
    """A capture of hand-made bodies, as Capture writes them, plus raw `tail` bytes."""
    cap = Capture(path, wall_time=False)
    for i, (link, direction, data) in enumerate(records):
        cap.frame(link, direction, 1_000 * i, data)
    cap.close()
    if tail:
        with open(path, "ab") as f:
            f.write(tail)
    return path


def raw_record(data: bytes, sim_ms: int = 0, announced: int | None = None) -> bytes:
    """One pcap record of arbitrary data (no pseudo-header is added)."""
    n = len(data) if announced is None else announced
    sec, ms = divmod(sim_ms, 1000)
    return RECORD_HEADER.pack(sec, ms * 1000, n, n) + data


def pseudo(link: int, direction: int, version: int = 1) -> bytes:
    return PSEUDO_HEADER.pack(version, link, direction, 0, 0, 0)


def pcap_header(linktype: int = LINKTYPE_USER0, magic: int = 0xA1B2C3D4) -> bytes:
    return PCAP_HEADER.pack(magic, 2, 4, 0, 0, 65535, linktype)


__all__ = [
    "KEYS",
    "REPO",
    "body",
    "make_capture",
    "patched_body",
    "pcap_header",
    "pseudo",
    "raw_body",
    "raw_record",
    "write_records",
]
