"""A frame that fails authentication costs its sender, never a key holder (SR-055).

There is no key lockout. A 128-bit tag cannot be guessed, so counting failures against a
key and locking it out only ever hurt the people holding it: five frames with a random
tag under the clinician's key id kept the real clinician's STOP out for ten minutes, and
one forged frame a minute denied most of a day's genuine STOPs and boluses. So a frame
with a good tag and a fresh counter is served whatever failed before, under its key or
any other. A failure (no trailer, a key id the pump does not hold, a bad tag, a replayed
counter) is answered with a NAK while the NAK budget of the key id it claims lasts, and
is dropped unanswered after that: answering costs the pump, and a sender that keeps
failing learns nothing more from a NAK.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .budget import Budget, take


class Answer(Enum):
    SERVE = "serve"  # authentic and fresh: on to the role check and the request
    NAK = "nak"  # refused, and told so
    DROP = "drop"  # refused without an answer: its key id's NAK budget is spent


@dataclass(frozen=True)
class FrameFacts:
    authentic: bool  # a good tag under a key the pump holds, and a counter above the last accepted
    now_ms: int
    nak_budget: Budget  # of the key id it claims (unsigned frames and ids the pump lacks share one)
    nak_burst: int
    nak_every_ms: int


def answer(f: FrameFacts) -> tuple[Answer, Budget]:
    """SR-055: serve an authentic fresh frame, always; answer a failure within its claimed
    key id's budget, else drop it. Returns the budget after."""
    if f.authentic:
        return Answer.SERVE, f.nak_budget
    budget, spent = take(f.nak_budget, f.now_ms, f.nak_burst, f.nak_every_ms)
    return (Answer.NAK if spent else Answer.DROP), budget
