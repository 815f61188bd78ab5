"""Protocol fuzzing of the running rig: random and mutated frames on the host port.

One seed: a fresh rig (by default `thecal emulator` as its own process, frames written
to its host pty; `transport="inprocess"` runs the same rig in this process), set up with
the reference therapy running (fill recorded, programmed, started, a bolus given), then
`frames` frames from a generator seeded with the seed, in batches of BATCH. Time stands
still while a batch goes in (lockstep: only SIM_ADVANCE moves it, and the fuzzer never
sends a valid one), so the pump's state can be compared exactly before and after.

What is sent (counted per kind in the result):
  random            random bytes, with and without delimiters, and random COBS segments
  valid_refusable   correctly signed requests of every host type with random field values,
                    each one a request the pump must refuse or only answer: commands carry
                    an id it has already accepted (or, for START, PRIME, REFILL_COMPLETE,
                    an invalid PROGRAM, SET_CLOCK and CLINICIAN_BOLUS, a state or value it
                    must refuse), under the right role or the wrong one
  resigned          a valid request whose payload was then mutated (bit flips, truncation,
                    extension, random) and signed again, so the payload parser is reached
  flip / flip_crc   bit flips in a signed frame, the CRC left wrong or computed again
  truncated, extended, length, version, flags
                    cut short, bytes added, payload_len, version or flags changed (CRC
                    computed again, so each reaches the check it is meant for)
  delimiters        a delimiter put into a frame, or doubled
  cobs              bytes of the COBS stream changed
  key_id, unsigned, bad_tag
                    another key id, the trailer removed, a forged tag
  replay            a frame sent before, again, byte for byte (sim-control ones included)
  other_family      correctly signed frames of pump-link, response, event and unassigned
                    types, and sim-control frames forged, unsigned or signed by a person
  oversize          payloads around the relay's limit and the framing's, and a segment
                    longer than any frame

Batches are either "parser" batches (nothing that fails authentication, so the payload
parser is reached) or "auth" batches (everything). After each batch the oracle checks,
with correctly signed requests:

  rig_serves           SIM_GROUND_TRUTH and STATUS are answered, STATUS never refused: no
                       failure, however many, keeps an authentic frame out (SR-055)
  nothing_accepted     no fuzzed frame was ACKed as a command or a sim-control request, and
                       STATUS's last_command_id is unchanged
  therapy_unchanged    the ground truth did not move while time stood still; STATUS and
                       READ_PRESCRIPTION are exactly what they were
  log_unchanged        every entry the log held before is still there, unchanged, and every
                       new one is a logged rejection (AUTH_FAILED, REPLAY_REJECTED,
                       NOT_PERMITTED, COMMAND_REFUSED, PROGRAM_REFUSED) or a count of them
                       (AUTH_FAILURES_SUMMARY, REFUSALS_SUMMARY)
  refusal_log_bounded  rejections add a bounded number of entries: while time stands still,
                       at most the refusal-log burst per kind (authentication failures per
                       key id claimed; each kind of refusal), SR-056: no sender, with a key
                       or without, can push the real history out of the log
"""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tty
import zlib
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import construct as cs
from cobs import cobs

from emulator.model import PumpModel
from emulator.rig import InProcessPort, Rig
from firmware.board import ControllerFactory
from firmware.config import FirmwareConfig
from protocol import codec, schema
from protocol.auth import FrameSigner
from protocol.codes import LogEvent, MessageFamily, Role
from protocol.framing import (
    AUTH_PREFIX,
    HEADER,
    HEADER_SIZE,
    MAX_ENCODED,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    TAG_SIZE,
    TRAILER_SIZE,
)
from protocol.messages import (
    HOST_LINK_TYPES,
    HOST_MAX_PAYLOAD,
    REGISTRY,
    BolusRequest,
    ClinicianBolus,
    LogEntry,
    LogRead,
    Message,
    Nak,
    Prime,
    Program,
    ReadPrescription,
    RefillBegin,
    RefillComplete,
    SetClock,
    SimAdvance,
    SimGroundTruth,
    SimGroundTruthAck,
    Start,
    Status,
    StatusAck,
)
from protocol.schema import Array, Blob, BoolField, EnumField, Text, family_of
from protocol.vectors import reference_prescription
from tools.campaign import Checks, SeedResult, reproduce_command
from tools.client import load_keys

BATCH = 100
ORACLE_SEQ = 0xFF00  # the oracle's own requests use seqs from here; fuzzed frames below it
READY_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 10.0
HOUR_MS = 3_600_000
AUTH_EVENTS = frozenset({LogEvent.AUTH_FAILED, LogEvent.REPLAY_REJECTED, LogEvent.AUTH_FAILURES_SUMMARY})
REFUSED_EVENTS = frozenset({LogEvent.NOT_PERMITTED, LogEvent.COMMAND_REFUSED, LogEvent.PROGRAM_REFUSED})
REJECTIONS = AUTH_EVENTS | REFUSED_EVENTS | {LogEvent.REFUSALS_SUMMARY}
HOST_REQUESTS = tuple(c for c in REGISTRY.values() if c.FAMILY is MessageFamily.HOST_REQUEST)
# Keys the firmware rations failures for one by one; other key ids (and unsigned frames)
# share one budget, logged as key id 0.
PERSON_KEYS = (Role.CLINICIAN, Role.PATIENT)
REFUSAL_LOG_BURST = FirmwareConfig().refusal_log_burst


# ---------------------------------------------------------------- transports


class PtyRig:
    """`thecal emulator` as its own process; its host pty opened raw."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.state_dir = workdir / "state"
        self._log = open(workdir / "emulator.log", "wb")  # closed in close()
        argv = [sys.executable, "-P", "-m", "tools.cli", "emulator", "--state-dir", str(self.state_dir)]
        argv += ["--exit-on-stdin-eof", "--seed", str(seed)]
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, start_new_session=True
        )
        self.fd: int | None = None
        try:
            line = _read_line(self.proc.stdout.fileno(), READY_TIMEOUT_S).split()
            if not line or line[0] != b"READY":
                raise RuntimeError(f"emulator did not start: {line!r}; see {workdir / 'emulator.log'}")
            self.fd = os.open(line[1].decode(), os.O_RDWR | os.O_NOCTTY)
            tty.setraw(self.fd)
            os.set_blocking(self.fd, False)
            self.keys = load_keys(self.state_dir / "keys.json")
        except BaseException:
            self.close()
            raise

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)

    def read(self, timeout_s: float) -> bytes:
        if not select.select([self.fd], [], [], timeout_s)[0]:
            return b""
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        self.proc.stdout.close()
        if self.proc.stdin:
            self.proc.stdin.close()
        self._log.close()


class InProcessRig:
    """The same rig in this process (Rig, the firmware embedded), bytes in and out."""

    def __init__(self, seed: int) -> None:
        krng = random.Random(f"thecal-fuzz-keys-{seed}")
        self.keys = {r: krng.randbytes(32) for r in Role}
        self._out = bytearray()
        self.rig = Rig(
            PumpModel(),
            InProcessPort(ControllerFactory(self.keys)),
            self.keys,
            seed=seed,
            host_write=self._out.extend,
        )
        self.rig.boot()

    def write(self, data: bytes) -> None:
        self.rig.host_bytes(data)

    def read(self, timeout_s: float) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _read_line(fd: int, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RuntimeError(f"no READY line within {timeout_s:g} s (got {line!r})")
        b = os.read(fd, 1)
        if not b:
            return line
        line += b
    return line


# ---------------------------------------------------------------- the session


class OracleError(Exception):
    """The oracle's own request went unanswered or was refused."""


class Session:
    """Frames to the rig, answers back: counts every answer to a fuzzed frame, and makes
    the oracle's requests (seqs from ORACLE_SEQ, so no fuzzed frame's answer is taken
    for one)."""

    def __init__(self, rig: PtyRig | InProcessRig) -> None:
        self.rig = rig
        self.signers = {r: FrameSigner(r, k) for r, k in rig.keys.items()}
        self.rx = codec.MessageDecoder(HOST_LINK_TYPES)
        self.answers: Counter[str] = Counter()
        self.accepted: list[str] = []  # fuzzed frames answered with a command or sim ACK
        self.sent_oracle: list[bytes] = []  # the oracle's own correctly signed frames (for replays)
        self._oracle_seq = ORACLE_SEQ
        self._want: int | None = None
        self._want_type = 0
        self._got: Message | None = None

    def send(self, data: bytes) -> None:
        self.rig.write(data)
        self.drain(0.0)

    def drain(self, wait_s: float) -> None:
        """Read what has come (waiting up to wait_s for the first bytes)."""
        data = self.rig.read(wait_s)
        while data:
            self._take(data)
            data = self.rig.read(0.0)

    def settle(self, quiet_s: float = 0.02) -> None:
        """Read until the rig has been quiet for quiet_s (every answer to what was sent is in)."""
        while True:
            data = self.rig.read(quiet_s)
            if not data:
                return
            self._take(data)

    def _take(self, data: bytes) -> None:
        for item in self.rx.feed(data):
            if not isinstance(item, codec.Received):
                self.answers["undecodable"] += 1
                continue
            msg, seq = item.message, item.frame.seq
            if self._want is not None and seq == self._want and _answers_oracle(msg, self._want_type):
                self._got = msg
                continue
            fam = family_of(item.frame.msg_type)
            if isinstance(msg, Nak):
                self.answers[f"nak_{msg.reason.name.lower()}"] += 1
            elif fam is MessageFamily.HOST_EVENT:
                self.answers["event"] += 1
            elif (
                fam is MessageFamily.SIM_RESPONSE
                or "command_id" in type(msg).FIELDS
                or type(msg).NAME in ("ALARM_ACK_ACK",)
            ):
                self.answers["accepted"] += 1
                self.accepted.append(type(msg).NAME)
            else:
                self.answers["read_only"] += 1

    def request(self, msg: Message, role: Role) -> Message:
        """A correctly signed request of the oracle's; its answer (ACK or NAK)."""
        self._oracle_seq = ORACLE_SEQ + (self._oracle_seq - ORACLE_SEQ + 1) % 0x100
        self._want, self._want_type, self._got = self._oracle_seq, msg.TYPE, None
        data = codec.encode(msg, self._oracle_seq, self.signers[role])
        self.sent_oracle.append(data)
        del self.sent_oracle[:-50]
        self.rig.write(data)
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        try:
            while self._got is None:
                left = deadline - time.monotonic()
                if left <= 0 or not self.rig.alive():
                    raise OracleError(f"no answer to {msg.NAME} (rig {'alive' if self.rig.alive() else 'gone'})")
                data = self.rig.read(min(left, 0.2))
                if data:
                    self._take(data)
            return self._got
        finally:
            self._want = None

    def ok(self, msg: Message, role: Role = Role.CLINICIAN) -> Message:
        reply = self.request(msg, role)
        if isinstance(reply, Nak):
            raise OracleError(f"{msg.NAME} refused: {reply.reason.name} {reply.field} {reply.detail}")
        return reply

    def truth(self) -> SimGroundTruthAck:
        return self.ok(SimGroundTruth(tones_from=0), Role.SIM)

    def log_from(self, seq: int) -> list[LogEntry]:
        out: list[LogEntry] = []
        while True:
            ack = self.ok(LogRead(from_seq=seq, max_entries=32))
            out.extend(ack.entries)
            if not ack.entries or ack.entries[-1].seq + 1 >= ack.next_seq:
                return out
            seq = ack.entries[-1].seq + 1


def _answers_oracle(msg: Message, request_type: int) -> bool:
    if isinstance(msg, Nak):
        return msg.request_type == request_type
    ack = REGISTRY[request_type].ACK
    return ack is not None and type(msg) is ack


# ---------------------------------------------------------------- random values and frames


def random_value(sub: Any, rng: random.Random) -> Any:
    """A valid value of one declared field (the schema vocabulary), edges drawn often."""
    if isinstance(sub, cs.Renamed):
        return random_value(sub.subcon, rng)
    if isinstance(sub, EnumField):
        return rng.choice(list(sub.enum))
    if isinstance(sub, BoolField):
        return rng.random() < 0.5
    if isinstance(sub, Text):
        alphabet = "abcmorphinez-_ 019é€\U0001f600\x00"
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(sub.max_bytes + 1)))
        return text.encode("utf-8")[: sub.max_bytes].decode("utf-8", errors="ignore")
    if isinstance(sub, Blob):
        return rng.randbytes(rng.randrange(min(sub.max_bytes, 64) + 1))
    if isinstance(sub, Array):
        n = rng.choice((0, 1, rng.randrange(sub.max_items + 1), sub.max_items))
        return tuple(random_record(sub.record, rng) for _ in range(n))
    lo, hi = schema.int_range(sub)
    return rng.choice((lo, hi, 0 if lo <= 0 <= hi else lo, rng.randint(lo, hi), rng.randint(lo, hi)))


def random_record(cls: Any, rng: random.Random) -> Any:
    return cls(**{sub.name: random_value(sub.subcon, rng) for sub in cls.SCHEMA.subcons})


def crc_fixed(body_without_crc: bytes) -> bytes:
    return body_without_crc + struct.pack("<I", zlib.crc32(body_without_crc))


def wire(body: bytes) -> bytes:
    return b"\x00" + cobs.encode(body) + b"\x00"


class Fuzzer:
    """Frames, kind by kind, from one seeded generator."""

    def __init__(self, rng: random.Random, session: Session, used_ids: list[int]) -> None:
        self.rng = rng
        self.s = session
        self.used_ids = used_ids
        self.fresh_id = 1_000_000
        self.sent_valid: list[bytes] = []  # correctly signed frames sent (for replays)
        self.counts: Counter[str] = Counter()

    # -------------------------------------------------------- building blocks

    def seq(self) -> int:
        return self.rng.randrange(ORACLE_SEQ)

    def signed_body(self, msg_type: int, payload: bytes, role: Role, seq: int | None = None) -> bytes:
        head = HEADER.pack(PROTOCOL_VERSION, msg_type, 1, self.seq() if seq is None else seq, len(payload)) + payload
        return crc_fixed(head + self.s.signers[role](head))

    def refusable(self) -> tuple[Message, Role]:
        """A host request with random fields that the pump must refuse or only answer."""
        rng = self.rng
        cls = rng.choice(HOST_REQUESTS)
        msg = random_record(cls, rng)
        role = rng.choice(PERSON_KEYS) if rng.random() < 0.25 else (cls.ROLES[0] if cls.ROLES else Role.CLINICIAN)
        if "command_id" in cls.FIELDS:
            msg = replace(msg, command_id=rng.choice(self.used_ids))
            if rng.random() < 0.4:
                fresh = self._fresh_refusable(cls, msg)
                if fresh is not None:
                    msg = fresh
        return msg, role

    def _fresh_refusable(self, cls: type, msg: Message) -> Message | None:
        """The same request with a new command id, made one the pump must refuse."""
        rng = self.rng
        self.fresh_id += 1
        cid = self.fresh_id
        rx = reference_prescription()
        if cls in (Start, Prime, RefillComplete):  # therapy is running, not stopped nor in refill
            return replace(msg, command_id=cid)
        if cls is Program:  # never in the drug library
            drug = ("zz-" + msg.drug).encode("utf-8")[:24].decode("utf-8", errors="ignore")
            return replace(msg, command_id=cid, drug=drug)
        if cls is SetClock:
            return replace(msg, command_id=cid, clock_s=rng.choice((0, -1, 946_684_799, 4_102_444_800, 2**63 - 1)))
        if cls is ClinicianBolus:
            return replace(msg, command_id=cid, dose_ng=rng.choice((0, rx["max_dose_24h_ng"] + 1, 2**32 - 1)))
        return None  # STOP, BOLUS_REQUEST, REFILL_BEGIN: any new id would be accepted

    def valid_wire(self) -> tuple[bytes, bytes]:
        """(body, wire) of a correctly signed refusable request."""
        msg, role = self.refusable()
        body = codec.encode_to_body(msg, self.seq(), self.s.signers[role])
        return body, wire(body)

    def emit(self, kind: str, data: bytes, valid: bool = False) -> bytes:
        self.counts[kind] += 1
        if valid:
            self.sent_valid.append(data)
            del self.sent_valid[:-200]
        return data

    # -------------------------------------------------------- the kinds

    PARSER_KINDS = (
        ("random", 10),
        ("valid_refusable", 25),
        ("resigned", 25),
        ("flip", 6),
        ("truncated", 5),
        ("delimiters", 5),
        ("cobs", 5),
        ("other_family", 10),
        ("oversize", 3),
        ("length", 3),
        ("version", 2),
        ("flags", 2),
    )
    AUTH_KINDS = (
        *PARSER_KINDS,
        ("flip_crc", 12),
        ("extended", 4),
        ("key_id", 8),
        ("unsigned", 8),
        ("bad_tag", 8),
        ("replay", 10),
    )

    def frame(self, auth_batch: bool) -> bytes:
        kinds = self.AUTH_KINDS if auth_batch else self.PARSER_KINDS
        kind = self.rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        return getattr(self, f"_k_{kind}")()

    def _k_random(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            return self.emit("random", rng.randbytes(rng.randrange(1, 300)))
        if r < 0.8:  # a segment that COBS-decodes to something
            body = rng.randbytes(rng.randrange(0, 120))
            return self.emit("random", wire(body))
        body = rng.randbytes(rng.randrange(HEADER_SIZE, 80))  # a frame-shaped body with a good CRC
        return self.emit("random", wire(crc_fixed(body)))

    def _k_valid_refusable(self) -> bytes:
        _, w = self.valid_wire()
        return self.emit("valid_refusable", w, valid=True)

    def _k_resigned(self) -> bytes:
        rng = self.rng
        msg, role = self.refusable()
        payload = bytearray(type(msg)._fast_build(msg))
        how = rng.randrange(4)
        if how == 0 and payload:
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(payload))
                payload[i] ^= 1 << rng.randrange(8)
        elif how == 1:
            del payload[rng.randrange(len(payload) + 1) :]
        elif how == 2:
            payload += rng.randbytes(rng.randrange(1, 40))
        else:
            payload = bytearray(rng.randbytes(rng.randrange(0, 80)))
        payload = self._keep_refusable(msg.TYPE, bytes(payload))
        return self.emit("resigned", wire(self.signed_body(msg.TYPE, payload, role)), valid=True)

    def _keep_refusable(self, msg_type: int, payload: bytes) -> bytes:
        """A mutated payload that decodes to a command with an id the pump has not seen
        would be a valid new command: give it an id already accepted."""
        cls = REGISTRY[msg_type]
        if "command_id" not in cls.FIELDS:
            return payload
        try:
            msg = cls._fast_parse(payload)
        except Exception:  # noqa: BLE001 - any decode error: the pump refuses it too
            return payload
        if msg.command_id in self.used_ids:
            return payload
        return cls._fast_build(replace(msg, command_id=self.rng.choice(self.used_ids)))

    def _mutated_body(self) -> bytearray:
        body, _ = self.valid_wire()
        return bytearray(body)

    def _k_flip(self) -> bytes:
        b = self._mutated_body()
        for _ in range(self.rng.randrange(1, 4)):
            i = self.rng.randrange(len(b))
            b[i] ^= 1 << self.rng.randrange(8)
        return self.emit("flip", wire(bytes(b)))

    def _k_flip_crc(self) -> bytes:
        b = self._mutated_body()[:-4]
        for _ in range(self.rng.randrange(1, 4)):
            i = self.rng.randrange(len(b))
            b[i] ^= 1 << self.rng.randrange(8)
        return self.emit("flip_crc", wire(crc_fixed(bytes(b))))

    def _k_truncated(self) -> bytes:
        b = self._mutated_body()
        cut = bytes(b[: self.rng.randrange(len(b))])
        if self.rng.random() < 0.5 and len(cut) > 4:
            cut = crc_fixed(cut[:-4])
        return self.emit("truncated", wire(cut))

    def _k_extended(self) -> bytes:
        b = self._mutated_body()[:-4]
        at = self.rng.randrange(HEADER_SIZE, len(b) + 1)
        b[at:at] = self.rng.randbytes(self.rng.randrange(1, 20))
        return self.emit("extended", wire(crc_fixed(bytes(b))))

    def _k_length(self) -> bytes:
        b = self._mutated_body()[:-4]
        plen = struct.unpack_from("<H", b, 5)[0]
        new = self.rng.choice((0, plen - 1, plen + 1, 0xFFFF, self.rng.randrange(0x10000)))
        struct.pack_into("<H", b, 5, new & 0xFFFF)
        return self.emit("length", wire(crc_fixed(bytes(b))))

    def _k_version(self) -> bytes:
        b = self._mutated_body()[:-4]
        b[0] = self.rng.choice([v for v in range(256) if v != PROTOCOL_VERSION])
        return self.emit("version", wire(crc_fixed(bytes(b))))

    def _k_flags(self) -> bytes:
        b = self._mutated_body()[:-4]
        b[2] |= 1 << self.rng.randrange(1, 8)
        return self.emit("flags", wire(crc_fixed(bytes(b))))

    def _k_delimiters(self) -> bytes:
        _, w = self.valid_wire()
        w = bytearray(w)
        if self.rng.random() < 0.5:
            at = self.rng.randrange(1, len(w) - 1)
            w[at:at] = b"\x00"
        else:
            w = bytearray(b"\x00" * self.rng.randrange(2, 6)) + w + b"\x00" * self.rng.randrange(0, 4)
        return self.emit("delimiters", bytes(w))

    def _k_cobs(self) -> bytes:
        _, w = self.valid_wire()
        w = bytearray(w)
        for _ in range(self.rng.randrange(1, 3)):
            i = self.rng.randrange(1, len(w) - 1)
            w[i] = self.rng.randrange(1, 256)
        return self.emit("cobs", bytes(w))

    def _signed_split(self) -> tuple[bytearray, int]:
        """A signed body without its CRC, and where its trailer starts."""
        b = self._mutated_body()[:-4]
        return b, len(b) - TRAILER_SIZE

    def _k_key_id(self) -> bytes:
        b, at = self._signed_split()
        b[at] = self.rng.choice([k for k in range(256) if k != b[at]])
        return self.emit("key_id", wire(crc_fixed(bytes(b))))

    def _k_unsigned(self) -> bytes:
        b, at = self._signed_split()
        b = b[:at]
        b[2] &= 0xFE
        return self.emit("unsigned", wire(crc_fixed(bytes(b))))

    def _k_bad_tag(self) -> bytes:
        b, at = self._signed_split()
        tag_at = at + AUTH_PREFIX.size
        b[tag_at : tag_at + TAG_SIZE] = self.rng.randbytes(TAG_SIZE)
        return self.emit("bad_tag", wire(crc_fixed(bytes(b))))

    def _k_replay(self) -> bytes:
        if not self.s.sent_oracle or (self.sent_valid and self.rng.random() < 0.7):
            if not self.sent_valid:
                return self._k_valid_refusable()
            return self.emit("replay", self.rng.choice(self.sent_valid))
        return self.emit("replay", self.rng.choice(self.s.sent_oracle))

    def _k_other_family(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.5:  # a declared type of another family, correctly signed by a person
            cls = rng.choice([c for c in REGISTRY.values() if c.FAMILY not in (MessageFamily.HOST_REQUEST,)])
            if cls.FAMILY is MessageFamily.SIM_REQUEST:
                # forged: unsigned, signed by a person, or with a wrong tag; never a valid sim frame
                payload = cls._fast_build(random_record(cls, rng))
                how = rng.randrange(3)
                if how == 0:
                    head = HEADER.pack(PROTOCOL_VERSION, cls.TYPE, 0, self.seq(), len(payload)) + payload
                    return self.emit("other_family", wire(crc_fixed(head)))
                body = bytearray(self.signed_body(cls.TYPE, payload, rng.choice(PERSON_KEYS)))
                if how == 2:
                    body[-5] ^= 0x01  # inside the tag
                    body = bytearray(crc_fixed(bytes(body[:-4])))
                return self.emit("other_family", wire(bytes(body)))
            payload = cls._fast_build(random_record(cls, rng))
            return self.emit("other_family", wire(self.signed_body(cls.TYPE, payload, rng.choice(PERSON_KEYS))))
        unassigned = [t for t in range(256) if t not in REGISTRY]
        t = rng.choice(unassigned)
        payload = rng.randbytes(rng.randrange(0, 40))
        return self.emit("other_family", wire(self.signed_body(t, payload, rng.choice(PERSON_KEYS))))

    def _k_oversize(self) -> bytes:
        rng = self.rng
        r = rng.randrange(3)
        if r == 0:  # around the relay's limit and the framing's
            n = rng.choice((HOST_MAX_PAYLOAD - 1, HOST_MAX_PAYLOAD, HOST_MAX_PAYLOAD + 1, MAX_PAYLOAD))
            cls = rng.choice(HOST_REQUESTS)
            return self.emit("oversize", wire(self.signed_body(cls.TYPE, rng.randbytes(n), Role.CLINICIAN)))
        if r == 1:  # a payload_len over MAX_PAYLOAD with a good CRC
            head = HEADER.pack(PROTOCOL_VERSION, Status.TYPE, 0, self.seq(), MAX_PAYLOAD + 1)
            return self.emit("oversize", wire(crc_fixed(head + bytes(MAX_PAYLOAD + 1))))
        return self.emit("oversize", b"\x00" + bytes(rng.randrange(1, 256) for _ in range(MAX_ENCODED + 50)) + b"\x00")


# ---------------------------------------------------------------- one seed


def _set_up(s: Session) -> list[int]:
    """Record the 12 mL fill, program the reference therapy, start, a bolus; ids used."""
    rx = reference_prescription()
    s.ok(RefillBegin(command_id=1))
    s.ok(
        RefillComplete(
            command_id=2,
            withdrawn_nl=0,
            added_nl=12_000_000,
            drug=rx["drug"],
            concentration_ng_per_ml=rx["concentration_ng_per_ml"],
        )
    )
    s.ok(Program(command_id=3, **rx))
    s.ok(Start(command_id=4))
    s.ok(SimAdvance(duration_ms=3 * HOUR_MS), Role.SIM)
    s.ok(BolusRequest(command_id=5), Role.PATIENT)  # granted (the programming lockout is over)
    s.ok(SimAdvance(duration_ms=HOUR_MS), Role.SIM)
    return [1, 2, 3, 4, 5]


def _status(s: Session) -> StatusAck:
    """STATUS as clinician: served whatever the fuzzing sent (SR-055: no lockout)."""
    reply = s.request(Status(), Role.CLINICIAN)
    if isinstance(reply, Nak):
        raise OracleError(f"STATUS refused: {reply.reason.name} {reply.detail}")
    return reply


def _refusal_kind(e: LogEntry) -> tuple[str, int] | None:
    """The kind a rejection's entry is rationed under (SR-056), from the entry alone."""
    if e.event in (LogEvent.AUTH_FAILED, LogEvent.REPLAY_REJECTED):
        return "auth", e.arg0 if e.arg0 in PERSON_KEYS else 0
    if e.event is LogEvent.AUTH_FAILURES_SUMMARY:
        return "auth", e.arg0
    if e.event in REFUSED_EVENTS:
        return "refused", int(e.event)
    if e.event is LogEvent.REFUSALS_SUMMARY:
        return "refused", e.arg0
    return None


def run_seed(seed: int, frames: int = 1_000, transport: str = "pty") -> SeedResult:
    t_wall = time.monotonic()
    params = {"frames": frames, "transport": transport}
    ck = Checks()
    counters: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=f"thecal-fuzz-{seed}-") as tmp:
        rig = PtyRig(Path(tmp), seed) if transport == "pty" else InProcessRig(seed)
        try:
            _fuzz(rig, seed, frames, ck, counters)
        finally:
            alive = rig.alive()
            rig.close()
    ck.ok("rig_serves", alive, "the emulator process died")
    return SeedResult(
        campaign="fuzz",
        seed=seed,
        passed=ck.passed,
        checks=ck.results,
        counters=counters,
        failure="; ".join(ck.failures) if ck.failures else None,
        reproduce=reproduce_command("fuzz", seed, params),
        wall_s=round(time.monotonic() - t_wall, 3),
    )


def _fuzz(rig: PtyRig | InProcessRig, seed: int, frames: int, ck: Checks, counters: dict[str, int]) -> None:
    s = Session(rig)
    used = _set_up(s)
    base_truth = s.truth()
    base_status = _status(s)
    base_rx = s.ok(ReadPrescription())
    base_log = s.log_from(0)
    ck.ok("set_up", base_status.state.name == "RUNNING" and not base_status.alarms, f"set-up status {base_status}")
    ck.ok("set_up", base_status.last_command_id == used[-1], f"last_command_id {base_status.last_command_id}")
    fz = Fuzzer(random.Random(seed), s, used)
    seen_log = list(base_log)
    from_seq = base_log[-1].seq + 1 if base_log else 1
    prev_truth = base_truth
    auth_batches = 0
    sent = 0
    while sent < frames:
        auth = fz.rng.random() < 0.4
        auth_batches += auth
        n = min(BATCH, frames - sent)
        for _ in range(n):
            s.send(fz.frame(auth))
        sent += n
        s.settle()
        try:
            prev_truth = _oracle(s, ck, base_status, base_rx, base_truth, prev_truth, seen_log, from_seq)
        except OracleError as e:
            ck.ok("rig_serves", False, f"after {sent} frames: {e}")
            break
        if ck.failures:
            break
    new = seen_log[len(base_log) :]
    counters.update(
        {
            "frames": sent,
            "auth_batches": auth_batches,
            "log_rejections": sum(1 for e in new if e.event in REJECTIONS),
            "log_auth_entries": sum(1 for e in new if e.event in AUTH_EVENTS),
            "accepted_corrupted": len(s.accepted),
            **{f"frames_{k}": v for k, v in sorted(fz.counts.items())},
            **{f"answer_{k}": v for k, v in sorted(s.answers.items())},
        }
    )


def _oracle(
    s: Session,
    ck: Checks,
    base_status: StatusAck,
    base_rx: Message,
    base_truth: SimGroundTruthAck,
    prev_truth: SimGroundTruthAck,
    seen_log: list[LogEntry],
    fuzz_from_seq: int,
) -> SimGroundTruthAck:
    truth = s.truth()
    ck.ok(
        "therapy_unchanged",
        truth.time_ms != prev_truth.time_ms or truth.strokes_total == prev_truth.strokes_total,
        f"strokes {prev_truth.strokes_total} -> {truth.strokes_total} while time stood still",
    )
    ck.ok(
        "nothing_accepted",
        not s.accepted,
        f"fuzzed frames accepted: {Counter(s.accepted).most_common()}",
    )
    st = _status(s)
    ck.ok(
        "nothing_accepted",
        st.last_command_id == base_status.last_command_id,
        f"last_command_id {base_status.last_command_id} -> {st.last_command_id}",
    )
    diff = [f for f in StatusAck.FIELDS if getattr(st, f) != getattr(base_status, f)]
    ck.ok("therapy_unchanged", truth.time_ms == base_truth.time_ms, "time moved without an advance")
    ck.ok(
        "therapy_unchanged",
        not diff,
        "STATUS changed: " + ", ".join(f"{f} {getattr(base_status, f)!r} -> {getattr(st, f)!r}" for f in diff),
    )
    rx = s.ok(ReadPrescription())
    ck.ok("therapy_unchanged", rx == base_rx, f"prescription changed: {rx}")
    start = seen_log[0].seq if seen_log else 0
    log = s.log_from(start)
    old = len(seen_log)
    ck.ok(
        "log_unchanged",
        log[:old] == seen_log,
        f"entries already logged changed or were pushed out (oldest now {log[0].seq if log else None}, was {start})",
    )
    odd = [e for e in log[old:] if e.event not in REJECTIONS]
    ck.ok("log_unchanged", not odd, f"new log entries that are not rejections: {odd[:5]}")
    # Time stands still, so no kind's budget has come back: at most the burst per kind.
    per_kind = Counter(k for e in log if e.seq >= fuzz_from_seq and (k := _refusal_kind(e)) is not None)
    over = {k: n for k, n in per_kind.items() if n > REFUSAL_LOG_BURST}
    ck.ok(
        "refusal_log_bounded",
        not over,
        f"rejections logged beyond their budget: {over} (at most {REFUSAL_LOG_BURST} a kind while time stands still)",
    )
    seen_log[:] = log if log[:old] == seen_log else seen_log + log[old:]
    return truth
