"""What tools.client raises and returns when a request does not simply succeed (each
importable from tools.client too). The CLI maps them to its exit statuses: Refused 3,
NoAnswer and Unauthentic 4."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import NakReason
from protocol.messages import Message, Nak, StatusAck


class ClientError(Exception):
    """Base of the client's errors."""


class NoAnswer(ClientError):
    """No response within the timeout, or the port went away (CLI exit status 4)."""


class PortLost(NoAnswer):
    """The port could not be opened, or went away (the emulator exited)."""


class NotAccepted(NoAnswer):
    """A command's answer was lost and STATUS shows the pump did not accept it: nothing
    changed. Sending it again (as a new command, with a new id) is the caller's decision."""

    def __init__(self, message: str, command_id: int, status: StatusAck) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.status = status


class Uncertain(NoAnswer):
    """A command's answer was lost and STATUS did not answer either: whether the pump
    accepted it is unknown. Ask STATUS (last_command_id) before sending anything again."""

    def __init__(self, message: str, command_id: int) -> None:
        super().__init__(message)
        self.command_id = command_id


class Unauthentic(ClientError):
    """An answer or event failed authentication (SR-058): spoofed or damaged on the way,
    and not acted on (CLI exit status 4). Not a NoAnswer: a command whose answer was
    forged is not resolved by asking STATUS behind the caller's back."""


class EventTimeout(ClientError):
    """expect_event: simulated time ran out with no matching event."""


class Refused(ClientError):
    """The pump answered NAK (CLI exit status 3)."""

    def __init__(self, nak: Nak) -> None:
        self.nak = nak
        self.reason: NakReason = nak.reason
        self.field = nak.field
        super().__init__(f"{nak.reason.name}" + (f" ({nak.field})" if nak.field else "") + f": {nak.detail}")


@dataclass(frozen=True)
class Confirmed:
    """A command whose answer was lost, and which STATUS shows the pump accepted (its id
    is the last accepted). The ACK's own fields are not known; the status after it is."""

    request: Message
    command_id: int
    status: StatusAck
