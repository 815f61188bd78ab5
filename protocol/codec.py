"""Messages to wire bytes and back: the one entry point links and tools use."""

from __future__ import annotations

from typing import NamedTuple

from .codes import NakReason
from .errors import DecodeError, EncodeError
from .framing import Frame, FrameDecoder, FrameError, Signer, encode_body, encode_frame
from .messages import ALL_TYPES, REGISTRY, Message, Nak
from .schema import family_of

_registry_get = REGISTRY.get
_tuple_new = tuple.__new__


def encode(msg: Message, seq: int, signer: Signer | None = None) -> bytes:
    """Wire bytes of one message (delimiters included). Raises EncodeError on bad fields."""
    cls = type(msg)
    if not isinstance(msg, Message):
        raise EncodeError(cls.__name__, None, "not a protocol message")
    return encode_frame(cls.TYPE, seq, cls._fast_build(msg), signer)


def encode_to_body(msg: Message, seq: int, signer: Signer | None = None) -> bytes:
    """The frame body (no COBS, no delimiters), as carried inside HOST_RX / HOST_TX."""
    if not isinstance(msg, Message):
        raise EncodeError(type(msg).__name__, None, "not a protocol message")
    return encode_body(msg.TYPE, seq, msg._fast_build(msg), signer)


def decode(frame: Frame) -> Message:
    """The message in an intact frame. Raises DecodeError (with the NAK reason to answer)."""
    cls = _registry_get(frame.msg_type)
    if cls is None:
        raise DecodeError(f"0x{frame.msg_type:02X}", NakReason.UNKNOWN_TYPE, None, "unknown message type")
    return cls._fast_parse(frame.payload)


class Received(NamedTuple):
    """One intact frame and its message."""

    frame: Frame
    message: Message


class Rejected(NamedTuple):
    """A frame whose CRC held but whose payload is not a valid message."""

    frame: Frame
    error: DecodeError


class MessageDecoder:
    """Bytes in, messages out: a FrameDecoder plus payload decoding.

    feed() returns Received, Rejected (answer with a NAK) and FrameError items; it never
    raises on input bytes. `rejected` counts payload errors."""

    def __init__(self, known_types=ALL_TYPES) -> None:
        # Only types with a declared message can be decoded: anything else must come out
        # as FrameError UNKNOWN_TYPE (with its seq, to NAK), never reach REGISTRY[...].
        known = ALL_TYPES if known_types is None else frozenset(known_types) & ALL_TYPES
        self.frames = FrameDecoder(known)
        self.rejected = 0

    def feed(self, data: bytes) -> list[Received | Rejected | FrameError]:
        out: list[Received | Rejected | FrameError] = []
        for item in self.frames.feed(data):
            if type(item) is Frame:
                try:
                    out.append(_tuple_new(Received, (item, REGISTRY[item.msg_type]._fast_parse(item.payload))))
                except DecodeError as e:
                    self.rejected += 1
                    out.append(Rejected(item, e))
            else:
                out.append(item)
        return out


def nak_for(request_type: int, reason: NakReason, field: str = "", detail: str = "") -> Nak:
    """A NAK with text clipped to what the wire allows (the reason code is what matters)."""
    return Nak(
        request_type=request_type & 0xFF,
        reason=reason,
        field=_clip(field, 32),
        detail=_clip(detail, 160),
    )


def _clip(text: str, limit: int) -> str:
    raw = text.encode("utf-8")[:limit]
    return raw.decode("utf-8", errors="ignore")


__all__ = [
    "MessageDecoder",
    "Received",
    "Rejected",
    "decode",
    "encode",
    "encode_to_body",
    "family_of",
    "nak_for",
]
