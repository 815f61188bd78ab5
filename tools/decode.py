"""`thecal decode`: every frame of a capture file, decoded, as text or one JSON object.

A capture (emulator/capture.py) is a pcap file of link type USER0; each record is a
16-byte pseudo-header (link, direction, low bits of the simulated time, wall time) and a
frame body as it was on the wire before COBS (header, payload, auth trailer, CRC).
decode_capture() turns one into DecodedFrame values (for tests and tools); format_text()
and to_json() render them. Nothing in a record's bytes makes the decoder raise: a frame
that is not a valid message is a DecodedFrame whose `error` says why. Only a file that
is not a readable Thecal capture raises CaptureError.

Auth tags are reported, not verified: the decoder holds no keys.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

from emulator.capture import LINKTYPE_USER0, PSEUDO_HEADER, PSEUDO_VERSION, Direction
from emulator.capture import Link as CapLink
from protocol.codes import Role
from protocol.errors import DecodeError
from protocol.framing import HEADER, HEADER_SIZE, Frame, FrameErrorKind, parse_body
from protocol.messages import HOST_LINK_TYPES, PUMP_LINK_TYPES, REGISTRY, HostRx, HostTx, Message
from protocol.schema import NONE_U64, Record

EXIT_OK = 0
EXIT_UNREADABLE = 2

_PCAP_MAGIC = {  # magic as read little-endian -> (byte order, timestamp fraction per second)
    0xA1B2C3D4: ("<", 1_000_000),
    0xD4C3B2A1: (">", 1_000_000),
    0xA1B23C4D: ("<", 1_000_000_000),
    0x4D3CB2A1: (">", 1_000_000_000),
}
_PCAPNG_MAGIC = 0x0A0D0D0A
_ALL_TYPES = frozenset(REGISTRY)
_PCAP_HEADER_SIZE = 24
_RECORD_HEADER_SIZE = 16

_ERROR_TEXT: dict[FrameErrorKind, str] = {
    FrameErrorKind.BAD_COBS: "bad COBS",
    FrameErrorKind.BAD_CRC: "bad CRC",
    FrameErrorKind.OVERSIZE: "oversize",
    FrameErrorKind.BAD_LENGTH: "bad length",
    FrameErrorKind.UNKNOWN_VERSION: "unknown protocol version",
    FrameErrorKind.UNKNOWN_TYPE: "unknown type",
    FrameErrorKind.BAD_FLAGS: "reserved flag bits set",
}

# A u8 field that holds a message type: text output names the type.
TYPE_CODE_FIELDS = frozenset({("NAK", "request_type")})

_DIRECTION_TEXT: dict[Direction, str] = {
    Direction.HOST_TO_PUMP: "host->pump",
    Direction.PUMP_TO_HOST: "pump->host",
    Direction.CONTROLLER_TO_PUMP: "ctrl->pump",
    Direction.PUMP_TO_CONTROLLER: "pump->ctrl",
}


class CaptureError(ValueError):
    """The file is not a readable Thecal capture; the message names the file and the problem."""


@dataclass(frozen=True)
class Auth:
    """An auth trailer as found (the tag is not verified: the decoder has no keys)."""

    key_id: int
    counter: int
    tag: bytes

    @property
    def role(self) -> Role | None:
        return Role(self.key_id) if self.key_id in Role._value2member_map_ else None

    @property
    def role_name(self) -> str:
        role = self.role
        return role.name.lower() if role is not None else f"key{self.key_id}"


@dataclass(frozen=True)
class DecodedBody:
    """One frame body: the message in it, or why there is none.

    msg_type, seq and flags are None when the header cannot be trusted (bad CRC, too
    short). `relayed` is the host-link frame a HOST_RX or HOST_TX carries, decoded."""

    raw: bytes  # the body as captured (header to CRC)
    msg_type: int | None
    seq: int | None
    flags: int | None
    message: Message | None
    auth: Auth | None
    error: str | None
    relayed: DecodedBody | None = None

    @property
    def name(self) -> str | None:
        cls = REGISTRY.get(self.msg_type) if self.msg_type is not None else None
        return cls.NAME if cls is not None else None

    @property
    def ok(self) -> bool:
        """The body, and any frame it relays, decoded as a valid message."""
        return self.error is None and (self.relayed is None or self.relayed.ok)


@dataclass(frozen=True)
class DecodedFrame:
    """One capture record: when, on which link, which way, and its decoded body."""

    number: int  # from 1, as Wireshark numbers frames
    sim_ms: int
    wall_us: int | None  # None when the capture was made without wall time
    link: CapLink | int  # an int when the pseudo-header names no known link
    direction: Direction | int
    body: DecodedBody

    @property
    def name(self) -> str | None:
        return self.body.name

    @property
    def message(self) -> Message | None:
        return self.body.message

    @property
    def error(self) -> str | None:
        return self.body.error

    @property
    def relayed(self) -> DecodedBody | None:
        return self.body.relayed

    @property
    def ok(self) -> bool:
        return self.body.ok


# ---------------------------------------------------------------- decoding


def decode_body(body: bytes, link: CapLink | int | None = None) -> DecodedBody:
    """Decode one frame body (header to CRC, before COBS); never raises on its bytes.

    On the host link only host-link types are valid, on the pump link only pump-link
    types, as a receiver there would judge them."""
    known = HOST_LINK_TYPES if link == CapLink.HOST else PUMP_LINK_TYPES if link == CapLink.PUMP else _ALL_TYPES
    item = parse_body(body, known)
    if not isinstance(item, Frame):
        error = _frame_error_text(item.kind, body, link)
        return DecodedBody(body, item.msg_type, item.seq, item.flags, None, None, error)
    auth = Auth(item.auth.key_id, item.auth.counter, item.auth.tag) if item.auth is not None else None
    cls = REGISTRY[item.msg_type]
    try:
        message = cls.decode_payload(item.payload)
    except DecodeError as e:
        where = f"{cls.NAME}.{e.field}" if e.field else cls.NAME
        return DecodedBody(body, item.msg_type, item.seq, item.flags, None, auth, f"bad payload: {where}: {e.detail}")
    relayed = decode_body(message.frame, CapLink.HOST) if isinstance(message, HostRx | HostTx) else None
    return DecodedBody(body, item.msg_type, item.seq, item.flags, message, auth, None, relayed)


def _frame_error_text(kind: FrameErrorKind, body: bytes, link: CapLink | int | None) -> str:
    text = _ERROR_TEXT[kind]
    if kind is FrameErrorKind.UNKNOWN_TYPE:
        msg_type = body[1]
        cls = REGISTRY.get(msg_type)
        if cls is None:
            return f"unknown type 0x{msg_type:02X}"
        where = "host" if link == CapLink.PUMP else "pump"
        return f"{cls.NAME} (0x{msg_type:02X}) is a {where}-link type"
    if kind is FrameErrorKind.BAD_CRC and len(body) >= HEADER_SIZE:
        # The header cannot be trusted, but what it claims helps to find the frame.
        _v, msg_type, _f, seq, _n = HEADER.unpack_from(body)
        cls = REGISTRY.get(msg_type)
        claimed = cls.NAME if cls is not None else f"0x{msg_type:02X}"
        return f"{text} (header claims {claimed} seq {seq})"
    if kind in (FrameErrorKind.BAD_LENGTH, FrameErrorKind.OVERSIZE):
        return f"{text} (body of {len(body)} bytes)"
    return text


def _read_header(path: Path, f: Any) -> tuple[str, int]:
    head = f.read(_PCAP_HEADER_SIZE)
    if not head:
        raise CaptureError(f"{path} is empty, not a pcap file")
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == _PCAPNG_MAGIC:
        raise CaptureError(f"{path} is a pcapng file; Thecal captures are pcap (convert with `editcap -F pcap`)")
    if len(head) < _PCAP_HEADER_SIZE:
        raise CaptureError(f"{path} is {len(head)} bytes long, too short for a pcap file header")
    magic = struct.unpack_from("<I", head)[0]
    if magic not in _PCAP_MAGIC:
        raise CaptureError(f"{path} is not a pcap file (magic 0x{magic:08X})")
    order, per_second = _PCAP_MAGIC[magic]
    linktype = struct.unpack_from(order + "I", head, 20)[0] & 0x0FFFFFFF  # high bits: FCS info
    if linktype != LINKTYPE_USER0:
        raise CaptureError(f"{path} has link type {linktype}, not USER0 ({LINKTYPE_USER0}) as Thecal captures do")
    return order, per_second


def _records(path: Path) -> Iterator[tuple[int, int, bytes, str | None]]:
    """(number, sim ms, record data, problem) per record; problem names a truncated record."""
    try:
        with open(path, "rb") as f:
            yield from _read_records(path, f)
    except OSError as e:
        raise CaptureError(f"cannot read {path}: {e.strerror or e}") from None


def _read_records(path: Path, f: Any) -> Iterator[tuple[int, int, bytes, str | None]]:
    order, per_second = _read_header(path, f)
    rec = struct.Struct(order + "IIII")
    number = 0
    while head := f.read(_RECORD_HEADER_SIZE):
        number += 1
        if len(head) < _RECORD_HEADER_SIZE:
            yield number, 0, b"", f"truncated record header ({len(head)} of {_RECORD_HEADER_SIZE} bytes)"
            return
        sec, frac, incl, _orig = rec.unpack(head)
        sim_ms = sec * 1000 + frac * 1000 // per_second
        data = f.read(incl)
        if len(data) < incl:
            yield number, sim_ms, data, f"truncated record: {incl} bytes announced, {len(data)} in the file"
            return
        yield number, sim_ms, data, None


def _decode_record(number: int, sim_ms: int, data: bytes, problem: str | None) -> DecodedFrame:
    def bad(why: str, link: CapLink | int = 0, direction: Direction | int = 0) -> DecodedFrame:
        body = DecodedBody(data[PSEUDO_HEADER.size :], None, None, None, None, None, why)
        return DecodedFrame(number, sim_ms, None, link, direction, body)

    if problem is not None:
        return bad(problem)
    if len(data) < PSEUDO_HEADER.size:
        return bad(f"record of {len(data)} bytes is shorter than the {PSEUDO_HEADER.size}-byte pseudo-header")
    version, link_raw, dir_raw, _flags, _sim_lo, wall_us = PSEUDO_HEADER.unpack_from(data)
    link = CapLink(link_raw) if link_raw in CapLink._value2member_map_ else link_raw
    direction = Direction(dir_raw) if dir_raw in Direction._value2member_map_ else dir_raw
    if version != PSEUDO_VERSION:
        return bad(f"pseudo-header version {version} (this decoder reads version {PSEUDO_VERSION})", link, direction)
    if not isinstance(link, CapLink):
        return bad(f"pseudo-header names link {link_raw}, neither host (1) nor pump (2)", link, direction)
    body = decode_body(data[PSEUDO_HEADER.size :], link)
    return DecodedFrame(number, sim_ms, wall_us or None, link, direction, body)


def decode_capture(path: str | Path) -> list[DecodedFrame]:
    """Every record of a capture file, decoded. Raises CaptureError (naming the file and
    the problem) when it is not a readable Thecal capture; bad records become frames
    with an `error`."""
    path = Path(path)
    if path.is_dir():
        raise CaptureError(f"cannot read {path}: it is a directory")
    return [_decode_record(*r) for r in _records(path)]


# ---------------------------------------------------------------- text


def sim_time_text(ms: int) -> str:
    days, rest = divmod(ms, 86_400_000)
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{days}d {h:02d}:{m:02d}:{s:02d}.{milli:03d}"


def wall_time_text(us: int) -> str:
    """UTC, to the millisecond."""
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, int):
        return "none" if value == NONE_U64 else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 16 else f"{value[:16].hex()}...({len(value)} bytes)"
    if isinstance(value, tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, Record):
        return "{" + _fields_text(value) + "}"
    return str(value)


def _fields_text(obj: Record, relayed: DecodedBody | None = None) -> str:
    parts = []
    for sub in obj.SCHEMA.subcons:
        value = getattr(obj, sub.name)
        if relayed is not None and sub.name == "frame":
            parts.append(f"frame=[{_body_text(relayed)}]")
        elif (getattr(obj, "NAME", None), sub.name) in TYPE_CODE_FIELDS:
            cls = REGISTRY.get(value)
            parts.append(f"{sub.name}={cls.NAME if cls is not None else f'0x{value:02X}'}")
        else:
            parts.append(f"{sub.name}={_value_text(value)}")
    return " ".join(parts)


def _auth_text(auth: Auth | None) -> str:
    return f"{auth.role_name}#{auth.counter}" if auth is not None else "-"


def _body_text(b: DecodedBody) -> str:
    """A relayed frame, all on one line: type, seq, auth, then its fields or its error."""
    head = " ".join(
        x for x in (b.name or (f"0x{b.msg_type:02X}" if b.msg_type is not None else None), _seq_text(b.seq)) if x
    )
    if b.auth is not None:
        head += f" {_auth_text(b.auth)}"
    if b.error is not None:
        return f"{head}: ERROR {b.error}" if head else f"ERROR {b.error}"
    return f"{head}: {_fields_text(b.message, b.relayed)}" if b.message.FIELDS else head


def _seq_text(seq: int | None) -> str:
    return f"seq={seq}" if seq is not None else ""


def _link_text(link: CapLink | int) -> str:
    return link.name.lower() if isinstance(link, CapLink) else f"link{link}"


def _direction_text(direction: Direction | int) -> str:
    return _DIRECTION_TEXT[direction] if isinstance(direction, Direction) else f"dir{direction}"


def format_text(frames: Sequence[DecodedFrame]) -> str:
    """One line per frame in aligned columns, a header line, and a closing count."""
    with_wall = any(fr.wall_us is not None for fr in frames)
    header = ["#", "sim time", *(["wall time (UTC)"] if with_wall else []), "link", "dir", "seq", "type", "auth"]
    rows = []
    for fr in frames:
        b = fr.body
        name = b.name or (f"0x{b.msg_type:02X}" if b.msg_type is not None else "?")
        if b.error is not None:
            rest = f"ERROR {b.error}"
        else:
            rest = _fields_text(b.message, b.relayed)
        wall = [wall_time_text(fr.wall_us) if fr.wall_us is not None else "-"] if with_wall else []
        cells = [
            str(fr.number),
            sim_time_text(fr.sim_ms),
            *wall,
            _link_text(fr.link),
            _direction_text(fr.direction),
            str(b.seq) if b.seq is not None else "-",
            name,
            _auth_text(b.auth),
        ]
        rows.append((cells, rest))
    widths = [max([len(h)] + [len(c[i]) for c, _ in rows]) for i, h in enumerate(header)]
    right = {0, 1, len(header) - 3}  # numbers and times line up on the right

    def line(cells: list[str], rest: str) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return ("  ".join(out) + "  " + rest).rstrip()

    lines = [line(header, "fields"), *(line(c, r) for c, r in rows)]
    errors = sum(1 for fr in frames if not fr.ok)
    lines.append(f"{len(frames)} frames, {errors} with errors")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- JSON


def _body_json(b: DecodedBody) -> dict[str, Any]:
    return {
        "msg_type": b.msg_type,
        "type": b.name,
        "seq": b.seq,
        "flags": b.flags,
        "auth": (
            {"key_id": b.auth.key_id, "role": b.auth.role_name, "counter": b.auth.counter, "tag": b.auth.tag.hex()}
            if b.auth is not None
            else None
        ),
        "fields": b.message.to_dict() if b.message is not None else None,
        "error": b.error,
        "relayed": _body_json(b.relayed) if b.relayed is not None else None,
    }


def frame_json(fr: DecodedFrame) -> dict[str, Any]:
    """One frame as JSON: enums in fields as lower-case names and bytes as hex (as
    Message.to_dict gives them, so `from_dict` takes them back)."""
    return {
        "number": fr.number,
        "sim_ms": fr.sim_ms,
        "wall_us": fr.wall_us,
        "wall_time": wall_time_text(fr.wall_us).replace(" ", "T") + "Z" if fr.wall_us is not None else None,
        "link": _link_text(fr.link) if isinstance(fr.link, CapLink) else fr.link,
        "direction": fr.direction.name.lower() if isinstance(fr.direction, Direction) else fr.direction,
        **_body_json(fr.body),
    }


def to_json(frames: Sequence[DecodedFrame], path: str | Path | None = None) -> dict[str, Any]:
    """The `thecal decode --json` document."""
    return {
        "capture": str(path) if path is not None else None,
        "count": len(frames),
        "errors": sum(1 for fr in frames if not fr.ok),
        "frames": [frame_json(fr) for fr in frames],
    }


# ---------------------------------------------------------------- command line


def run_decode(path: str, as_json: bool) -> int:
    """`thecal decode CAPTURE [--json]`: 0 when the capture was read (frames that do not
    decode are shown, not fatal), 2 when the file is not a readable Thecal capture (with
    --json, stdout then holds {"error": ..., "usage_error": true})."""
    try:
        frames = decode_capture(path)
    except CaptureError as e:
        print(f"thecal decode: {e}", file=sys.stderr)
        if as_json:  # the CLI contract: with --json, stdout holds one object, errors included
            print(json.dumps({"error": str(e), "usage_error": True}))
        return EXIT_UNREADABLE
    out = json.dumps(to_json(frames, path)) + "\n" if as_json else format_text(frames)
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:
        # `thecal decode big.pcap | head` closed the pipe: that is the reader's choice, not
        # an error. Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.decode", description="Decode a Thecal capture file.")
    p.add_argument("capture", help="pcap file written by `thecal emulator --capture`")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    args = p.parse_args(argv)
    return run_decode(args.capture, args.json)


if __name__ == "__main__":
    sys.exit(main())
