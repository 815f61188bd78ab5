"""Command ids: a dosing command is never executed twice (SR-012).

Every command that changes therapy carries an id; a repeat of one of the last ids
accepted is refused, so a host that lost an answer and resends blindly cannot double a
bolus. STATUS reports the last id accepted so the host can ask instead.
"""

from __future__ import annotations

from collections.abc import Collection

from . import Refusal, out_of_range, wrong_state


def refusal(command_id: int, recent_ids: Collection[int]) -> Refusal | None:
    """SR-012: why a command with this id may not run (0, or already accepted)."""
    if command_id == 0:
        return out_of_range("command_id", "command ids start at 1")
    if command_id in recent_ids:
        return wrong_state(f"command {command_id} was already accepted: ask STATUS", "command_id")
    return None
