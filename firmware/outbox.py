"""Effects leave the parts through here: messages to the pump, host events and answers,
event-log entries, and the names of the NVM records a change touched.

No part calls back up into the controller: each puts what it wants done here, and the
controller, at the end of handling one input, commits the touched records to NVM before
anything queued goes out on the pump link (so nothing the pump or the host is told can
be forgotten by a reset).
"""

from __future__ import annotations

from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import LogEvent
from protocol.messages import HostTx, Message

from .clock import Clock
from .eventlog import EventLog, LogRecord


class Outbox:
    def __init__(self, clock: Clock, log: EventLog) -> None:
        self.clock = clock
        self.log = log
        self.messages: list[Message] = []  # for the pump link, in order
        self.unsaved: list[LogRecord] = []  # log entries not yet in NVM
        self.touched: set[str] = set()  # NVM records to commit
        self._host_seq = 0
        # Signs answers and events under the pump key (SR-058); set by firmware/auth.py.
        self.signer: FrameSigner | None = None

    def send(self, msg: Message) -> None:
        self.messages.append(msg)

    def host_event(self, msg: Message) -> None:
        self._host_seq = (self._host_seq + 1) & 0xFFFF
        self.messages.append(HostTx(frame=codec.encode_to_body(msg, self._host_seq, self.signer)))

    def host_reply(self, msg: Message, seq: int, request_tag: bytes | None) -> None:
        """The answer to the request with `seq`, bound to its tag (None: it had none)."""
        signer = self.signer.bound(request_tag) if self.signer is not None else None
        self.messages.append(HostTx(frame=codec.encode_to_body(msg, seq, signer)))

    def record(self, event: LogEvent, arg0: int = 0, arg1: int = 0) -> None:
        """An event-log entry, stamped with the controller's time."""
        self.unsaved.append(self.log.add(self.clock.now_s, event, arg0, arg1))
        self.touched.add("log")

    def touch(self, *records: str) -> None:
        self.touched.update(records)

    def take_messages(self) -> list[Message]:
        out, self.messages = self.messages, []
        return out
