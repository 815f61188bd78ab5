"""Thecal wire protocol: framing, messages and authentication, defined once for the
controller, the emulator and the host tools. See protocol/SPEC.md."""

from .codec import MessageDecoder, Received, Rejected, decode, encode, encode_to_body, nak_for
from .codes import *  # noqa: F403 - the codes are the protocol's vocabulary
from .errors import DecodeError, EncodeError, ProtocolError
from .framing import (
    MAX_ENCODED,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    encode_frame,
)
from .messages import BY_NAME, REGISTRY

__all__ = [
    "BY_NAME",
    "MAX_ENCODED",
    "MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "REGISTRY",
    "DecodeError",
    "EncodeError",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameErrorKind",
    "MessageDecoder",
    "ProtocolError",
    "Received",
    "Rejected",
    "decode",
    "encode",
    "encode_frame",
    "encode_to_body",
    "nak_for",
]
