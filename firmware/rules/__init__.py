"""The safety rules: each a pure function over frozen facts, one file per rule, its
docstring naming the safety requirements (docs/safety-requirements.md) it implements.

Nothing here holds state, reads a clock or sends a message. Request handling
(firmware/host.py), the delivery engine and the guard gather the facts, call a rule
once and apply its answer; docs/architecture.md has the table rule -> module -> SR ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import NakReason


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the NAK reason, the field at fault ('' when none) and a
    sentence naming the limit it broke and what to do."""

    reason: NakReason
    field: str
    detail: str


def out_of_range(field: str, detail: str) -> Refusal:
    return Refusal(NakReason.OUT_OF_RANGE, field, detail)


def wrong_state(detail: str, field: str = "") -> Refusal:
    return Refusal(NakReason.WRONG_STATE, field, detail)
