"""protocol/SPEC.md: current with the code, complete, and right about what it claims."""

from __future__ import annotations

import os
import random
import re
import time
import zlib

import pytest
from cobs import cobs

from protocol import framing, spec, spec_types
from protocol.codes import MessageFamily, NakReason
from protocol.framing import FrameErrorKind
from protocol.messages import HOST_MAX_PAYLOAD, REGISTRY
from protocol.schema import FAMILY_RANGES, HOST_LINK_RANGE, Array, max_size
from protocol.specmd import anchor
from protocol.vectors import VECTORS_PATH, render_vectors
from tools import spec as tools_spec

SPEC_TEXT = tools_spec.SPEC_PATH.read_text(encoding="utf-8")
STALE = "protocol/SPEC.md is stale: run `thecal spec --write`"


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole heading line) up to the next heading of the same
    or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading)  # ValueError: the heading is missing
    out = []
    for line in lines[start + 1 :]:
        m = re.match(r"(#+) ", line)
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    return "\n".join(out)


def message_section(cls) -> str:
    return section(SPEC_TEXT, f"#### 0x{cls.TYPE:02X} {cls.NAME}")


# ---------------------------------------------------------------- the committed file


def test_committed_spec_is_current():
    assert SPEC_TEXT == tools_spec.render(), STALE


def test_rendering_is_fast_and_deterministic():
    t0 = time.perf_counter()
    first = tools_spec.render()
    elapsed = time.perf_counter() - t0
    assert first == tools_spec.render()
    # (The firmware chapters drive about a hundred in-process pumps: well under a second
    # alone, more on a loaded machine.)
    assert elapsed < 5.0, f"rendering SPEC.md took {elapsed:.2f} s"


def test_no_placeholder_is_left_unfilled():
    assert "{{" not in SPEC_TEXT and "}}" not in SPEC_TEXT


def test_every_host_side_chapter_has_a_place_in_the_template():
    used = set(re.findall(r"\{\{([A-Z0-9_]+)\}\}", spec.TEMPLATE_PATH.read_text(encoding="utf-8")))
    assert set(tools_spec.chapters()) <= used


def test_an_unknown_placeholder_is_an_error(tmp_path, monkeypatch):
    bad = tmp_path / "template.md"
    bad.write_text("# x\n\n{{NO_SUCH_SECTION}}\n", encoding="utf-8")
    monkeypatch.setattr(spec, "TEMPLATE_PATH", bad)
    with pytest.raises(KeyError, match="NO_SUCH_SECTION"):
        spec.render_spec()


def test_every_internal_link_has_a_target():
    anchors = {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", SPEC_TEXT, re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", SPEC_TEXT))
    assert links, "no internal links found: the link pattern is wrong"
    assert not links - anchors, f"links to missing headings: {sorted(links - anchors)}"


# ---------------------------------------------------------------- completeness


@pytest.mark.parametrize("cls", list(REGISTRY.values()), ids=lambda c: c.NAME)
def test_every_message_has_a_section_with_every_field(cls):
    assert f"0x{cls.TYPE:02X}" in SPEC_TEXT and cls.NAME in SPEC_TEXT
    body = message_section(cls)
    assert cls.DOC.split(".")[0] in body
    for sub in cls.SCHEMA.subcons:
        row = re.search(rf"^\| [^|]+ \| [^|]+ \| `{sub.name}` \|.*$", body, re.M)
        assert row, f"{cls.NAME}: field {sub.name} has no row in its byte table"
        if sub.docs:
            assert sub.docs.split(";")[0].split("(")[0].strip() in row.group(0)
    if not cls.SCHEMA.subcons:
        assert "No fields." in body


@pytest.mark.parametrize("cls", list(REGISTRY.values()), ids=lambda c: c.NAME)
def test_message_section_states_sizes_senders_and_answers(cls):
    body = message_section(cls)
    hi = max_size(cls.SCHEMA)
    assert re.search(rf"\| Payload \| .*\b{hi} bytes?|\| Payload \| empty", body), body
    if cls.FAMILY in (MessageFamily.HOST_REQUEST, MessageFamily.SIM_REQUEST):
        for role in cls.ROLES:
            assert f"{role.name.lower()} (key id {role.value})" in body
        assert f"0x{cls.ACK.TYPE:02X} {cls.ACK.NAME}" in body
        assert "0x80 NAK" in body
    if cls.ANSWERS is not None:
        assert f"0x{cls.ANSWERS.TYPE:02X} {cls.ANSWERS.NAME}" in body


def test_byte_table_offsets_are_the_encoded_offsets():
    # STATUS_ACK: fixed fields, then text, then 'var'; checked against the real encoding.
    body = section(SPEC_TEXT, "#### 0x61 STATUS_ACK")
    rows = re.findall(r"^\| (\d+|var) \| ([^|]+) \| `(\w+)` \|", body, re.M)
    assert [r[2] for r in rows] == list(REGISTRY[0x61].FIELDS)
    assert rows[0][0] == "0" and rows[2] == ("2", "8", "time_s") and rows[3][0] == "10"
    assert rows[4][:2] == ("18", "1 + n")  # drug: text
    assert all(r[0] == "var" for r in rows[5:])


def test_every_record_has_a_table():
    records = {s.subcon.record for c in REGISTRY.values() for s in c.SCHEMA.subcons if isinstance(s.subcon, Array)}
    assert {r.__name__ for r in records} >= {"BasalStep", "AlarmEntry", "LogEntry", "Tone"}
    for rec in records:
        body = section(SPEC_TEXT, f"### {rec.__name__}")
        assert f"{rec._fmt.size} bytes" in body
        for name in rec.FIELDS:
            assert f"| `{name}` |" in body, (rec.__name__, name)


def test_every_nak_reason_is_in_the_nak_table_with_its_meaning():
    body = section(SPEC_TEXT, "### NAK reasons")
    for reason in NakReason:
        meaning = spec_types.member_meaning(NakReason, reason)
        assert meaning, f"NakReason.{reason.name} has no comment in codes.py"
        assert f"| {reason.value} | {reason.name} | {meaning} |" in body


@pytest.mark.parametrize("enum", spec_types.enums(), ids=lambda e: e.__name__)
def test_every_enum_member_is_listed_and_documented(enum):
    body = section(SPEC_TEXT, "### NAK reasons") if enum is NakReason else section(SPEC_TEXT, f"### {enum.__name__}")
    for member in enum:
        assert spec_types.member_meaning(enum, member), f"{enum.__name__}.{member.name} needs a comment in codes.py"
        value = f"0x{member.value:02X}" if enum.__name__ == "FrameFlag" else str(member.value)
        assert f"| {value} | {member.name} |" in body, (enum.__name__, member.name)


def test_log_event_arguments_are_parsed():
    from protocol.codes import LogEvent

    body = section(SPEC_TEXT, "### LogEvent")
    for event in LogEvent:
        note = spec_types.member_meaning(LogEvent, event)
        arg0, arg1 = spec_types._log_args(note)
        if "arg0" in note:
            assert arg0 != "0 (unused)" and arg0 in note
        if "arg1" in note:
            assert arg1 != "0 (unused)" and arg1 in note
        assert f"| {event.value} | {event.name} |" in body
    assert "| reset cause ([ResetCause](#resetcause)) | boot count |" in body


def test_every_frame_error_kind_has_a_receiver_action():
    body = section(SPEC_TEXT, "### Receiving")
    for kind in FrameErrorKind:
        assert f"| `{kind.value}` |" in body


def test_every_family_range_is_listed():
    body = section(SPEC_TEXT, "## Message types")
    for lo, hi, fam in FAMILY_RANGES:
        assert f"| 0x{lo:02X}–0x{hi:02X} | {fam.name} |" in body


def test_constants_are_rendered_from_the_code():
    sizes = section(SPEC_TEXT, "### Sizes")
    assert f"| payload (`MAX_PAYLOAD`, the largest payload of any message) | {framing.MAX_PAYLOAD} |" in sizes
    assert f"| COBS-encoded body (`MAX_ENCODED`) | {framing.MAX_ENCODED} |" in sizes
    assert f"| a whole frame on the wire, with both delimiters | {framing.MAX_ENCODED + 2} |" in sizes
    crc = section(SPEC_TEXT, "### CRC-32")
    assert f"0x{framing.CRC_RESIDUE:08X}" in crc and "0xCBF43926" in crc
    body = section(SPEC_TEXT, "### Frame body")
    assert f"| `payload_len` | u16 | length of the payload in bytes, 0..{framing.MAX_PAYLOAD} |" in body


def test_worked_examples_come_from_the_vectors():
    import json

    vectors = {v["name"]: v for v in json.loads(VECTORS_PATH.read_text(encoding="utf-8"))}
    flat = SPEC_TEXT.replace("\n", " ")
    for name, _title in (*spec.EXAMPLES, (spec.AUTH_EXAMPLE, "")):
        v = vectors[name]
        wire = " ".join(v["wire_hex"][i : i + 2] for i in range(0, len(v["wire_hex"]), 2))
        assert wire in flat, name
    auth = section(SPEC_TEXT, "### Worked example: a signed HELLO")
    v = vectors[spec.AUTH_EXAMPLE]
    tag = " ".join(v["tag_hex"][i : i + 2] for i in range(0, len(v["tag_hex"]), 2))
    assert tag in auth


# ---------------------------------------------------------------- claims the prose makes


def test_ack_types_follow_the_stated_rule():
    for cls in REGISTRY.values():
        if cls.FAMILY is MessageFamily.HOST_REQUEST:
            assert cls.ACK is not None and cls.ACK.TYPE == cls.TYPE + 0x20, cls.NAME
        elif cls.FAMILY is MessageFamily.SIM_REQUEST:
            assert cls.ACK is not None and cls.ACK.TYPE == cls.TYPE + 0x10, cls.NAME
        if cls.FAMILY in (MessageFamily.HOST_REQUEST, MessageFamily.SIM_REQUEST):
            assert cls.ROLES, f"{cls.NAME}: a request nobody may send"


def test_host_link_messages_fit_a_relay():
    for t, cls in REGISTRY.items():
        if t >= HOST_LINK_RANGE[0]:
            assert max_size(cls.SCHEMA) <= HOST_MAX_PAYLOAD, cls.NAME


def test_status_reports_the_command_id_the_retry_rule_relies_on():
    assert "last_command_id" in REGISTRY[0x61].FIELDS
    text = section(SPEC_TEXT, "### No blind retries")
    for cls in REGISTRY.values():
        if cls.FAMILY is MessageFamily.HOST_REQUEST:
            assert f"`{cls.NAME}`" in text, cls.NAME


def _spec_cobs_encode(data: bytes) -> bytes:
    """The encoder pseudocode of SPEC.md, transcribed."""
    out = [0]
    code_at, code = 0, 1
    for i, b in enumerate(data):
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
        else:
            out.append(b)
            code += 1
            if code == 255 and i + 1 < len(data):
                out[code_at] = code
                code_at, code = len(out), 1
                out.append(0)
    out[code_at] = code
    return bytes(out)


def _spec_cobs_decode(seg: bytes) -> bytes:
    """The decoder pseudocode of SPEC.md, transcribed."""
    out = bytearray()
    i = 0
    while i < len(seg):
        code = seg[i]
        i += 1
        if i + code - 1 > len(seg):
            raise ValueError("BAD_COBS")
        out += seg[i : i + code - 1]
        i += code - 1
        if code != 255 and i < len(seg):
            out.append(0)
    return bytes(out)


def _cobs_cases():
    rng = random.Random(1)
    cases = [b"", b"\x00", b"\x00\x00", b"\x01", b"\x01" * 253, b"\x01" * 254, b"\x01" * 255, b"\x01" * 508]
    cases += [b"\x01" * 254 + b"\x00", b"\x01" * 254 + b"\x00\x01", b"\x00" + b"\x02" * 254]
    for n in (1, 10, 253, 254, 255, 300, 509, 1000):
        for density in (0.0, 0.01, 0.3):
            cases.append(bytes(0 if rng.random() < density else rng.randrange(1, 256) for _ in range(n)))
    return cases


def test_the_cobs_pseudocode_is_what_the_codec_does():
    for data in _cobs_cases():
        enc = _spec_cobs_encode(data)
        assert enc == cobs.encode(data), data[:8]
        assert 0 not in enc
        assert _spec_cobs_decode(enc) == data
        assert len(enc) <= len(data) + len(data) // 254 + 1
    # The trailing-0x01 form a decoder must also accept:
    assert _spec_cobs_decode(b"\xff" + b"\x01" * 254 + b"\x01") == b"\x01" * 254
    assert cobs.decode(b"\xff" + b"\x01" * 254 + b"\x01") == b"\x01" * 254
    with pytest.raises(ValueError):
        _spec_cobs_decode(b"\x05\x31\x32")


def test_the_crc_pseudocode_and_residue_hold():
    def crc32(data: bytes) -> int:
        crc = 0xFFFFFFFF
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        return crc ^ 0xFFFFFFFF

    assert crc32(b"123456789") == 0xCBF43926 == zlib.crc32(b"123456789")
    for n in (0, 1, 11, 100):
        data = os.urandom(n)
        assert crc32(data) == zlib.crc32(data)
        assert zlib.crc32(data + zlib.crc32(data).to_bytes(4, "little")) == framing.CRC_RESIDUE


# ---------------------------------------------------------------- thecal spec


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """tools_spec.main() pointed at copies in a scratch directory."""
    spec_path, vectors_path = tmp_path / "SPEC.md", tmp_path / "vectors.json"
    monkeypatch.setattr(tools_spec, "SPEC_PATH", spec_path)
    monkeypatch.setattr(tools_spec, "VECTORS_PATH", vectors_path)
    return spec_path, vectors_path


def test_write_then_check(scratch, capsys):
    spec_path, vectors_path = scratch
    assert tools_spec.main(check=True) == 1  # nothing written yet
    assert tools_spec.main(write=True) == 0
    assert spec_path.read_text(encoding="utf-8") == tools_spec.render()
    assert vectors_path.read_text(encoding="utf-8") == render_vectors()
    capsys.readouterr()
    assert tools_spec.main(check=True) == 0


@pytest.mark.parametrize("which", ["SPEC.md", "vectors.json"])
def test_check_names_the_stale_file(scratch, capsys, which):
    tools_spec.main(write=True)
    target = next(p for p in scratch if p.name == which)
    target.write_text(target.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    capsys.readouterr()
    assert tools_spec.main(check=True) == 1
    err = capsys.readouterr().err
    assert f"{which} is stale" in err and "thecal spec --write" in err
    other = "vectors.json" if which == "SPEC.md" else "SPEC.md"
    assert other not in err


def test_without_flags_it_prints_the_spec(scratch, capsys):
    assert tools_spec.main() == 0
    assert capsys.readouterr().out == tools_spec.render()
    assert not any(p.exists() for p in scratch)


# ---------------------------------------------------------------- layering


def test_the_protocol_is_the_bottom_layer():
    """SPEC.md's firmware chapters are rendered on the host side (tools/spec*.py) because
    the protocol may import nothing above it: not the firmware, the emulator or the tools."""
    from tests.test_firmware_structure import ROOT, cycles, imports, modules

    proto = modules(ROOT / "protocol")
    for name, module in proto.items():
        above = {m for m in imports(module) if m.split(".")[0] in ("firmware", "emulator", "tools")}
        assert not above, (name, above)
    graph = {name: {m for m in imports(module) if m in proto and m != name} for name, module in proto.items()}
    assert cycles(graph) == []


def test_max_payload_is_the_largest_message_with_no_headroom():
    """SPEC.md's Sizes: MAX_PAYLOAD is exactly the largest payload of any message, HOST_RX
    relaying a whole host-link body. (It was twice that once: a receiver buffered for
    messages that cannot exist.)"""
    from protocol.messages import HOST_MAX_BODY, HostRx

    largest = max(max_size(c.SCHEMA) for c in REGISTRY.values())
    assert framing.MAX_PAYLOAD == largest == max_size(HostRx.SCHEMA) == 8 + 2 + HOST_MAX_BODY
    biggest = HostRx(time_ms=1, frame=bytes(HOST_MAX_BODY))
    assert len(framing.encode_body(HostRx.TYPE, 1, biggest.encode_payload())) <= framing.MAX_BODY
    sizes = section(SPEC_TEXT, "### Sizes")
    assert f"exactly the largest payload a message of this version can have, {largest}" in sizes.replace("\n", " ")
    assert "no headroom" in sizes.lower()


def test_the_cobs_vectors_the_spec_names_exist():
    import json

    names = {v["name"] for v in json.loads(VECTORS_PATH.read_text(encoding="utf-8"))}
    cobs_text = section(SPEC_TEXT, "### COBS")
    named = set(re.findall(r"`(HOST_TX/[\w-]+)`", cobs_text))
    assert named and named <= names
