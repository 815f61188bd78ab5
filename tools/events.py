"""`thecal events`: the pump's unsolicited events (alarms raised and cleared, therapy
state changes, boluses started and finished) printed as they arrive, one a line, or as
JSON lines. Through the emulator's host socket it runs beside any other host program.

    {"event": "alarm_raised", "time_s": 86400, "alarm": "occlusion", "priority": "high"}
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections.abc import Callable
from typing import Any

from protocol.messages import Message
from tools.client import Client

POLL_S = 0.2  # how long one wait for bytes lasts (a --count or --wait is checked between)


def event_fields(msg: Message) -> dict[str, Any]:
    """An event as JSON: its name, then its fields, enums by their names in lower case."""
    out: dict[str, Any] = {"event": type(msg).NAME.lower()}
    for f in dataclasses.fields(msg):  # type: ignore[arg-type]
        v = getattr(msg, f.name)
        out[f.name] = v.name.lower() if isinstance(v, enum.Enum) else v
    return out


def event_line(msg: Message) -> str:
    d = event_fields(msg)
    name = d.pop("event")
    t = d.pop("time_s", None)
    day, rest = divmod(t, 86_400) if t is not None else (0, 0)
    when = f"day {day} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}" if t is not None else "-"
    return f"{when}  {name}  " + " ".join(f"{k}={v}" for k, v in d.items())


def follow(
    client: Client,
    emit: Callable[[str], None],
    as_json: bool,
    forever: bool,
    count: int | None,
    wait_s: float,
) -> int:
    """Print events until `count` have come, or (unless `forever`) wait_s has passed with
    none. Returns how many were printed. PortLost ends it when the emulator goes."""
    printed = 0
    deadline = time.monotonic() + wait_s
    while count is None or printed < count:
        if not forever and time.monotonic() >= deadline:
            break
        for ev in client.iter_events(POLL_S):
            emit(json.dumps(event_fields(ev)) if as_json else event_line(ev))
            printed += 1
            deadline = time.monotonic() + wait_s
            if count is not None and printed >= count:
                break
    return printed
