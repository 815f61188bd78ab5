"""Render protocol/SPEC.md from spec_template.md and the protocol's own definitions.

The template holds the prose; every table, constant and example comes from the code
(framing constants, the construct Struct of each message, the enums in codes.py with
the meanings in their source comments, and the vectors of protocol/vectors.py), so the
document cannot drift from what the codec does. The chapters on the messages themselves
are protocol/spec_types.py's.

The protocol is the bottom layer: it knows nothing of the firmware or the emulator. The
chapters generated from them (therapy states, drug library, alarms, pump-link timing) are
rendered on the host side, by tools/spec_*.py, and handed to render_spec() as `chapters`;
tools/spec.py composes the whole document and is what `thecal spec` runs.

Placeholders in the template are `{{NAME}}` on their own or inside a line; each NAME is
a key of _sections() below or of the chapters handed in. An unknown placeholder is an
error.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import construct as cs

from . import framing, messages
from .auth import COUNTER_MAX, KEY_SIZE
from .codes import FrameFlag, Role
from .framing import FrameErrorKind
from .messages import REGISTRY
from .schema import FAMILY_RANGES, HOST_LINK_RANGE, NONE_I32, NONE_U32, NONE_U64, PUMP_LINK_RANGE, max_size
from .spec_types import (
    ack_pairs_table,
    command_id_requests,
    enum_sections,
    family_table,
    int_name,
    message_sections,
    nak_table,
    other_requests,
    range_text,
    record_sections,
    role_table,
    summary_table,
)
from .specmd import hex_block, hex_bytes, link, table
from .vectors import TEST_KEYS, build_vectors, by_name, full_hmac

HERE = Path(__file__).resolve().parent
TEMPLATE_PATH = HERE / "spec_template.md"
SPEC_PATH = HERE / "SPEC.md"

GENERATED_NOTICE = (
    "<!-- GENERATED FILE, do not edit: the prose is protocol/spec_template.md, every table,\n"
    "constant and example is generated from the code by protocol/spec.py and tools/spec*.py.\n"
    "Regenerate with `thecal spec --write` (or `make spec`). -->\n\n"
)
_PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")


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

# Messages shown byte by byte in "Worked examples" (names in protocol/vectors.py).
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("BOLUS_REQUEST/signed-patient", "A patient bolus request, signed with the patient key"),
    ("STATUS_ACK", "The pump's answer to STATUS (one latched alarm)"),
    ("NAK/out_of_range", "A NAK refusing a PROGRAM"),
    ("MOTOR_RUN", "Pump link: a bounded motor run for a patient bolus"),
    ("HOST_RX", "Pump link: the relay of the signed HELLO from Authentication"),
)
AUTH_EXAMPLE = "HELLO/signed-clinician"


# ---------------------------------------------------------------- generated sections


def _constants() -> dict[str, Callable[[], str]]:
    host_max = max(max_size(c.SCHEMA) for t, c in REGISTRY.items() if t >= 0x40)
    largest = max(max_size(c.SCHEMA) for c in REGISTRY.values())
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
        # (the counter read as microseconds, in Julian years)
        "COUNTER_YEARS": f"{round(COUNTER_MAX / 1e6 / (365.25 * 86_400), -3):,.0f}",
        "HOST_MAX_PAYLOAD": messages.HOST_MAX_PAYLOAD,
        "HOST_MAX_BODY": messages.HOST_MAX_BODY,
        "HOST_LARGEST_PAYLOAD": host_max,
        "LARGEST_PAYLOAD": largest,
        "LARGEST_MESSAGES": ", ".join(c.NAME for c in REGISTRY.values() if max_size(c.SCHEMA) == largest),
        "NONE_U64": f"0x{NONE_U64:016X}",
        "NONE_U32": f"0x{NONE_U32:08X}",
        "NONE_I32": NONE_I32,
        "NAK_TYPE": f"0x{messages.Nak.TYPE:02X}",
        "PUMP_LINK_RANGE": range_text(*PUMP_LINK_RANGE),
        "HOST_LINK_RANGE": range_text(*HOST_LINK_RANGE),
    }
    for lo, hi, fam in FAMILY_RANGES:
        values[f"RANGE_{fam.name}"] = range_text(lo, hi)
    return {k: (lambda v=v: str(v)) for k, v in values.items()}


def frame_table() -> str:
    names = ("version", "msg_type", "flags", "seq", "payload_len")
    meanings = (
        f"protocol version, {framing.PROTOCOL_VERSION}",
        "message type (see [Message types](#message-types))",
        f"bit 0 AUTH ({link('FrameFlag')}): an auth trailer follows the payload; other bits reserved, must be 0",
        f"sequence number chosen by the sender, modulo {framing.SEQ_MODULO}; a response carries its request's",
        f"length of the payload in bytes, 0..{framing.MAX_PAYLOAD}",
    )
    codes_ = framing.HEADER.format.lstrip("<")
    assert len(codes_) == len(names), "framing.HEADER changed: update spec.frame_table"
    rows = []
    off = 0
    for name, code, meaning in zip(names, codes_, meanings, strict=True):
        size = cs.FormatField("<", code).sizeof()
        rows.append((off, size, f"`{name}`", int_name(code), meaning))
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
    return table(["Offset", "Size", "Field", "Type", "Meaning"], rows)


def trailer_table() -> str:
    p = framing.AUTH_PREFIX.format.lstrip("<")
    k, c = (cs.FormatField("<", x).sizeof() for x in p)
    rows = [
        (
            0,
            k,
            "`key_id`",
            int_name(p[0]) + " " + link("Role"),
            "the key the frame is signed with = the sender's role",
        ),
        (
            k,
            c,
            "`counter`",
            int_name(p[1]),
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
    return table(["Offset in trailer", "Size", "Field", "Type", "Meaning"], rows)


def frame_error_table() -> str:
    rows = []
    for kind in FrameErrorKind:
        cond, action = FRAME_ERROR_ACTIONS[kind]
        rows.append((f"`{kind.value}`", cond, action))
    return table(["Kind", "When", "Receiver does"], rows)


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
        rows.append((f"header `{name}`", hex_bytes(body[off : off + n])))
        off += n
    for s in cls.SCHEMA.subcons:
        raw = s.subcon.build(getattr(msg, s.name))
        assert body[off : off + len(raw)] == raw, (v["name"], s.name)
        shown = hex_bytes(raw) if len(raw) <= 24 else hex_bytes(raw[:24]) + f" … ({len(raw)} bytes)"
        rows.append((f"payload `{s.name}`", shown))
        off += len(raw)
    if "key_id" in v:
        rows.append(("auth `key_id`", hex_bytes(body[off : off + 1])))
        rows.append(("auth `counter`", hex_bytes(body[off + 1 : off + 9])))
        rows.append(("auth `tag`", hex_bytes(body[off + 9 : off + 9 + framing.TAG_SIZE])))
        off += framing.TRAILER_SIZE
    rows.append(("`crc32`", hex_bytes(body[off:])))
    assert off + framing.CRC_SIZE == len(body)
    return table(["Part", "Bytes (hex)"], rows)


def _example(v: dict[str, Any], title: str) -> str:
    parts = [f"### {title}", ""]
    where = f"vector `{v['name']}`: {v['message']}, seq {v['seq']}"
    if "key_id" in v:
        where += f", key id {v['key_id']} ({Role(v['key_id']).name.lower()}), counter {v['counter']}"
    parts += [where + ".", "", _breakdown(v), "", "Body (before COBS):", "", hex_block(bytes.fromhex(v["body_hex"]))]
    parts += ["", "Wire (delimiter, COBS(body), delimiter):", "", hex_block(bytes.fromhex(v["wire_hex"]))]
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
        hex_block(key),
        "",
        "Signed bytes (header with flags = AUTH, payload, key_id, counter):",
        "",
        hex_block(signed),
        "",
        "HMAC-SHA256(key, signed bytes), all 32 bytes:",
        "",
        hex_block(mac),
        "",
        f"Tag = the first {framing.TAG_SIZE} bytes:",
        "",
        hex_block(mac[: framing.TAG_SIZE]),
        "",
        "Body = signed bytes ‖ tag ‖ CRC-32 (little-endian) of all of that:",
        "",
        hex_block(bytes.fromhex(v["body_hex"])),
        "",
        "Wire:",
        "",
        hex_block(bytes.fromhex(v["wire_hex"])),
    ]
    return "\n".join(lines)


def vector_summary(vectors: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for v in vectors:
        counts[v["expect"]] = counts.get(v["expect"], 0) + 1
    rows = [(f"`{k}`", n) for k, n in counts.items()]
    keys = [(r.value, r.name.lower(), f"`{k.hex()}`") for r, k in TEST_KEYS.items()]
    return (
        table(["expect", "Vectors"], rows)
        + "\n\nTest keys (never use them in a device):\n\n"
        + table(["key_id", "Role", "Key (hex)"], keys)
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


def render_spec(
    vectors: list[dict[str, Any]] | None = None, chapters: Mapping[str, Callable[[], str]] | None = None
) -> str:
    """SPEC.md as text. `chapters` fills the placeholders the protocol cannot (the host
    side's, from the firmware and the emulator); a name both define is an error, so a
    chapter cannot silently replace one of the protocol's."""
    if vectors is None:
        vectors = build_vectors()
    sections = _sections(vectors)
    for name in chapters or {}:
        if name in sections:
            raise KeyError(f"chapter {name!r} is already one of the protocol's own sections")
    sections.update(chapters or {})
    template = TEMPLATE_PATH.read_text(encoding="utf-8")

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in sections:
            raise KeyError(f"spec_template.md: unknown placeholder {{{{{name}}}}}")
        return sections[name]()

    text = _PLACEHOLDER.sub(fill, template)
    return GENERATED_NOTICE + text.rstrip("\n") + "\n"
