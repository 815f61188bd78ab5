"""Scenario files: a therapy timeline in TOML that runs as a test, written without Python.

    name = "patient bolus lockout"
    program = "../morphine.toml"            # a therapy file, relative to this one, or a [program] table
    fill = "12 mL"                          # the pump's fill at implant, recorded in the firmware
    start = true                            # start therapy after set-up (default: when there is a program)

    [pump_model]                            # optional: figures of emulator/model.py
    stroke_error_sd_ppm = 0

    [[step]]
    at = "0s"                               # pump time (simulated); or `after = "30min"` from the step before
    note = "programming starts a lockout"
    action = "bolus"                        # a `thecal` pump command, as typed on the command line
    expect = { granted = false, reason = "lockout", available_in_s = "2h" }

    [[step]]
    at = "2h"
    action = "bolus"
    expect = { granted = true }
    expect_status = { state = "running", boluses_24h = 1, alarms = [] }
    expect_log = { contains = [{ type = "bolus_started", kind = "patient" }] }
    expect_truth = { delivered_ng = { min = "0.1 mg" } }

An action is the `thecal` command that would do it (README "The CLI contract") and runs
through the same code; `expect` is checked against that command's `--json` object. A
refused command (a NAK) fails the step unless `expect` names `refused`. Time moves only
with `at` / `after` (`sim advance` and `sim speed` are not actions). `expect_status` and
`expect_truth` use the keys of `thecal status --json` and `thecal sim truth --json`;
`expect_log` looks at the log entries (as `thecal log --json` names them) written since
the step before (`since = "boot"`: the whole log).

An expected value is: a plain value (equal; numbers may carry a unit when the key's name
ends in one: `_ul`, `_nl`, `_ml`, `_ng`, `_s`, `_ms`, `_ug_per_ml`, `_ng_per_day`); a list
(exactly these items, in order); or a table of checks, all of which must hold: `min`,
`max`, `not`, `one_of`, `none` (true: the value is null), `contains`, `excludes` (items of
a list) and `count` (its length). A list item is a table of its keys (`{ id = "occlusion",
acknowledged = false }`) or, as short hand, a string naming it by its main key (an
alarm's `id`, a log entry's `type`, a tone's `pattern`).

Everything is checked when the file is loaded: an unknown key, a unit typo, a name that
is not an alarm (or state, log type ...), a step going back in time, an action the CLI
would not accept. Each is a ScenarioError naming the file, the step and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from emulator.model import ModelError, PumpModel
from protocol import codes
from protocol.messages import LogEntry, Program, SimGroundTruthAck, StatusAck

from . import cli, units
from .client import ClientError, Refused
from .hil import Pump, RoleClient
from .programfile import ProgramFileError, file_field, load_program, parse_program

SUFFIX = ".scenario.toml"

_TOP_KEYS = ("name", "description", "program", "fill", "start", "seed", "pump_model", "step")
_STEP_KEYS = ("at", "after", "note", "action", "expect", "expect_status", "expect_truth", "expect_log")
_OPERATORS = ("min", "max", "not", "one_of", "none", "contains", "excludes", "count")
_LOG_KEYS = ("since", "contains", "excludes", "count")
_LOG_SINCE = ("previous_step", "boot")

# Scenario actions are `thecal` commands; these are the ones that act on a pump without
# moving its time (time is the steps' `at`).
_NOT_ACTIONS = {
    "sim advance": "time moves with the steps' `at` (or `after`), not with an action",
    "sim speed": "a scenario runs in lockstep; time moves with the steps' `at`",
}
# The connection is the scenario's own pump: options that would point elsewhere are refused.
_CONNECTION_OPTIONS = {"state_dir": "--state-dir", "port": "--port", "keys": "--keys", "timeout": "--timeout"}

# The --json keys of each command (README "The CLI contract"); a refused command has
# _REFUSED_KEYS instead, and any command may add answer_lost.
_RESULT_KEYS: dict[str, tuple[str, ...]] = {
    "info": ("serial", "firmware_version", "protocol_version", "reservoir_capacity_ul", "stroke_nl"),
    "program": ("accepted", "command_id"),
    "start": ("state", "command_id"),
    "stop": ("state", "command_id"),
    "bolus": ("granted", "reason", "dose_ng", "duration_s", "available_in_s", "command_id"),
    "clinician-bolus": ("dose_ng", "duration_s", "volume_ul", "command_id"),
    "prime": ("volume_ul", "command_id"),
    "catheter-replaced": ("catheter_state", "catheter_volume_ul", "command_id"),
    "refill": ("expected_ul", "withdrawn_ul", "reservoir_ul", "discrepancy_ul", "command_id"),
    "refill begin": ("expected_ul", "command_id"),
    "refill complete": ("reservoir_ul", "discrepancy_ul", "command_id"),
    "ack": ("acknowledged",),
    "log": ("events",),
    "sim fault": ("fault", "on", "value", "rate_ppm", "link"),
    "sim power-cycle": ("boot_count",),
    "sim refill": ("withdrawn_ul", "reservoir_ul", "pocket_fill"),
    "sim replace-catheter": ("volume_ul",),
}
_REFUSED_KEYS = ("refused", "reason", "field", "error", "accepted", "wire_field")


class ScenarioError(ValueError):
    """A scenario file that cannot be run: names the file, where in it, and what is wrong."""

    def __init__(self, path: str | Path, where: str, message: str) -> None:
        self.path = Path(path)
        self.where = where
        self.message = message
        super().__init__(f"{path}: {where}: {message}" if where else f"{path}: {message}")


class ScenarioFailure(AssertionError):
    """A scenario ran and did not go as its file says: the message names the step, its
    time, and each expectation that did not hold, expected against actual."""


# ==================================================================== vocabularies


def _names(enum_cls: type[enum.Enum]) -> tuple[str, ...]:
    return tuple(m.name.lower() for m in enum_cls)


@cache
def _vocabularies() -> dict[str, tuple[str, ...]]:
    """The words a key can hold, so a typo ("runing", "occlussion") fails at load time."""
    bolus_reasons = tuple(r for r in cli.BOLUS_REASONS.values() if r is not None)
    return {
        "state": _names(codes.TherapyState),
        "old_state": _names(codes.TherapyState),
        "new_state": _names(codes.TherapyState),
        "id": _names(codes.AlarmId),
        "alarm": _names(codes.AlarmId),
        "priority": _names(codes.Priority),
        "pattern": _names(codes.BeepPattern),
        "type": _names(codes.LogEvent),
        "reason": bolus_reasons + _names(codes.NakReason),
        "decision": ("granted", *bolus_reasons),
        "kind": _names(codes.BolusKind),
        "outcome": _names(codes.BolusOutcome),
        "result": _names(codes.TimedBolusOutcome),
        "motor": _names(codes.MotorState),
        "role": _names(codes.Role),
        "reset_cause": _names(codes.ResetCause),
        "fault": cli.FAULT_NAMES,
        "link": ("host", "pump", "both"),
        "catheter_state": _names(codes.CatheterState),
        "old_catheter_state": _names(codes.CatheterState),
    }


def _zero(cls: type) -> Any:
    """A message with every field zero, empty or its enum's first member."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        t = f.type
        if isinstance(t, type) and issubclass(t, enum.Enum):
            values[f.name] = next(iter(t))
        elif t is bool:
            values[f.name] = False
        elif t is str:
            values[f.name] = ""
        elif t is bytes:
            values[f.name] = b""
        elif t is int:
            values[f.name] = 0
        else:
            values[f.name] = ()
    return cls(**values)


class _TruthOnly:
    """Just enough of a Client for the CLI's `sim truth` mapping, to learn its keys."""

    def ground_truth(self, tones_from: int = 0) -> SimGroundTruthAck:
        return _zero(SimGroundTruthAck)

    def tones(self, tones_from: int = 0) -> list:
        return []


@cache
def status_keys() -> tuple[str, ...]:
    """The keys of `thecal status --json`, from the CLI's own mapping."""
    return tuple(cli.status_dict(_zero(StatusAck)))


@cache
def truth_keys() -> tuple[str, ...]:
    """The keys of `thecal sim truth --json`, from the CLI's own mapping."""
    return tuple(cli._sim_truth(_TruthOnly(), None, None).data)


@cache
def log_keys_by_type() -> dict[str, tuple[str, ...]]:
    """The keys of a `thecal log --json` entry, per entry type."""
    out = {}
    for ev in codes.LogEvent:
        entry = _zero(LogEntry)
        out[ev.name.lower()] = tuple(cli._log_fields(replace(entry, event=ev)))
    return out


@cache
def _plain_number_keys() -> frozenset[str]:
    """Keys that hold a number without a unit in their name: a string there is a mistake."""
    samples = {**cli.status_dict(_zero(StatusAck)), **cli._sim_truth(_TruthOnly(), None, None).data}
    numbers = {k for k, v in samples.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return frozenset({*numbers, "command_id", "boot_count", "seq", "arg0", "arg1", "rate_ppm"})


@dataclass(frozen=True)
class _RecordSchema:
    """A list whose items are JSON objects: their keys, and the key a bare string names."""

    keys: tuple[str, ...]
    primary: str
    keys_by_type: Mapping[str, tuple[str, ...]] | None = None  # log entries: per `type`


@cache
def _records() -> dict[str, _RecordSchema]:
    by_type = log_keys_by_type()
    all_log = tuple(dict.fromkeys(k for keys in by_type.values() for k in keys))
    return {
        "alarms": _RecordSchema(
            ("id", "priority", "acknowledged", "condition_present", "silenced", "needs_reset"), "id"
        ),
        "tones": _RecordSchema(("time_s", "pattern"), "pattern"),
        "acknowledged": _RecordSchema(
            ("id", "still_active", "condition_present", "priority", "needs_reset", "state"), "id"
        ),
        "events": _RecordSchema(all_log, "type", by_type),
    }


# ==================================================================== expectations


def _show(value: Any) -> str:
    if isinstance(value, Fraction):
        return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"
    return json.dumps(value, default=str)


def _number_of(actual: Any) -> Fraction | None:
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        return None
    # str() of a float is its shortest decimal: 0.1 (uL) compares equal to 1/10 exactly.
    return Fraction(str(actual)) if isinstance(actual, float) else Fraction(actual)


class Matcher:
    """One expectation on one value: check() gives None when it holds, else why not."""

    def check(self, actual: Any) -> str | None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Equals(Matcher):
    value: bool | str | Fraction

    def check(self, actual: Any) -> str | None:
        v = self.value
        if isinstance(v, bool):
            ok = isinstance(actual, bool) and actual is v
        elif isinstance(v, Fraction):
            ok = _number_of(actual) == v
        else:
            ok = actual == v
        return None if ok else f"got {_show(actual)}"

    def describe(self) -> str:
        return _show(self.value)


@dataclass(frozen=True)
class Bound(Matcher):
    op: str  # "min" or "max"
    value: Fraction

    def check(self, actual: Any) -> str | None:
        n = _number_of(actual)
        if n is None:
            return f"got {_show(actual)}, not a number"
        ok = n >= self.value if self.op == "min" else n <= self.value
        return None if ok else f"got {_show(actual)}"

    def describe(self) -> str:
        return f"{'>=' if self.op == 'min' else '<='} {_show(self.value)}"


@dataclass(frozen=True)
class Not(Matcher):
    inner: Matcher

    def check(self, actual: Any) -> str | None:
        return f"got {_show(actual)}" if self.inner.check(actual) is None else None

    def describe(self) -> str:
        return f"not {self.inner.describe()}"


@dataclass(frozen=True)
class OneOf(Matcher):
    options: tuple[Matcher, ...]

    def check(self, actual: Any) -> str | None:
        return None if any(o.check(actual) is None for o in self.options) else f"got {_show(actual)}"

    def describe(self) -> str:
        return "one of " + ", ".join(o.describe() for o in self.options)


@dataclass(frozen=True)
class IsNone(Matcher):
    none: bool

    def check(self, actual: Any) -> str | None:
        return None if (actual is None) == self.none else f"got {_show(actual)}"

    def describe(self) -> str:
        return "null" if self.none else "not null"


@dataclass(frozen=True)
class Record(Matcher):
    """A JSON object whose named keys each meet their expectation."""

    fields: tuple[tuple[str, Matcher], ...]

    def check(self, actual: Any) -> str | None:
        if not isinstance(actual, dict):
            return f"got {_show(actual)}"
        for key, m in self.fields:
            if key not in actual or m.check(actual[key]) is not None:
                return f"got {_show(actual)}"
        return None

    def describe(self) -> str:
        return "{" + ", ".join(f"{k}: {m.describe()}" for k, m in self.fields) + "}"


def _as_list(actual: Any) -> list | None:
    return actual if isinstance(actual, list) else None


@dataclass(frozen=True)
class Items(Matcher):
    """Exactly these items, in order."""

    items: tuple[Matcher, ...]

    def check(self, actual: Any) -> str | None:
        got = _as_list(actual)
        if got is None or len(got) != len(self.items):
            return f"got {_show(actual)}"
        return None if all(m.check(a) is None for m, a in zip(self.items, got, strict=True)) else f"got {_show(actual)}"

    def describe(self) -> str:
        return "[" + ", ".join(m.describe() for m in self.items) + "]"


@dataclass(frozen=True)
class Contains(Matcher):
    """Each of these matches some item (excludes=True: none matches any item)."""

    items: tuple[Matcher, ...]
    excludes: bool = False

    def check(self, actual: Any) -> str | None:
        got = _as_list(actual)
        if got is None:
            return f"got {_show(actual)}, not a list"
        for m in self.items:
            found = [a for a in got if m.check(a) is None]
            if self.excludes and found:
                return f"found {_show(found[0])}"
            if not self.excludes and not found:
                return f"no item is {m.describe()} in {_show(got)}"
        return None

    def describe(self) -> str:
        return ("excludes " if self.excludes else "contains ") + ", ".join(m.describe() for m in self.items)


@dataclass(frozen=True)
class Count(Matcher):
    inner: Matcher

    def check(self, actual: Any) -> str | None:
        got = _as_list(actual)
        if got is None:
            return f"got {_show(actual)}, not a list"
        return None if self.inner.check(len(got)) is None else f"got {len(got)} items: {_show(got)}"

    def describe(self) -> str:
        return f"count {self.inner.describe()}"


@dataclass(frozen=True)
class AllOf(Matcher):
    parts: tuple[Matcher, ...]

    def check(self, actual: Any) -> str | None:
        for p in self.parts:
            why = p.check(actual)
            if why is not None:
                return why
        return None

    def describe(self) -> str:
        return " and ".join(p.describe() for p in self.parts)


# -------------------------------------------------------------------- compiling


class _Bad(Exception):
    """Raised while compiling an expectation; ScenarioError adds the file."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


_DURATION_PART = re.compile(r"\s*((?:\d[\d_]*(?:\.\d*)?|\.\d+)\s*[a-zA-Z]+)")


def parse_time_ms(text: Any) -> int:
    """A duration as tools.units reads it, or several added up as people write them and
    as units.format_duration prints them: '1h 30min', '1h30min', '2d 3h'. UnitError
    naming the text otherwise."""
    if isinstance(text, str):
        parts = []
        pos = 0
        while (m := _DURATION_PART.match(text, pos)) is not None:
            parts.append(m.group(1))
            pos = m.end()
        if len(parts) > 1 and not text[pos:].strip():
            try:
                return sum(units.parse_duration_ms(p) for p in parts)
            except units.UnitError as e:
                why = str(e).split(": ", 1)[1].rsplit("; write", 1)[0]
                raise units.UnitError(text, e.what, e.accepted, f"in {e.text!r}: {why}") from None
    return units.parse_duration_ms(text)


def _unit_parser(key: str) -> Callable[[str], Fraction] | None:
    """How a quantity with a unit reads for this key, by the unit its name ends in."""
    ms = parse_time_ms
    table: list[tuple[str, Callable[[str], Fraction]]] = [
        ("_ug_per_ml", lambda t: Fraction(units.parse_concentration_ng_per_ml(t), 1000)),
        ("_ng_per_day", lambda t: Fraction(units.parse_rate_ng_per_day(t))),
        ("_ul", lambda t: Fraction(units.parse_volume_nl(t), 1000)),
        ("_nl", lambda t: Fraction(units.parse_volume_nl(t))),
        ("_ml", lambda t: Fraction(units.parse_volume_nl(t), 1_000_000)),
        ("_ng", lambda t: Fraction(units.parse_dose_ng(t))),
        ("_ms", lambda t: Fraction(ms(t))),
        ("_s", lambda t: Fraction(ms(t), 1000)),
    ]
    for suffix, parse in table:
        if key.endswith(suffix):
            return parse
    return None


def _number(value: Any, key: str, where: str) -> Fraction:
    if isinstance(value, bool):
        raise _Bad(where, f"expects a number, not {_show(value)}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(where, f"{value} is not a number to compare with")
        return Fraction(str(value))
    if isinstance(value, str):
        parse = _unit_parser(key)
        if parse is None:
            raise _Bad(where, f"{key} is a plain number: write {value!r} without quotes or unit")
        # Differences (a refill's discrepancy) can be negative; units reads no sign.
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        try:
            return sign * parse(text.removeprefix("-"))
        except units.UnitError as e:
            raise _Bad(where, str(e)) from None
    raise _Bad(where, f"expects a number, not {_show(value)}")


def _scalar(value: Any, key: str, where: str) -> Matcher:
    if isinstance(value, bool):
        return Equals(value)
    if isinstance(value, int | float):
        return Equals(_number(value, key, where))
    if isinstance(value, str):
        if _unit_parser(key) is not None:
            return Equals(_number(value, key, where))
        if key in _plain_number_keys():
            raise _Bad(where, f"{key} is a plain number: write it without quotes or unit, not {value!r}")
        words = _vocabularies().get(key)
        if words is not None and value not in words:
            raise _Bad(where, f"{key} {value!r} is unknown; one of: {', '.join(words)}")
        return Equals(value)
    raise _Bad(where, f"cannot compare with {_show(value)} ({type(value).__name__})")


def _compile(value: Any, key: str, where: str) -> Matcher:
    """The matcher for an expected value of `key` as the file gives it."""
    if isinstance(value, dict):
        return _operators(value, key, where)
    if isinstance(value, list):
        return Items(tuple(_item(v, key, f"{where}[{i}]") for i, v in enumerate(value)))
    return _scalar(value, key, where)


def _operators(table: dict[str, Any], key: str, where: str) -> Matcher:
    if not table:
        raise _Bad(where, f"an empty table checks nothing; give one of: {', '.join(_OPERATORS)}")
    parts: list[Matcher] = []
    for op, v in table.items():
        w = f"{where}.{op}"
        if op in ("min", "max"):
            parts.append(Bound(op, _number(v, key, w)))
        elif op == "not":
            parts.append(Not(_compile(v, key, w)))
        elif op == "one_of":
            if not isinstance(v, list) or not v:
                raise _Bad(w, "expects a list of values")
            parts.append(OneOf(tuple(_compile(x, key, f"{w}[{i}]") for i, x in enumerate(v))))
        elif op == "none":
            if not isinstance(v, bool):
                raise _Bad(w, "expects true (the value is null) or false")
            parts.append(IsNone(v))
        elif op in ("contains", "excludes"):
            if not isinstance(v, list) or not v:
                raise _Bad(w, "expects a list of items")
            parts.append(Contains(tuple(_item(x, key, f"{w}[{i}]") for i, x in enumerate(v)), op == "excludes"))
        elif op == "count":
            parts.append(Count(_compile(v, "count", w)))
        else:
            raise _Bad(w, f"unknown check {op!r} (checks: {', '.join(_OPERATORS)})")
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _item(value: Any, key: str, where: str) -> Matcher:
    """One item of a list-valued key: a record (or its main key's value), or a plain value."""
    schema = _records().get(key)
    if schema is None:
        return _compile(value, key, where)
    if isinstance(value, str):
        return Record(((schema.primary, _scalar(value, schema.primary, where)),))
    if not isinstance(value, dict) or not value:
        raise _Bad(where, f"an item of {key} is a table of its keys ({', '.join(schema.keys)}) or a {schema.primary}")
    allowed = schema.keys
    kind = value.get(schema.primary)
    if schema.keys_by_type is not None and isinstance(kind, str) and kind in schema.keys_by_type:
        allowed = schema.keys_by_type[kind]
    fields = []
    for k, v in value.items():
        if k not in allowed:
            what = f"a {kind} entry" if allowed is not schema.keys else f"an item of {key}"
            raise _Bad(f"{where}.{k}", f"unknown key: {what} has {', '.join(allowed)}")
        fields.append((k, _compile(v, k, f"{where}.{k}")))
    return Record(tuple(fields))


def _checks(table: Any, allowed: Sequence[str] | None, where: str) -> tuple[tuple[str, Matcher], ...]:
    if not isinstance(table, dict):
        raise _Bad(where, f"must be a table ({where} = {{ key = value }}), not {_show(table)}")
    if not table:
        raise _Bad(where, "is empty: name the keys to check")
    out = []
    for key, value in table.items():
        if allowed is not None and key not in allowed:
            raise _Bad(f"{where}.{key}", f"unknown key (keys: {', '.join(allowed)})")
        out.append((key, _compile(value, key, f"{where}.{key}")))
    return tuple(out)


# ==================================================================== the file


@dataclass(frozen=True)
class Action:
    """A `thecal` pump command, parsed and checked as the CLI would (before any traffic)."""

    text: str
    command: str  # "bolus", "sim fault", "refill begin" ...
    args: argparse.Namespace = field(compare=False)
    handler: Callable[..., Any] = field(compare=False)
    prepared: Any = field(compare=False)

    @property
    def result_keys(self) -> tuple[str, ...]:
        if self.command == "status":
            return status_keys()
        if self.command == "sim truth":
            return truth_keys()
        return (*_RESULT_KEYS[self.command], "answer_lost", *_REFUSED_KEYS)


@dataclass(frozen=True)
class LogCheck:
    since: str  # "previous_step" or "boot"
    matcher: Matcher


@dataclass(frozen=True)
class Step:
    number: int  # from 1, as people count the [[step]] tables
    at_ms: int
    note: str | None
    action: Action | None
    expect: tuple[tuple[str, Matcher], ...] = ()
    expect_status: tuple[tuple[str, Matcher], ...] = ()
    expect_truth: tuple[tuple[str, Matcher], ...] = ()
    expect_log: LogCheck | None = None

    @property
    def expects_refusal(self) -> bool:
        return any(key == "refused" for key, _ in self.expect)

    def title(self) -> str:
        head = f"step {self.number} at {format_time(self.at_ms)}"
        return head + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    program: Program | None
    fill_ul: int | None
    start: bool
    seed: int
    model: Mapping[str, Any]  # pump-model figures, the fill included
    steps: tuple[Step, ...]


def format_time(ms: int) -> str:
    """Pump time for people: '1h 30min', '0s', '2d 3h 250ms'."""
    s, rest = divmod(ms, 1000)
    text = units.format_duration(s)
    if rest:
        text = f"{text} {rest}ms" if s else f"{rest}ms"
    return text


@cache
def _parser() -> argparse.ArgumentParser:
    return cli.build_parser()


def parse_action(text: Any, base: Path, where: str) -> Action:
    """A step's action: the `thecal` command line (without `thecal`), checked as the CLI
    checks it before sending anything. A therapy file is found relative to `base`."""
    if not isinstance(text, str) or not text.strip():
        raise _Bad(where, f'must be a thecal command as a string, e.g. "bolus", not {_show(text)}')
    try:
        argv = shlex.split(text)
    except ValueError as e:
        raise _Bad(where, f"cannot split {text!r} into words: {e}") from None
    try:
        args = _parser().parse_args(argv)
    except cli._ParserExit as e:
        raise _Bad(where, f"`{text}`: {e.message}") from None
    except SystemExit:  # --help, --version: argparse printed and wanted to exit
        raise _Bad(where, f"`{text}` is not a pump command") from None
    for attr, option in _CONNECTION_OPTIONS.items():
        if hasattr(args, attr):
            raise _Bad(where, f"`{text}`: {option} is not for scenarios (a scenario runs on its own pump)")
    if getattr(args, "json", False):
        raise _Bad(where, f"`{text}`: leave out --json (expect is always checked against the JSON object)")
    args = cli._fill_defaults(args)
    command = cli._command_name(args).removeprefix("thecal ")
    if command in _NOT_ACTIONS:
        raise _Bad(where, f"`{text}`: {_NOT_ACTIONS[command]}")
    if command not in _RESULT_KEYS and command not in ("status", "sim truth"):
        raise _Bad(where, f"`{text}`: {args.command} is not a pump command")
    if command == "program":
        args.file = str(base / args.file)
    try:
        handler, prepared = cli._prepare(args)
    except cli.UsageError as e:
        raise _Bad(where, f"`{text}`: {e}") from None
    return Action(text, command, args, handler, prepared)


def _time_ms(value: Any, where: str) -> int:
    try:
        return parse_time_ms(value)
    except units.UnitError as e:
        raise _Bad(where, str(e)) from None


def _step(doc: Any, number: int, previous_ms: int, base: Path) -> Step:
    w = f"step {number}"
    if not isinstance(doc, dict):
        raise _Bad(w, "must be a table ([[step]])")
    for key in doc:
        if key not in _STEP_KEYS:
            raise _Bad(f"{w}: {key}", f"unknown key (a step has: {', '.join(_STEP_KEYS)})")
    if "at" in doc and "after" in doc:
        raise _Bad(w, "give `at` (pump time) or `after` (since the step before), not both")
    if "at" in doc:
        at_ms = _time_ms(doc["at"], f"{w}: at")
        if at_ms < previous_ms:
            raise _Bad(
                f"{w}: at",
                f"{doc['at']!r} goes back in time: the step before is at {format_time(previous_ms)}",
            )
    elif "after" in doc:
        at_ms = previous_ms + _time_ms(doc["after"], f"{w}: after")
    else:
        at_ms = previous_ms
    note = doc.get("note")
    if note is not None and not isinstance(note, str):
        raise _Bad(f"{w}: note", "must be a string")
    action = parse_action(doc["action"], base, f"{w}: action") if "action" in doc else None
    expect: tuple[tuple[str, Matcher], ...] = ()
    if "expect" in doc:
        if action is None:
            raise _Bad(f"{w}: expect", "checks an action's result: give the step an action (or use expect_status)")
        expect = _checks(doc["expect"], action.result_keys, f"{w}: expect")
    status = _checks(doc["expect_status"], status_keys(), f"{w}: expect_status") if "expect_status" in doc else ()
    truth = _checks(doc["expect_truth"], truth_keys(), f"{w}: expect_truth") if "expect_truth" in doc else ()
    log = _log_check(doc["expect_log"], f"{w}: expect_log") if "expect_log" in doc else None
    if action is None and not (status or truth or log):
        raise _Bad(w, "does nothing: give it an action or an expectation (expect_status, expect_truth, expect_log)")
    return Step(number, at_ms, note, action, expect, status, truth, log)


def _log_check(doc: Any, where: str) -> LogCheck:
    if not isinstance(doc, dict):
        raise _Bad(where, 'must be a table, e.g. { contains = ["bolus_started"] }')
    for key in doc:
        if key not in _LOG_KEYS:
            raise _Bad(f"{where}.{key}", f"unknown key (expect_log has: {', '.join(_LOG_KEYS)})")
    since = doc.get("since", "previous_step")
    if since not in _LOG_SINCE:
        raise _Bad(f"{where}.since", f"{since!r} is not one of: {', '.join(_LOG_SINCE)}")
    checks = {k: v for k, v in doc.items() if k != "since"}
    if not checks:
        raise _Bad(where, "checks nothing: give contains, excludes or count")
    return LogCheck(since, _operators(checks, "events", where))


def _program(value: Any, base: Path) -> Program:
    try:
        if isinstance(value, str):
            return load_program(base / value, 1)
        if isinstance(value, dict):
            return parse_program(value, 1)
    except ProgramFileError as e:
        where = "program" if isinstance(value, str) else f"program.{e.field}"
        raise _Bad(where, e.message if isinstance(value, dict) else str(e)) from None
    raise _Bad("program", "must be a therapy file's path (relative to the scenario) or a [program] table")


def parse_scenario(doc: dict[str, Any], path: str | Path) -> Scenario:
    """A Scenario from a parsed TOML document; ScenarioError naming what is wrong."""
    path = Path(path)
    try:
        return _parse(doc, path)
    except _Bad as e:
        raise ScenarioError(path, e.where, e.message) from None


def _parse(doc: dict[str, Any], path: Path) -> Scenario:
    base = path.parent
    for key in doc:
        if key not in _TOP_KEYS:
            raise _Bad(key, f"unknown key (a scenario has: {', '.join(_TOP_KEYS)})")
    name = doc.get("name", path.name.removesuffix(SUFFIX))
    description = doc.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise _Bad(key, "must be a string")
    program = _program(doc["program"], base) if "program" in doc else None
    start = doc.get("start", program is not None)
    if not isinstance(start, bool):
        raise _Bad("start", "must be true or false")
    if start and program is None:
        raise _Bad("start", "starting therapy needs a program")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _Bad("seed", f"must be a whole number >= 0, not {_show(seed)}")
    figures = doc.get("pump_model", {})
    if not isinstance(figures, dict):
        raise _Bad("pump_model", "must be a table ([pump_model]) of emulator/model.py figures")
    figures = dict(figures)
    fill_ul = None
    if "fill" in doc:
        if "initial_fill_ul" in figures:
            raise _Bad("fill", "say the fill once: `fill`, or pump_model.initial_fill_ul")
        fill_ul = _fill(doc["fill"])
        figures["initial_fill_ul"] = fill_ul
        if program is not None:
            figures.setdefault("initial_concentration_ng_per_ml", program.concentration_ng_per_ml)
    try:
        PumpModel().with_overrides(figures)
    except (ModelError, TypeError) as e:
        raise _Bad("pump_model", str(e).removeprefix("pump model: ")) from None
    steps_doc = doc.get("step")
    if not isinstance(steps_doc, list) or not steps_doc:
        raise _Bad("step", "a scenario needs at least one [[step]]")
    steps = []
    previous = 0
    for i, s in enumerate(steps_doc, start=1):
        step = _step(s, i, previous, base)
        steps.append(step)
        previous = step.at_ms
    return Scenario(path, name, description, program, fill_ul, start, seed, figures, tuple(steps))


def _fill(value: Any) -> int:
    try:
        return units.parse_volume_ul(value)
    except units.UnitError as e:
        raise _Bad("fill", str(e)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; ScenarioError names the file, the step and the key."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ScenarioError(path, "", f"cannot read it: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(path, "", f"not valid TOML: {e}") from None
    return parse_scenario(doc, path)


# ==================================================================== running


def run_action(action: Action, pump: Pump) -> dict[str, Any]:
    """Run an action as the CLI would and return its --json object (a refusal's too)."""
    role = codes.Role.PATIENT if action.args.role == "patient" else codes.Role.CLINICIAN
    try:
        return dict(action.handler(RoleClient(pump.client, role), action.args, action.prepared).data)
    except Refused as e:
        data: dict[str, Any] = {
            "refused": True,
            "reason": e.reason.name.lower(),
            "field": e.field or None,
            "error": e.nak.detail,
        }
        if action.command == "program":
            data.update(accepted=False, field=file_field(e.field) if e.field else None, wire_field=e.field or None)
        return data


def _compare(checks: Sequence[tuple[str, Matcher]], actual: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    for key, m in checks:
        if key not in actual:
            problems.append(
                f"{where}.{key}: expected {m.describe()}, but there is no {key} (keys: {', '.join(actual)})"
            )
            continue
        why = m.check(actual[key])
        if why is not None:
            problems.append(f"{where}.{key}: expected {m.describe()}, {why}")
    return problems


def _log_entries(pump: Pump, from_seq: int) -> list[dict[str, Any]]:
    return [cli._log_fields(e) for e in pump.client.read_log(from_seq)]


def _setup(scenario: Scenario, pump: Pump) -> None:
    c = pump.clinician
    try:
        if scenario.fill_ul is not None:
            rx = scenario.program
            pump.record_fill(rx.drug if rx else None, rx.concentration_ng_per_ml if rx else None)
        if scenario.program is not None:
            c.program(replace(scenario.program, command_id=c.next_command_id()))
        if scenario.start:
            c.start()
    except Refused as e:
        where = f" ({file_field(e.field)})" if e.field else ""
        raise ScenarioFailure(f"set-up: the pump refused{where}: {e}") from None
    except ClientError as e:
        raise ScenarioFailure(f"set-up: {e}") from None


def run_scenario(scenario: Scenario, pump: Pump) -> None:
    """Set the pump up as the scenario says and run its steps in order. Raises
    ScenarioFailure at the first step whose expectations do not hold, naming each of them."""
    _setup(scenario, pump)
    c = pump.client
    mark = c.read_log_page(0, 1).next_seq  # the first step's log window starts after set-up
    for i, step in enumerate(scenario.steps):
        try:
            _run_step(step, pump, mark)
            following = scenario.steps[i + 1] if i + 1 < len(scenario.steps) else None
            if following is not None and following.expect_log is not None:
                mark = c.read_log_page(0, 1).next_seq
        except ClientError as e:
            raise ScenarioFailure(_failure(step, [f"{type(e).__name__}: {e}"], {})) from None


def _run_step(step: Step, pump: Pump, mark: int) -> None:
    c = pump.client
    now = c.ground_truth().time_ms
    if now > step.at_ms:
        raise ScenarioFailure(
            f"{step.title()}: the pump is already at {format_time(now)} (an earlier action took time)"
        )
    if step.at_ms > now:
        c.advance(step.at_ms - now)
    problems: list[str] = []
    shown: dict[str, Any] = {}
    if step.action is not None:
        result = run_action(step.action, pump)
        shown["result"] = result
        if result.get("refused") and not step.expects_refusal:
            problems.append(f"`{step.action.text}` was refused ({result['reason']}): {result['error']}")
        else:
            problems += _compare(step.expect, result, "expect")
    if step.expect_status:
        status = cli.status_dict(c.status())
        shown["status"] = status
        problems += _compare(step.expect_status, status, "expect_status")
    if step.expect_truth:
        truth = cli._sim_truth(c, None, None).data
        shown["truth"] = truth
        problems += _compare(step.expect_truth, truth, "expect_truth")
    if step.expect_log is not None:
        entries = _log_entries(pump, 0 if step.expect_log.since == "boot" else mark)
        shown["log"] = entries
        why = step.expect_log.matcher.check(entries)
        if why is not None:
            problems.append(f"expect_log: expected {step.expect_log.matcher.describe()}, {why}")
    if problems:
        raise ScenarioFailure(_failure(step, problems, shown))


def _failure(step: Step, problems: list[str], shown: Mapping[str, Any]) -> str:
    lines = [step.title() + (f": `{step.action.text}`" if step.action is not None else "")]
    lines += [f"  {p}" for p in problems]
    for name, value in shown.items():
        if name == "log":
            lines.append(f"  log ({len(value)} entries in the window):")
            lines += [f"    {json.dumps(e)}" for e in value[-20:]]
        else:
            lines.append(f"  {name}: {json.dumps(value)}")
    return "\n".join(lines)
