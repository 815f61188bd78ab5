"""SPEC.md's chapters on the messages themselves: every message's byte table, the records
and enums they carry (with the meanings written as comments in protocol/codes.py), the
type ranges, the roles and the ACK pairs. protocol/spec.py puts them into the document.
"""

from __future__ import annotations

import ast
import io
import re
import struct
import tokenize
from enum import Enum
from pathlib import Path

import construct as cs

from . import codes, messages
from .codes import FrameFlag, MessageFamily, NakReason, Role
from .messages import REGISTRY, Message
from .schema import (
    FAMILY_RANGES,
    Array,
    Blob,
    BoolField,
    EnumField,
    Text,
    max_size,
)
from .specmd import link, table


def int_name(code: str) -> str:
    """'u32' for struct code 'I' or 'L', 'i64' for 'q', and so on."""
    return ("i" if code.islower() else "u") + str(8 * struct.calcsize("<" + code))


# What a receiver does with each kind of bad segment. A new FrameErrorKind without an


FAMILY_TEXT: dict[MessageFamily, str] = {
    MessageFamily.PUMP_TO_PUMP_HW: "pump link, controller to pump hardware",
    MessageFamily.PUMP_HW_TO_CONTROLLER: "pump link, pump hardware to controller",
    MessageFamily.HOST_REQUEST: "host request",
    MessageFamily.HOST_RESPONSE: "host response",
    MessageFamily.HOST_EVENT: "host event",
    MessageFamily.SIM_REQUEST: "simulation request",
    MessageFamily.SIM_RESPONSE: "simulation response",
}


REQUEST_FAMILIES = (MessageFamily.HOST_REQUEST, MessageFamily.SIM_REQUEST)
RESPONSE_FAMILIES = (MessageFamily.HOST_RESPONSE, MessageFamily.SIM_RESPONSE)


def msg_heading(cls: type[Message]) -> str:
    return f"0x{cls.TYPE:02X} {cls.NAME}"


def msg_link(cls: type[Message]) -> str:
    return link(msg_heading(cls))


# ---------------------------------------------------------------- enums and their comments


def _codes_source_notes() -> tuple[list[str], dict[str, str], dict[tuple[str, str], str]]:
    """Enum class names in source order, their docstrings, and each member's comment."""
    source = Path(codes.__file__).read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    order: list[str] = []
    docs: dict[str, str] = {}
    notes: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        order.append(node.name)
        docs[node.name] = ast.get_docstring(node) or ""
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                notes[(node.name, stmt.targets[0].id)] = comments.get(stmt.lineno, "")
    return order, docs, notes


_ENUM_ORDER, _ENUM_DOCS, _ENUM_NOTES = _codes_source_notes()


def enums() -> list[type[Enum]]:
    """Every enum in codes.py, in source order."""
    out = []
    for name in _ENUM_ORDER:
        obj = getattr(codes, name, None)
        if isinstance(obj, type) and issubclass(obj, Enum):
            out.append(obj)
    return out


def member_meaning(enum: type[Enum], member: Enum) -> str:
    return _ENUM_NOTES.get((enum.__name__, member.name), "")


def _linkify(text: str) -> str:
    """Link the names of enums and records that appear in a meaning.

    A CamelCase name (AlarmId) is linked wherever it stands; a name that is also an
    ordinary word (Role, Fault) only in parentheses, as in "key id (Role)"."""
    names = [e.__name__ for e in enums()] + [r.__name__ for r in records()]

    def repl(m: re.Match[str]) -> str:
        return link(m.group(0))

    for name in names:
        if sum(c.isupper() for c in name) > 1:
            text = re.sub(rf"(?<![\w\[#]){name}(?![\w\]])", repl, text)
        else:
            text = re.sub(rf"(?<=\(){name}(?=\))", repl, text)
    return text


def _enum_table(enum: type[Enum]) -> str:
    if enum is codes.LogEvent:
        rows = []
        for m in enum:
            arg0, arg1 = _log_args(member_meaning(enum, m))
            rows.append((m.value, m.name, _linkify(arg0), _linkify(arg1)))
        return table(["Value", "Name", "arg0", "arg1"], rows)
    value_fmt = "0x{:02X}" if issubclass(enum, FrameFlag) else "{}"
    return table(
        ["Value", "Name", "Meaning"],
        [(value_fmt.format(m.value), m.name, _linkify(member_meaning(enum, m))) for m in enum],
    )


def _log_args(note: str) -> tuple[str, str]:
    """'arg0 X, arg1 Y' -> (X, Y); an unused argument is 0."""
    unused = "0 (unused)"
    m = re.fullmatch(r"arg0 (.+?)(?:, arg1 (.+))?", note)
    if not m:
        return unused, unused
    return m.group(1), m.group(2) or unused


def _enum_section(enum: type[Enum], level: str = "###") -> str:
    parts = [f"{level} {enum.__name__}", ""]
    width = {1: "u8", 2: "u16"}
    used = sorted({width.get(s.subcon.sizeof(), "?") for s in _enum_fields(enum)})
    doc = _ENUM_DOCS.get(enum.__name__, "")
    if doc:
        parts += [_linkify(doc), ""]
    if used:
        parts += [
            f"On the wire: {', '.join(used)}. Any other value is invalid (NAK OUT_OF_RANGE naming the field).",
            "",
        ]
    parts.append(_enum_table(enum))
    return "\n".join(parts)


def _enum_fields(enum: type[Enum]) -> list[EnumField]:
    out = []
    for owner in [*REGISTRY.values(), *records()]:
        for sub in owner.SCHEMA.subcons:
            if isinstance(sub.subcon, EnumField) and sub.subcon.enum is enum:
                out.append(sub.subcon)
    return out


# ---------------------------------------------------------------- byte tables


def records() -> list[type]:
    """The records carried in Array fields, in order of first use."""
    out: list[type] = []
    for cls in REGISTRY.values():
        for sub in cls.SCHEMA.subcons:
            if isinstance(sub.subcon, Array) and sub.subcon.record not in out:
                out.append(sub.subcon.record)
    return out


def field_type(sub: cs.Construct) -> tuple[str, str, int | None]:
    """(size, type, fixed size or None) of one field, as SPEC.md writes them."""
    if isinstance(sub, EnumField):
        base = int_name(sub.subcon.fmtstr[1])
        return str(sub.sizeof()), f"{base} {link(sub.enum.__name__)}", sub.sizeof()
    if isinstance(sub, BoolField):
        return "1", "bool (u8, 0 or 1)", 1
    if isinstance(sub, Text):
        return "1 + n", f"text (u8 n, UTF-8), n ≤ {sub.max_bytes}", None
    if isinstance(sub, Blob):
        return "2 + n", f"blob (u16 n, bytes), n ≤ {sub.max_bytes}", None
    if isinstance(sub, Array):
        rec = sub.record
        return f"1 + {rec._fmt.size}·n", f"array (u8 n) of {link(rec.__name__)}, n ≤ {sub.max_items}", None
    if isinstance(sub, cs.FormatField):
        return str(sub.sizeof()), int_name(sub.fmtstr[1]), sub.sizeof()
    raise TypeError(f"field type {sub!r} is not in the protocol's vocabulary")


def min_size(schema: cs.Struct) -> int:
    total = 0
    for s in schema.subcons:
        fixed = field_type(s.subcon)[2]
        total += fixed if fixed is not None else (2 if isinstance(s.subcon, Blob) else 1)
    return total


def byte_table(schema: cs.Struct) -> str:
    rows = []
    offset: int | None = 0
    for s in schema.subcons:
        size, typ, fixed = field_type(s.subcon)
        rows.append((offset if offset is not None else "var", size, f"`{s.name}`", typ, _linkify(s.docs or "")))
        offset = offset + fixed if offset is not None and fixed is not None else None
    return table(["Offset", "Size", "Field", "Type", "Meaning"], rows)


def _size_text(schema: cs.Struct) -> str:
    lo, hi = min_size(schema), max_size(schema)
    if hi == 0:
        return "empty (payload_len = 0)"
    if lo == hi:
        return "1 byte" if lo == 1 else f"{lo} bytes"
    return f"{lo} to {hi} bytes"


def _roles_text(cls: type[Message]) -> str:
    return ", ".join(f"{r.name.lower()} (key id {r.value})" for r in cls.ROLES)


def sent_by(cls: type[Message]) -> str:
    fam = cls.FAMILY
    if fam in REQUEST_FAMILIES:
        return _roles_text(cls) + ", signed"
    if fam is MessageFamily.PUMP_TO_PUMP_HW:
        return "controller"
    if fam is MessageFamily.PUMP_HW_TO_CONTROLLER:
        return "pump hardware"
    if fam is MessageFamily.HOST_EVENT:
        return "pump, unsolicited"
    if fam is MessageFamily.SIM_RESPONSE:
        return "emulator"
    if cls is messages.Nak:
        return "pump (the emulator, for simulation requests)"
    return "pump"


def _answer_text(cls: type[Message]) -> str:
    if cls.FAMILY in REQUEST_FAMILIES:
        ack = cls.ACK
        first = msg_link(ack) if ack is not None else "(no ACK type declared)"
        return f"{first} or {msg_link(messages.Nak)}"
    return ""


def _answers_text(cls: type[Message]) -> str:
    if cls.ANSWERS is not None:
        return msg_link(cls.ANSWERS)
    if cls is messages.Nak:
        return "any request (host or simulation)"
    return ""


def message_section(cls: type[Message]) -> str:
    parts = [f"#### {msg_heading(cls)}", "", _linkify(cls.DOC), ""]
    facts = [("Family", f"{cls.FAMILY.name}: {_family_direction(cls.FAMILY)}"), ("Sent by", sent_by(cls))]
    if _answer_text(cls):
        facts.append(("Answered by", _answer_text(cls)))
    if _answers_text(cls):
        facts.append(("Answers", _answers_text(cls)))
    facts.append(("Payload", _size_text(cls.SCHEMA)))
    parts += [table(["", ""], facts), ""]
    if cls.SCHEMA.subcons:
        parts.append(byte_table(cls.SCHEMA))
    else:
        parts.append("No fields.")
    return "\n".join(parts)


def _family_direction(fam: MessageFamily) -> str:
    return _ENUM_NOTES.get(("MessageFamily", fam.name), "")


# ---------------------------------------------------------------- tables of the message set


def range_text(lo: int, hi: int) -> str:
    return f"0x{lo:02X}–0x{hi:02X}"


def family_table() -> str:
    rows = []
    for lo, hi, fam in FAMILY_RANGES:
        used = sum(1 for t in REGISTRY if lo <= t <= hi)
        rows.append((range_text(lo, hi), fam.name, _family_direction(fam), _signed_text(fam), used))
    return table(["Range", "Family", "Direction", "Signed", "Types used"], rows)


def _signed_text(fam: MessageFamily) -> str:
    if fam in REQUEST_FAMILIES:
        return "yes, always"
    if fam in (MessageFamily.PUMP_TO_PUMP_HW, MessageFamily.PUMP_HW_TO_CONTROLLER):
        return "no (pump link)"
    return "no (see limitations)"


def summary_table() -> str:
    rows = []
    for cls in REGISTRY.values():
        ack = cls.ACK
        rows.append(
            (
                f"0x{cls.TYPE:02X}",
                link(cls.NAME, msg_heading(cls)),
                cls.FAMILY.name,
                _family_direction(cls.FAMILY),
                sent_by(cls),
                f"0x{ack.TYPE:02X} {ack.NAME}" if ack is not None else "",
            )
        )
    return table(["Type", "Name", "Family", "Direction", "Sent by (allowed roles)", "ACK"], rows)


def ack_pairs_table() -> str:
    rows = []
    for cls in REGISTRY.values():
        if cls.FAMILY in REQUEST_FAMILIES:
            ack = cls.ACK
            rows.append(
                (
                    f"0x{cls.TYPE:02X} {cls.NAME}",
                    f"0x{ack.TYPE:02X} {ack.NAME}" if ack else "",
                    f"+0x{ack.TYPE - cls.TYPE:02X}" if ack else "",
                    _roles_text(cls),
                    "yes" if "command_id" in cls.FIELDS else "",
                )
            )
    return table(["Request", "ACK", "ACK − request", "Allowed roles", "command_id"], rows)


def command_id_requests() -> str:
    names = [cls.NAME for cls in REGISTRY.values() if cls.FAMILY in REQUEST_FAMILIES and "command_id" in cls.FIELDS]
    return ", ".join(f"`{n}`" for n in names)


def other_requests() -> str:
    names = [
        cls.NAME
        for cls in REGISTRY.values()
        if cls.FAMILY is MessageFamily.HOST_REQUEST and "command_id" not in cls.FIELDS
    ]
    return ", ".join(f"`{n}`" for n in names)


def role_table() -> str:
    rows = []
    for role in Role:
        allowed = [c.NAME for c in REGISTRY.values() if role in c.ROLES]
        may = ", ".join(allowed) or "no request: the pump signs its answers and events with it"
        rows.append((role.value, role.name, member_meaning(Role, role), may))
    return table(["key_id", "Role", "Who", "May send"], rows)


def nak_table() -> str:
    return _enum_table(NakReason)


def message_sections() -> str:
    out = []
    for lo, hi, fam in FAMILY_RANGES:
        members = [c for t, c in REGISTRY.items() if lo <= t <= hi]
        if not members:
            continue
        out.append(f"### {FAMILY_TEXT[fam].capitalize()} messages, {range_text(lo, hi)}")
        out.append("")
        out.append(f"{_family_direction(fam).capitalize()}.")
        out.append("")
        out += [message_section(c) + "\n" for c in members]
    return "\n".join(out).rstrip()


def record_sections() -> str:
    out = []
    for rec in records():
        users = [
            f"`{c.NAME}.{s.name}`"
            for c in REGISTRY.values()
            for s in c.SCHEMA.subcons
            if isinstance(s.subcon, Array) and s.subcon.record is rec
        ]
        out += [
            f"### {rec.__name__}",
            "",
            _linkify(rec.__doc__ or ""),
            "",
            f"{rec._fmt.size} bytes, used in {', '.join(users)}.",
            "",
            byte_table(rec.SCHEMA),
            "",
        ]
    return "\n".join(out).rstrip()


def enum_sections() -> str:
    out = []
    for e in enums():
        if e is NakReason:
            out.append(f"### {e.__name__}\n\nSee [NAK reasons](#nak-reasons): the table is there.")
        else:
            out.append(_enum_section(e))
    return "\n\n".join(out)
