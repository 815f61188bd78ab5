"""Render protocol/SPEC.md from spec_template.md and the protocol's own definitions.

The template holds the prose; every table, constant and example comes from the code
(framing constants, the construct Struct of each message, the enums in codes.py with
the meanings in their source comments, and the vectors of protocol/vectors.py), so the
document cannot drift from what the codec does. `thecal spec` calls main().

Placeholders in the template are `{{NAME}}` on their own or inside a line; each NAME is
a key of _sections() below. An unknown placeholder is an error.
"""

from __future__ import annotations

import ast
import io
import re
import struct
import sys
import tokenize
import zlib
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import construct as cs

from . import codes, framing, messages
from .auth import KEY_SIZE
from .codes import FrameFlag, MessageFamily, NakReason, Role
from .framing import FrameErrorKind
from .messages import REGISTRY, Message
from .schema import (
    FAMILY_RANGES,
    HOST_LINK_RANGE,
    NONE_U64,
    PUMP_LINK_RANGE,
    Array,
    Blob,
    BoolField,
    EnumField,
    Text,
    max_size,
)
from .vectors import TEST_KEYS, VECTORS_PATH, build_vectors, by_name, full_hmac, render_vectors

HERE = Path(__file__).resolve().parent
TEMPLATE_PATH = HERE / "spec_template.md"
SPEC_PATH = HERE / "SPEC.md"

GENERATED_NOTICE = (
    "<!-- GENERATED FILE, do not edit: the prose is protocol/spec_template.md, every table,\n"
    "constant and example is generated from the code by protocol/spec.py.\n"
    "Regenerate with `thecal spec --write` (or `make spec`). -->\n\n"
)
_PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")


def _int_name(code: str) -> str:
    """'u32' for struct code 'I' or 'L', 'i64' for 'q', and so on."""
    return ("i" if code.islower() else "u") + str(8 * struct.calcsize("<" + code))


# What a receiver does with each kind of bad segment. A new FrameErrorKind without an
# entry here stops the rendering (KeyError), so the spec cannot silently miss one.
FRAME_ERROR_ACTIONS: dict[FrameErrorKind, tuple[str, str]] = {
    FrameErrorKind.BAD_COBS: (
        "the segment is not valid COBS (a code byte points past the segment's end)",
        "drop silently: nothing in it can be trusted",
    ),
    FrameErrorKind.BAD_CRC: (
        "the CRC does not hold",
        "drop silently: the header cannot be trusted, so there is no seq to answer",
    ),
    FrameErrorKind.OVERSIZE: (
        "the segment is longer than MAX_ENCODED, the body longer than MAX_BODY, or (CRC held) "
        "payload_len is above MAX_PAYLOAD",
        "drop silently",
    ),
    FrameErrorKind.BAD_LENGTH: (
        "the body is shorter than MIN_BODY, or (CRC held) payload_len disagrees with the body's length",
        "if the CRC held, a pump NAKs BAD_LENGTH with the frame's seq; else drop",
    ),
    FrameErrorKind.UNKNOWN_VERSION: (
        "CRC held, version is not PROTOCOL_VERSION",
        "drop (the sender would not understand a version-1 NAK)",
    ),
    FrameErrorKind.UNKNOWN_TYPE: (
        "CRC held, msg_type is not a declared type of this link (a pump-link type on the host link is unknown too)",
        "a pump NAKs UNKNOWN_TYPE with the frame's seq; a host ignores it (new event types may appear)",
    ),
    FrameErrorKind.BAD_FLAGS: (
        "CRC held, a reserved flag bit is set",
        "drop (reserved bits are for future versions)",
    ),
}

FAMILY_TEXT: dict[MessageFamily, str] = {
    MessageFamily.PUMP_TO_PUMP_HW: "pump link, controller to pump hardware",
    MessageFamily.PUMP_HW_TO_CONTROLLER: "pump link, pump hardware to controller",
    MessageFamily.HOST_REQUEST: "host request",
    MessageFamily.HOST_RESPONSE: "host response",
    MessageFamily.HOST_EVENT: "host event",
    MessageFamily.SIM_REQUEST: "simulation request",
    MessageFamily.SIM_RESPONSE: "simulation response",
}

# Messages shown byte by byte in "Worked examples" (names in protocol/vectors.py).
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("BOLUS_REQUEST/signed-patient", "A patient bolus request, signed with the patient key"),
    ("STATUS_ACK", "The pump's answer to STATUS (one latched alarm)"),
    ("NAK/out_of_range", "A NAK refusing a PROGRAM"),
    ("MOTOR_RUN", "Pump link: a bounded motor run for a patient bolus"),
    ("HOST_RX", "Pump link: the relay of the signed HELLO from Authentication"),
)
AUTH_EXAMPLE = "HELLO/signed-clinician"
REQUEST_FAMILIES = (MessageFamily.HOST_REQUEST, MessageFamily.SIM_REQUEST)
RESPONSE_FAMILIES = (MessageFamily.HOST_RESPONSE, MessageFamily.SIM_RESPONSE)


# ---------------------------------------------------------------- small helpers


def anchor(heading: str) -> str:
    """The id GitHub gives a heading (lower case, punctuation dropped, spaces to '-')."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _link(text: str, heading: str | None = None) -> str:
    return f"[{text}](#{anchor(heading if heading is not None else text)})"


def msg_heading(cls: type[Message]) -> str:
    return f"0x{cls.TYPE:02X} {cls.NAME}"


def msg_link(cls: type[Message]) -> str:
    return _link(msg_heading(cls))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _hex(data: bytes, group: int = 1) -> str:
    return " ".join(data[i : i + group].hex() for i in range(0, len(data), group))


def _hex_block(data: bytes, per_line: int = 32) -> str:
    lines = [_hex(data[i : i + per_line]) for i in range(0, len(data), per_line)] or [""]
    return "```\n" + "\n".join(lines) + "\n```"


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
        return _link(m.group(0))

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
        return _table(["Value", "Name", "arg0", "arg1"], rows)
    value_fmt = "0x{:02X}" if issubclass(enum, FrameFlag) else "{}"
    return _table(
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
        base = _int_name(sub.subcon.fmtstr[1])
        return str(sub.sizeof()), f"{base} {_link(sub.enum.__name__)}", sub.sizeof()
    if isinstance(sub, BoolField):
        return "1", "bool (u8, 0 or 1)", 1
    if isinstance(sub, Text):
        return "1 + n", f"text (u8 n, UTF-8), n ≤ {sub.max_bytes}", None
    if isinstance(sub, Blob):
        return "2 + n", f"blob (u16 n, bytes), n ≤ {sub.max_bytes}", None
    if isinstance(sub, Array):
        rec = sub.record
        return f"1 + {rec._fmt.size}·n", f"array (u8 n) of {_link(rec.__name__)}, n ≤ {sub.max_items}", None
    if isinstance(sub, cs.FormatField):
        return str(sub.sizeof()), _int_name(sub.fmtstr[1]), sub.sizeof()
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
    return _table(["Offset", "Size", "Field", "Type", "Meaning"], rows)


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
    parts += [_table(["", ""], facts), ""]
    if cls.SCHEMA.subcons:
        parts.append(byte_table(cls.SCHEMA))
    else:
        parts.append("No fields.")
    return "\n".join(parts)


def _family_direction(fam: MessageFamily) -> str:
    return _ENUM_NOTES.get(("MessageFamily", fam.name), "")


# ---------------------------------------------------------------- generated sections


def _constants() -> dict[str, Callable[[], str]]:
    host_max = max(max_size(c.SCHEMA) for t, c in REGISTRY.items() if t >= 0x40)
    values: dict[str, Any] = {
        "PROTOCOL_VERSION": framing.PROTOCOL_VERSION,
        "HEADER_SIZE": framing.HEADER_SIZE,
        "TRAILER_SIZE": framing.TRAILER_SIZE,
        "TAG_SIZE": framing.TAG_SIZE,
        "CRC_SIZE": framing.CRC_SIZE,
        "MAX_PAYLOAD": framing.MAX_PAYLOAD,
        "MAX_BODY": framing.MAX_BODY,
        "MAX_ENCODED": framing.MAX_ENCODED,
        "MAX_WIRE": framing.MAX_ENCODED + 2,
        "MIN_BODY": framing.MIN_BODY,
        "SEQ_MODULO": framing.SEQ_MODULO,
        "CRC_RESIDUE": f"0x{framing.CRC_RESIDUE:08X}",
        "CRC_CHECK": f"0x{zlib.crc32(b'123456789'):08X}",
        "AUTH_FLAG": f"0x{int(FrameFlag.AUTH):02X}",
        "KEY_SIZE": KEY_SIZE,
        "HOST_MAX_PAYLOAD": messages.HOST_MAX_PAYLOAD,
        "HOST_MAX_BODY": messages.HOST_MAX_BODY,
        "HOST_LARGEST_PAYLOAD": host_max,
        "NONE_U64": f"0x{NONE_U64:016X}",
        "NAK_TYPE": f"0x{messages.Nak.TYPE:02X}",
        "PUMP_LINK_RANGE": _range_text(*PUMP_LINK_RANGE),
        "HOST_LINK_RANGE": _range_text(*HOST_LINK_RANGE),
    }
    for lo, hi, fam in FAMILY_RANGES:
        values[f"RANGE_{fam.name}"] = _range_text(lo, hi)
    return {k: (lambda v=v: str(v)) for k, v in values.items()}


def _range_text(lo: int, hi: int) -> str:
    return f"0x{lo:02X}–0x{hi:02X}"


def frame_table() -> str:
    names = ("version", "msg_type", "flags", "seq", "payload_len")
    meanings = (
        f"protocol version, {framing.PROTOCOL_VERSION}",
        "message type (see [Message types](#message-types))",
        f"bit 0 AUTH ({_link('FrameFlag')}): an auth trailer follows the payload; other bits reserved, must be 0",
        f"sequence number chosen by the sender, modulo {framing.SEQ_MODULO}; a response carries its request's",
        f"length of the payload in bytes, 0..{framing.MAX_PAYLOAD}",
    )
    codes_ = framing.HEADER.format.lstrip("<")
    assert len(codes_) == len(names), "framing.HEADER changed: update spec.frame_table"
    rows = []
    off = 0
    for name, code, meaning in zip(names, codes_, meanings, strict=True):
        size = cs.FormatField("<", code).sizeof()
        rows.append((off, size, f"`{name}`", _int_name(code), meaning))
        off += size
    h = framing.HEADER_SIZE
    rows += [
        (h, "n", "`payload`", "bytes", "the message's fields (see its section)"),
        (
            f"{h}+n",
            framing.TRAILER_SIZE,
            "`auth`",
            "trailer",
            "only when flags has AUTH: see [Auth trailer](#auth-trailer)",
        ),
        ("end−4", framing.CRC_SIZE, "`crc32`", "u32", "CRC-32/ISO-HDLC of every byte before it"),
    ]
    return _table(["Offset", "Size", "Field", "Type", "Meaning"], rows)


def trailer_table() -> str:
    p = framing.AUTH_PREFIX.format.lstrip("<")
    k, c = (cs.FormatField("<", x).sizeof() for x in p)
    rows = [
        (
            0,
            k,
            "`key_id`",
            _int_name(p[0]) + " " + _link("Role"),
            "the key the frame is signed with = the sender's role",
        ),
        (
            k,
            c,
            "`counter`",
            _int_name(p[1]),
            "per-key counter, greater than every counter accepted before for this key",
        ),
        (
            k + c,
            framing.TAG_SIZE,
            "`tag`",
            "bytes",
            f"first {framing.TAG_SIZE} bytes of HMAC-SHA256(key, header ‖ payload ‖ key_id ‖ counter)",
        ),
    ]
    assert k + c + framing.TAG_SIZE == framing.TRAILER_SIZE
    return _table(["Offset in trailer", "Size", "Field", "Type", "Meaning"], rows)


def frame_error_table() -> str:
    rows = []
    for kind in FrameErrorKind:
        cond, action = FRAME_ERROR_ACTIONS[kind]
        rows.append((f"`{kind.value}`", cond, action))
    return _table(["Kind", "When", "Receiver does"], rows)


def family_table() -> str:
    rows = []
    for lo, hi, fam in FAMILY_RANGES:
        used = sum(1 for t in REGISTRY if lo <= t <= hi)
        rows.append((_range_text(lo, hi), fam.name, _family_direction(fam), _signed_text(fam), used))
    return _table(["Range", "Family", "Direction", "Signed", "Types used"], rows)


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
                _link(cls.NAME, msg_heading(cls)),
                cls.FAMILY.name,
                _family_direction(cls.FAMILY),
                sent_by(cls),
                f"0x{ack.TYPE:02X} {ack.NAME}" if ack is not None else "",
            )
        )
    return _table(["Type", "Name", "Family", "Direction", "Sent by (allowed roles)", "ACK"], rows)


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
    return _table(["Request", "ACK", "ACK − request", "Allowed roles", "command_id"], rows)


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
        rows.append((role.value, role.name, member_meaning(Role, role), ", ".join(allowed)))
    return _table(["key_id", "Role", "Who", "May send"], rows)


def nak_table() -> str:
    return _enum_table(NakReason)


def message_sections() -> str:
    out = []
    for lo, hi, fam in FAMILY_RANGES:
        members = [c for t, c in REGISTRY.items() if lo <= t <= hi]
        if not members:
            continue
        out.append(f"### {FAMILY_TEXT[fam].capitalize()} messages, {_range_text(lo, hi)}")
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


def _breakdown(v: dict[str, Any]) -> str:
    """One frame, field by field."""
    body = bytes.fromhex(v["body_hex"])
    cls = REGISTRY[v["msg_type"]]
    msg = cls.from_dict(v["fields"])
    rows: list[tuple[str, str]] = []
    off = 0
    fmt = framing.HEADER.format.lstrip("<")
    for name, code in zip(("version", "msg_type", "flags", "seq", "payload_len"), fmt, strict=True):
        n = cs.FormatField("<", code).sizeof()
        rows.append((f"header `{name}`", _hex(body[off : off + n])))
        off += n
    for s in cls.SCHEMA.subcons:
        raw = s.subcon.build(getattr(msg, s.name))
        assert body[off : off + len(raw)] == raw, (v["name"], s.name)
        shown = _hex(raw) if len(raw) <= 24 else _hex(raw[:24]) + f" … ({len(raw)} bytes)"
        rows.append((f"payload `{s.name}`", shown))
        off += len(raw)
    if "key_id" in v:
        rows.append(("auth `key_id`", _hex(body[off : off + 1])))
        rows.append(("auth `counter`", _hex(body[off + 1 : off + 9])))
        rows.append(("auth `tag`", _hex(body[off + 9 : off + 9 + framing.TAG_SIZE])))
        off += framing.TRAILER_SIZE
    rows.append(("`crc32`", _hex(body[off:])))
    assert off + framing.CRC_SIZE == len(body)
    return _table(["Part", "Bytes (hex)"], rows)


def _example(v: dict[str, Any], title: str) -> str:
    parts = [f"### {title}", ""]
    where = f"vector `{v['name']}`: {v['message']}, seq {v['seq']}"
    if "key_id" in v:
        where += f", key id {v['key_id']} ({Role(v['key_id']).name.lower()}), counter {v['counter']}"
    parts += [where + ".", "", _breakdown(v), "", "Body (before COBS):", "", _hex_block(bytes.fromhex(v["body_hex"]))]
    parts += ["", "Wire (delimiter, COBS(body), delimiter):", "", _hex_block(bytes.fromhex(v["wire_hex"]))]
    return "\n".join(parts)


def examples_section(vectors: list[dict[str, Any]]) -> str:
    named = by_name(vectors)
    return "\n\n".join(_example(named[name], title) for name, title in EXAMPLES)


def auth_example(vectors: list[dict[str, Any]]) -> str:
    v = by_name(vectors)[AUTH_EXAMPLE]
    key = bytes.fromhex(v["key_hex"])
    signed = bytes.fromhex(v["signed_hex"])
    mac = full_hmac(key, signed)
    assert mac[: framing.TAG_SIZE].hex() == v["tag_hex"]
    role = Role(v["key_id"]).name.lower()
    lines = [
        f"A {v['message']} request (type 0x{v['msg_type']:02X}, empty payload), seq {v['seq']}, "
        f"signed with the {role} test key (key id {v['key_id']}) at counter {v['counter']} "
        f"(vector `{v['name']}`).",
        "",
        "Key:",
        "",
        _hex_block(key),
        "",
        "Signed bytes (header with flags = AUTH, payload, key_id, counter):",
        "",
        _hex_block(signed),
        "",
        "HMAC-SHA256(key, signed bytes), all 32 bytes:",
        "",
        _hex_block(mac),
        "",
        f"Tag = the first {framing.TAG_SIZE} bytes:",
        "",
        _hex_block(mac[: framing.TAG_SIZE]),
        "",
        "Body = signed bytes ‖ tag ‖ CRC-32 (little-endian) of all of that:",
        "",
        _hex_block(bytes.fromhex(v["body_hex"])),
        "",
        "Wire:",
        "",
        _hex_block(bytes.fromhex(v["wire_hex"])),
    ]
    return "\n".join(lines)


def vector_summary(vectors: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for v in vectors:
        counts[v["expect"]] = counts.get(v["expect"], 0) + 1
    rows = [(f"`{k}`", n) for k, n in counts.items()]
    keys = [(r.value, r.name.lower(), f"`{k.hex()}`") for r, k in TEST_KEYS.items()]
    return (
        _table(["expect", "Vectors"], rows)
        + "\n\nTest keys (never use them in a device):\n\n"
        + _table(["key_id", "Role", "Key (hex)"], keys)
    )


def _sections(vectors: list[dict[str, Any]]) -> dict[str, Callable[[], str]]:
    s: dict[str, Callable[[], str]] = dict(_constants())
    s.update(
        FRAME_TABLE=frame_table,
        TRAILER_TABLE=trailer_table,
        FRAME_ERROR_TABLE=frame_error_table,
        FAMILY_TABLE=family_table,
        SUMMARY_TABLE=summary_table,
        ACK_TABLE=ack_pairs_table,
        COMMAND_ID_REQUESTS=command_id_requests,
        OTHER_REQUESTS=other_requests,
        ROLE_TABLE=role_table,
        NAK_TABLE=nak_table,
        MESSAGE_SECTIONS=message_sections,
        RECORD_SECTIONS=record_sections,
        ENUM_SECTIONS=enum_sections,
        AUTH_EXAMPLE=lambda: auth_example(vectors),
        EXAMPLES=lambda: examples_section(vectors),
        VECTOR_SUMMARY=lambda: vector_summary(vectors),
    )
    return s


def render_spec(vectors: list[dict[str, Any]] | None = None) -> str:
    if vectors is None:
        vectors = build_vectors()
    sections = _sections(vectors)
    template = TEMPLATE_PATH.read_text(encoding="utf-8")

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in sections:
            raise KeyError(f"spec_template.md: unknown placeholder {{{{{name}}}}}")
        return sections[name]()

    text = _PLACEHOLDER.sub(fill, template)
    return GENERATED_NOTICE + text.rstrip("\n") + "\n"


# ---------------------------------------------------------------- command line


def _outputs() -> dict[Path, str]:
    vectors = build_vectors()
    return {SPEC_PATH: render_spec(vectors), VECTORS_PATH: render_vectors(vectors)}


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(HERE.parent))
    except ValueError:
        return str(path)


def _stale(outputs: dict[Path, str]) -> list[Path]:
    return [p for p, text in outputs.items() if not p.exists() or p.read_bytes() != text.encode("utf-8")]


def stale_files() -> list[Path]:
    """Committed files that differ from what the code generates now."""
    return _stale(_outputs())


def main(write: bool = False, check: bool = False) -> int:
    """`thecal spec`: print SPEC.md; --write rewrites both files; --check exits 1 if stale."""
    outputs = _outputs()
    if write:
        for path, text in outputs.items():
            data = text.encode("utf-8")
            if path.exists() and path.read_bytes() == data:
                print(f"{_rel(path)} is up to date")
            else:
                path.write_bytes(data)
                print(f"wrote {_rel(path)}")
        return 0
    if check:
        stale = _stale(outputs)
        for p in stale:
            print(f"{_rel(p)} is stale: run `thecal spec --write`", file=sys.stderr)
        if not stale:
            print("protocol/SPEC.md and protocol/vectors.json are up to date")
        return 1 if stale else 0
    sys.stdout.write(outputs[SPEC_PATH])
    return 0
