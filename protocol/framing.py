"""Frames on a byte stream: header, payload, optional auth trailer, CRC-32, COBS.

Wire form of one frame: 0x00, COBS(body), 0x00. The delimiter before *and* after each
frame lets a receiver resynchronise at the next delimiter after any garbage, and makes
garbage that happens to precede a frame end at that frame's leading delimiter.

body (little-endian):
    version u8 | msg_type u8 | flags u8 | seq u16 | payload_len u16 | payload
    | [key_id u8 | counter u64 | tag 16 bytes]   (when flags has AUTH)
    | crc32 u32  (CRC-32/ISO-HDLC over everything before it)

This module is the hot path: plain struct and zlib, no construct.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from enum import Enum
from typing import NamedTuple

from cobs import cobs

from .codes import FrameFlag

PROTOCOL_VERSION = 2
# Versions whose header (the same seven bytes) a receiver still reads, to refuse their
# frames with a NAK in the sender's own version naming the one it speaks; frames of any
# other version are dropped (their layout is not known).
OLDER_VERSIONS = frozenset({1})
HEADER = struct.Struct("<BBBHH")
HEADER_SIZE = HEADER.size  # 7
CRC_SIZE = 4
TAG_SIZE = 16  # HMAC-SHA256 truncated to 128 bits
AUTH_PREFIX = struct.Struct("<BQ")  # key_id, counter
TRAILER_SIZE = AUTH_PREFIX.size + TAG_SIZE  # 25
# The largest payload any message of this version has: HOST_RX relaying a whole host-link
# body (u64 time_ms, u16 length, HOST_MAX_BODY bytes). No headroom: a larger message needs
# a new protocol version (tests/test_spec.py holds this to the message declarations,
# which import this module, so it cannot be computed from them here).
MAX_PAYLOAD = 1070
MAX_BODY = HEADER_SIZE + MAX_PAYLOAD + TRAILER_SIZE + CRC_SIZE
# COBS adds one byte per 254 and one more; a segment longer than this is dropped unread.
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 1
MIN_BODY = HEADER_SIZE + CRC_SIZE
KNOWN_FLAGS = int(FrameFlag.AUTH)
_AUTH = int(FrameFlag.AUTH)  # a plain int: IntFlag arithmetic is slow on the hot path
SEQ_MODULO = 1 << 16

_CRC = struct.Struct("<I")
_crc32 = zlib.crc32
_cobs_encode = cobs.encode
_cobs_decode = cobs.decode
_CobsError = cobs.DecodeError
_tuple_new = tuple.__new__
# CRC-32 run over a body *with* its little-endian CRC appended always gives this residue,
# so the check needs no slice of the body.
CRC_RESIDUE = 0x2144DF1C

# Signs header+payload+key_id+counter; returns key_id+counter+tag (TRAILER_SIZE bytes).
Signer = Callable[[bytes], bytes]


class FrameErrorKind(Enum):
    BAD_COBS = "bad_cobs"
    BAD_CRC = "bad_crc"
    OVERSIZE = "oversize"
    BAD_LENGTH = "bad_length"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FLAGS = "bad_flags"


# Frame, AuthTrailer and FrameError are immutable NamedTuples rather than frozen
# dataclasses: one is built per frame on the hot path, and a NamedTuple costs a fifth.
class AuthTrailer(NamedTuple):
    key_id: int
    counter: int
    tag: bytes


class Frame(NamedTuple):
    """One intact frame: its CRC held and its header is consistent."""

    msg_type: int
    flags: int
    seq: int
    payload: bytes
    auth: AuthTrailer | None = None
    # The bytes the auth tag covers (header, payload, key id, counter); b"" without auth.
    signed: bytes = b""


class FrameError(NamedTuple):
    """A segment between delimiters that is not an intact frame.

    msg_type and seq are filled in only when the CRC held (the header is then
    trustworthy), so a receiver can NAK an unknown type or a bad length."""

    kind: FrameErrorKind
    msg_type: int | None = None
    seq: int | None = None
    flags: int | None = None
    version: int | None = None  # the header's, when the CRC held (UNKNOWN_VERSION)


def encode_body(msg_type: int, seq: int, payload: bytes, signer: Signer | None = None) -> bytes:
    """The frame body (before COBS) with its CRC; `signer` adds the auth trailer."""
    plen = len(payload)
    if plen > MAX_PAYLOAD:
        raise ValueError(f"payload of {plen} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    if signer is None:
        head = HEADER.pack(PROTOCOL_VERSION, msg_type, 0, seq & 0xFFFF, plen) + payload
    else:
        head = HEADER.pack(PROTOCOL_VERSION, msg_type, _AUTH, seq & 0xFFFF, plen) + payload
        head += signer(head)
    return head + _CRC.pack(_crc32(head))


def encode_frame(msg_type: int, seq: int, payload: bytes, signer: Signer | None = None) -> bytes:
    """Wire bytes of one frame: delimiter, COBS(body), delimiter."""
    return b"\x00" + _cobs_encode(encode_body(msg_type, seq, payload, signer)) + b"\x00"


def wrap_body(body: bytes) -> bytes:
    """Wire bytes for a body that is already complete (e.g. one carried in a relay)."""
    return b"\x00" + _cobs_encode(body) + b"\x00"


def in_version(body: bytes, version: int) -> bytes:
    """The same body stamped with another protocol version (its CRC made again): a NAK
    to a sender of an older version, in a frame that sender can read."""
    head = bytes([version]) + body[1:-CRC_SIZE]
    return head + _CRC.pack(_crc32(head))


def frame_body(frame: Frame) -> bytes:
    """The complete body of an intact frame (header to CRC), e.g. to relay or capture it."""
    head = HEADER.pack(PROTOCOL_VERSION, frame.msg_type, frame.flags, frame.seq, len(frame.payload)) + frame.payload
    if frame.auth is not None:
        head += AUTH_PREFIX.pack(frame.auth.key_id, frame.auth.counter) + frame.auth.tag
    return head + _CRC.pack(_crc32(head))


def parse_body(body: bytes, known_types: frozenset[int] | set[int] | None = None) -> Frame | FrameError:
    """Check one decoded body; never raises."""
    n = len(body)
    if n < MIN_BODY:
        return FrameError(FrameErrorKind.BAD_LENGTH)
    if n > MAX_BODY:
        return FrameError(FrameErrorKind.OVERSIZE)
    if _crc32(body) != CRC_RESIDUE:
        return FrameError(FrameErrorKind.BAD_CRC)
    version, msg_type, flags, seq, plen = HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        return FrameError(FrameErrorKind.UNKNOWN_VERSION, msg_type, seq, flags, version)
    if flags & ~KNOWN_FLAGS:
        return FrameError(FrameErrorKind.BAD_FLAGS, msg_type, seq, flags)
    if plen > MAX_PAYLOAD:
        return FrameError(FrameErrorKind.OVERSIZE, msg_type, seq, flags)
    end = HEADER_SIZE + plen
    if flags & _AUTH:
        if end + TRAILER_SIZE + CRC_SIZE != n:
            return FrameError(FrameErrorKind.BAD_LENGTH, msg_type, seq, flags)
        key_id, counter = AUTH_PREFIX.unpack_from(body, end)
        signed_end = end + AUTH_PREFIX.size
        auth = AuthTrailer(key_id, counter, body[signed_end : signed_end + TAG_SIZE])
        signed = body[:signed_end]
    else:
        if end + CRC_SIZE != n:
            return FrameError(FrameErrorKind.BAD_LENGTH, msg_type, seq, flags)
        auth = None
        signed = b""
    if known_types is not None and msg_type not in known_types:
        return FrameError(FrameErrorKind.UNKNOWN_TYPE, msg_type, seq, flags)
    return _tuple_new(Frame, (msg_type, flags, seq, body[HEADER_SIZE:end], auth, signed))


class FrameDecoder:
    """Streaming decoder: feed it bytes in any chunks, get frames and errors back.

    It never raises on input bytes, holds at most MAX_ENCODED bytes of a partial frame,
    and counts every error kind in `errors` (plus `frames` and `bytes_in`)."""

    __slots__ = ("_buf", "_discarding", "_known", "bytes_in", "errors", "frames")

    def __init__(self, known_types: Iterable[int] | None = None) -> None:
        self._buf = b""
        self._discarding = False
        self._known = frozenset(known_types) if known_types is not None else None
        self.errors: dict[FrameErrorKind, int] = dict.fromkeys(FrameErrorKind, 0)
        self.frames = 0
        self.bytes_in = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def reset(self) -> None:
        """Drop any partial frame (e.g. after the port was reopened)."""
        self._buf = b""
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        if not data:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        self.bytes_in += len(data)
        parts = data.split(b"\x00")
        tail = parts.pop()  # bytes after the last delimiter: an unfinished segment
        if parts:
            first = parts[0]
            if self._discarding:
                # The end of a segment that outgrew the buffer: count it once.
                self._discarding = False
                self._buf = b""
                self._error(out, FrameError(FrameErrorKind.OVERSIZE))
                first = b""
            elif self._buf:
                first = self._buf + first
                self._buf = b""
            if first:
                self._segment(first, out)
            for seg in parts[1:]:
                if seg:
                    self._segment(seg, out)
        if tail:
            if self._discarding:
                return out
            buf = self._buf + tail if self._buf else tail
            if len(buf) > MAX_ENCODED:
                # Enforced before any decoding: stop buffering until the next delimiter.
                self._buf = b""
                self._discarding = True
            else:
                self._buf = buf
        return out

    def _error(self, out: list, err: FrameError) -> None:
        self.errors[err.kind] += 1
        out.append(err)

    def _segment(self, seg: bytes, out: list) -> None:
        if len(seg) > MAX_ENCODED:
            self._error(out, FrameError(FrameErrorKind.OVERSIZE))
            return
        try:
            body = _cobs_decode(seg)
        except _CobsError:
            self._error(out, FrameError(FrameErrorKind.BAD_COBS))
            return
        item = parse_body(body, self._known)
        if type(item) is Frame:
            self.frames += 1
            out.append(item)
        else:
            self._error(out, item)
