"""Command ids accepted: STATUS reports the last, and a repeat of a recent one is refused
(rules/command_id.py), so a host that lost an answer asks instead of sending again."""

from __future__ import annotations

from collections import deque

from .outbox import Outbox
from .rules import Refusal, command_id

RECENT_COMMANDS = 32


class Commands:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.last_id = 0
        self.recent: deque[int] = deque(maxlen=RECENT_COMMANDS)

    def refusal(self, cid: int) -> Refusal | None:
        return command_id.refusal(cid, self.recent)

    def accept(self, cid: int) -> None:
        self.last_id = cid
        self.recent.append(cid)
        self.outbox.touch("limits")
