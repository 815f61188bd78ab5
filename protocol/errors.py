"""The error types the protocol package raises. Input bytes never raise: decoders
count and yield errors instead. These are for bad arguments and bad payloads."""

from __future__ import annotations

from .codes import NakReason


class ProtocolError(ValueError):
    """Base of every error the protocol package raises on purpose."""


class EncodeError(ProtocolError):
    """A message could not be encoded: a missing or unknown field, a value of the wrong
    type or out of the field's range. `field` names the field (dotted for nested)."""

    def __init__(self, message_name: str, field: str | None, detail: str) -> None:
        self.message_name = message_name
        self.field = field
        self.detail = detail
        where = f"{message_name}.{field}" if field else message_name
        super().__init__(f"cannot encode {where}: {detail}")


class DecodeError(ProtocolError):
    """A frame passed its CRC but its payload is not a valid message of its type.

    `reason` is the NAK reason a receiver should answer with, `field` the field at fault
    (None when the payload is simply the wrong length)."""

    def __init__(self, message_name: str, reason: NakReason, field: str | None, detail: str) -> None:
        self.message_name = message_name
        self.reason = reason
        self.field = field
        self.detail = detail
        where = f"{message_name}.{field}" if field else message_name
        super().__init__(f"cannot decode {where}: {detail}")
