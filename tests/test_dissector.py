"""The Wireshark dissector tools/thecal.lua: the committed file is the generated one, and
it really dissects. Without Wireshark here, it runs under lupa (Lua 5.1 to 5.4 and
LuaJIT, the Luas Wireshark has been built with) against tests/wireshark_mock.lua, a
strict stand-in for the Wireshark Lua API, on every frame of a real capture; the tree it
builds must hold the values the Python codec decodes from the same bytes."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.capture import PCAP_HEADER, PSEUDO_HEADER, RECORD_HEADER, Direction, Link
from protocol.codes import Role
from protocol.messages import (
    HOST_LINK_TYPES,
    REGISTRY,
    Hello,
    HostRx,
    HostTx,
    Nak,
    Program,
    Sensors,
    Status,
    TimeRequest,
)
from protocol.schema import Array, Blob, Record
from protocol.vectors import reference_prescription
from tests.captures import REPO, body, make_capture, patched_body, pseudo, raw_body
from tests.strategies import any_message, messages, scaled, seqs
from tools import dissector
from tools.decode import DecodedBody, decode_body

MOCK = Path(__file__).resolve().parent / "wireshark_mock.lua"
LUAS = ["lua51", "lua52", "lua53", "lua54", "luajit21"]


# ============================================================ the committed file


def test_the_committed_dissector_is_the_generated_one():
    assert dissector.LUA_PATH.read_text(encoding="utf-8") == dissector.render_lua(), (
        "tools/thecal.lua is stale: run `make spec` (or python -m tools.dissector --write)"
    )
    assert not dissector.is_stale()


def test_check_fails_on_a_stale_file_and_write_fixes_it(tmp_path, capsys):
    path = tmp_path / "thecal.lua"
    assert dissector.main(check=True, path=path) == 1  # missing
    path.write_text(dissector.render_lua().replace("SLEEP_UNTIL", "SLEEP_LATER"))
    assert dissector.main(check=True, path=path) == 1
    assert "is stale" in capsys.readouterr().err
    assert dissector.main(write=True, path=path) == 0
    assert path.read_text() == dissector.render_lua()
    assert dissector.main(check=True, path=path) == 0


def test_the_module_checks_the_committed_file():
    proc = subprocess.run([sys.executable, "-m", "tools.dissector", "--check"], cwd=REPO, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    shown = subprocess.run([sys.executable, "-m", "tools.dissector"], cwd=REPO, capture_output=True)
    assert shown.stdout == dissector.LUA_PATH.read_bytes()


def test_every_message_field_and_enum_member_is_declared():
    text = dissector.render_lua()
    for code, cls in REGISTRY.items():
        assert f'messages[0x{code:02X}] = {{\n    name = "{cls.NAME}"' in text
        for name in cls.FIELDS:
            assert f'"{dissector.field_abbr(cls, name)}"' in text
    for enum in dissector._used_enums():
        block = re.search(rf"local vs_{enum.__name__} = {{\n(.*?)\n}}", text, re.S).group(1)
        assert block.count("\n") + 1 == len(enum)
        for m in enum:
            assert f'[{m.value}] = "{m.name}",' in block
    assert len(set(dissector.all_abbrs())) == len(dissector.all_abbrs())


def test_lua_string_literals_survive_any_text():
    assert dissector.lua_str('a "b" \\ c\n') == '"a \\"b\\" \\\\ c\\010"'
    assert dissector.lua_str("µ") == '"\\194\\181"'


# ============================================================ running it


class Lua:
    """tools/thecal.lua loaded into one Lua runtime with the mocked Wireshark API."""

    def __init__(self, version: str) -> None:
        try:
            mod = importlib.import_module(f"lupa.{version}")
        except ImportError:
            pytest.skip(f"lupa has no {version} here")
        self.runtime = mod.LuaRuntime(encoding=None, unpack_returned_tuples=True)
        self.version = self.runtime.eval("_VERSION").decode()
        self.mock = self.runtime.execute(MOCK.read_bytes())
        self.runtime.execute(dissector.LUA_PATH.read_bytes())

    def dissect(self, data: bytes) -> tuple[Node, dict[str, str]]:
        root, cols, consumed = self.mock.dissect(data)
        assert consumed == len(data)
        return _node(root), {k.decode(): v.decode("utf-8", "replace") for k, v in cols.items()}


@dataclass
class Node:
    abbr: str | None
    label: str
    value: str | None
    experts: list[tuple[str, str]]
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            yield from c.walk()

    def find(self, abbr: str) -> list[Node]:
        return [n for n in self.walk() if n.abbr == abbr]

    def all_experts(self) -> list[str]:
        return [a for n in self.walk() for a, _ in n.experts]


def _text(v: Any) -> str | None:
    return v.decode("utf-8", "replace") if v is not None else None


def _seq(t: Any) -> list[Any]:
    return [t[i] for i in range(1, len(t) + 1)]


def _node(item: Any) -> Node:
    experts = [(_text(e.abbr), _text(e.text)) for e in _seq(item.experts)]
    return Node(
        _text(item.abbr), _text(item.label), _text(item.value), experts, [_node(c) for c in _seq(item.children)]
    )


@pytest.fixture(scope="module", params=LUAS)
def lua(request) -> Lua:
    return Lua(request.param)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[bytes]:
    """The data of every record of a real capture (pseudo-header + body), as Wireshark
    hands it to the dissector."""
    data = make_capture(tmp_path_factory.mktemp("dissect") / "run.pcap").read_bytes()
    out, off = [], PCAP_HEADER.size
    while off < len(data):
        _s, _u, incl, _o = RECORD_HEADER.unpack_from(data, off)
        out.append(data[off + RECORD_HEADER.size : off + RECORD_HEADER.size + incl])
        off += RECORD_HEADER.size + incl
    return out


def test_it_registers_for_user0_with_all_its_fields(lua):
    same = lua.runtime.eval("function(a, b) return rawequal(a, b) end")
    # 45 is WTAP_ENCAP_USER0, Wireshark's own number for DLT 147 captures
    assert same(lua.mock.tables[b"wtap_encap"][45], lua.mock.proto)
    assert list(lua.mock.tables[b"wtap_encap"].keys()) == [45]
    registered = [k.decode() for k in lua.mock.registered.keys()]
    assert all(a.startswith("thecal.") for a in registered)
    assert set(dissector.all_abbrs()) <= set(registered)
    declared = re.findall(r'ProtoField\.\w+\("([^"]+)"', dissector.LUA_PATH.read_text())
    assert sorted(declared) == sorted(registered)  # none left out of Proto.fields


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, bytes):
        return v.hex()
    return v


def _field_values(obj: Record, relayed: DecodedBody | None) -> list[tuple[str, str]]:
    out = []
    for sub in obj.SCHEMA.subcons:
        v = getattr(obj, sub.name)
        abbr = dissector.field_abbr(type(obj), sub.name)
        if isinstance(sub.subcon, Array):
            for rec in v:
                out += _field_values(rec, None)
        else:
            out.append((abbr, _value(v)))
        if isinstance(sub.subcon, Blob) and relayed is not None:
            out += expected_values(relayed)
    return out


def expected_values(b: DecodedBody) -> list[tuple[str, str]]:
    """What the dissector's tree must hold for a body, in tree order, from the Python codec."""
    out = [("thecal.type", str(b.msg_type)), ("thecal.seq", str(b.seq))]
    out += _field_values(b.message, b.relayed)
    if b.auth is not None:
        out += [("thecal.auth.key_id", str(b.auth.key_id)), ("thecal.auth.counter", str(b.auth.counter))]
    return out


COMPARED = {"thecal.type", "thecal.seq", "thecal.auth.key_id", "thecal.auth.counter", *dissector.all_abbrs()}


def test_it_dissects_a_real_capture_as_the_codec_decodes_it(lua, records):
    ends = {0: ("host", "pump"), 1: ("pump", "host"), 2: ("controller", "pump"), 3: ("pump", "controller")}
    for data in records:
        _v, link, direction, _f, _sim, _wall = PSEUDO_HEADER.unpack_from(data)
        decoded = decode_body(data[PSEUDO_HEADER.size :], Link(link))
        assert decoded.ok
        tree, cols = lua.dissect(data)
        got = [(n.abbr, n.value) for n in tree.walk() if n.abbr in COMPARED and n.value is not None]
        assert got == expected_values(decoded), (lua.version, decoded.name)
        assert tree.all_experts() == [], (lua.version, decoded.name)
        crcs = tree.find("thecal.crc")
        assert crcs and all(n.label.endswith("[correct]") for n in crcs)  # the Lua CRC-32 agrees
        assert cols["protocol"] == "THECAL"
        assert cols["info"].startswith(f"{decoded.name} seq={decoded.seq}")
        assert (cols["src"], cols["dst"]) == ends[direction]
        (top,) = tree.children
        assert top.label.startswith("Thecal pump protocol, " + decoded.name)


HOST_CLASSES = [c for t, c in REGISTRY.items() if t in HOST_LINK_TYPES]


@settings(max_examples=scaled(60))
@given(data=st.data())
def test_random_messages_of_every_type_dissect_as_the_codec_decodes_them(lua, data):
    """Every type, every field kind at its edges (u64 max, negative ints, every enum
    member, UTF-8 text, empty and full arrays), signed or not, on each Lua."""
    msg = data.draw(any_message())
    if isinstance(msg, HostRx | HostTx):  # relay a real host frame, as the pump does
        inner = data.draw(st.sampled_from(HOST_CLASSES).flatmap(messages))
        signer = data.draw(st.sampled_from([None, *Role]))
        msg = replace(msg, frame=body(inner, data.draw(seqs), signer))
    link = Link.HOST if msg.TYPE in HOST_LINK_TYPES else Link.PUMP
    role = data.draw(st.sampled_from([None, *Role])) if link is Link.HOST else None
    frame = body(msg, data.draw(seqs), role)
    decoded = decode_body(frame, link)
    assert decoded.ok
    tree, cols = lua.dissect(_record(link, frame))
    got = [(n.abbr, n.value) for n in tree.walk() if n.abbr in COMPARED and n.value is not None]
    assert got == expected_values(decoded)
    assert tree.all_experts() == []
    assert cols["info"].startswith(f"{msg.NAME} seq={decoded.seq}")


def _tree_of(lua: Lua, records: list[bytes], name: str, direction: Direction) -> tuple[Node, dict[str, str]]:
    for data in records:
        b = decode_body(data[PSEUDO_HEADER.size :])
        if b.name == name and data[2] == direction:
            return lua.dissect(data)
    raise AssertionError(f"no {name} in the capture")


def test_enums_show_their_names_and_relays_their_host_frame(lua, records):
    tree, cols = _tree_of(lua, records, "NAK", Direction.PUMP_TO_HOST)
    labels = [n.label for n in tree.walk()]
    assert "reason: OUT_OF_RANGE (3)" in labels
    assert "request_type: PROGRAM (0x42)" in labels
    assert "field: basal[0].start_s" in labels
    assert "reason=OUT_OF_RANGE" in cols["info"]

    tree, cols = _tree_of(lua, records, "HOST_RX", Direction.PUMP_TO_CONTROLLER)
    (relayed,) = tree.find("thecal.relayed")
    assert relayed.label.startswith("Relayed host-link frame: ")
    assert re.search(r"HOST_RX seq=\d+ time_ms=\d+ frame=\[\w+ seq=\d+ \[clinician#1\]", cols["info"])

    tree, _ = _tree_of(lua, records, "STATUS_ACK", Direction.PUMP_TO_HOST)
    (alarms,) = tree.find("thecal.status_ack.alarms")
    assert alarms.label == "alarms (1)"
    (entry,) = tree.find("thecal.alarm_entry")
    assert entry.label == (
        "AlarmEntry [0]: alarm=BATTERY_ERI priority=MEDIUM acknowledged=false condition_present=true "
        "silenced=false needs_reset=false"
    )
    assert [n.label for n in entry.children] == [
        "alarm: BATTERY_ERI (6)",
        "priority: MEDIUM (2)",
        "acknowledged: False",
        "condition_present: True",
        "silenced: False",
        "needs_reset: False",
    ]

    tree, cols = _tree_of(lua, records, "BOLUS_REQUEST", Direction.HOST_TO_PUMP)
    (auth,) = tree.find("thecal.auth")
    assert auth.label == "Auth trailer: patient #1"
    assert auth.children[0].label == "key_id: PATIENT (2)"
    assert "[patient#1]" in cols["info"]


# ============================================================ broken input


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def _record(link: Link, frame: bytes) -> bytes:
    direction = Direction.HOST_TO_PUMP if link is Link.HOST else Direction.CONTROLLER_TO_PUMP
    return pseudo(link, direction) + frame


BROKEN = {
    "bad_crc": (_record(Link.HOST, _flip(body(Hello(), 7, Role.CLINICIAN), 20)), "thecal.bad_crc", "bad CRC"),
    "unknown_type": (_record(Link.HOST, raw_body(0x5F, b"")), "thecal.unknown_type", "unknown type"),
    "pump_type_on_host_link": (_record(Link.HOST, body(TimeRequest())), "thecal.wrong_link", "TIME_REQUEST seq=1"),
    "enum_out_of_range": (
        _record(Link.HOST, patched_body(Nak, "reason", 99)),
        "thecal.bad_value",
        "reason=99",
    ),
    "bool_out_of_range": (
        _record(Link.PUMP, patched_body(Sensors, "motor_stalled", 7)),
        "thecal.bad_value",
        "motor_stalled=7",
    ),
    "payload_too_short": (_record(Link.PUMP, raw_body(0x22, b"\x01\x02\x03")), "thecal.malformed", "too short"),
    "payload_too_long": (_record(Link.HOST, raw_body(Status.TYPE, b"\x00")), "thecal.malformed", "extra bytes"),
    "body_too_short": (_record(Link.HOST, b"\x01\x41"), "thecal.malformed", "[too short]"),
    "no_body": (pseudo(1, 0), "thecal.malformed", "[no frame body]"),
    "short_record": (b"\x01\x01", "thecal.malformed", "[malformed record]"),
    "pseudo_version": (pseudo(1, 0, version=9) + body(Hello()), "thecal.malformed", "pseudo-header version"),
    "relayed_bad_crc": (
        _record(Link.PUMP, body(HostRx(time_ms=5, frame=_flip(body(Status(), 9, Role.PATIENT), 9)))),
        "thecal.bad_crc",
        "frame=[STATUS seq=",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_gets_an_expert_info_not_a_lua_error(lua, case):
    data, expert, info = BROKEN[case]
    tree, cols = lua.dissect(data)
    assert expert in tree.all_experts()
    assert info in cols["info"]


@pytest.fixture(scope="module")
def lua54() -> Lua:
    return Lua("lua54")


def _prescription_program(command_id: int) -> Program:
    return Program(command_id=command_id, **reference_prescription())


# Real frames to mutate: a signed PROGRAM (text, array, auth), a STATUS, and a HOST_RX
# relaying a PROGRAM (a frame inside a frame).
MUTABLE = [
    _record(Link.HOST, body(_prescription_program(1), 3, Role.CLINICIAN)),
    _record(Link.HOST, body(Status(), 4)),
    _record(Link.PUMP, body(HostRx(time_ms=1, frame=body(_prescription_program(2), 5, Role.CLINICIAN)))),
]


@settings(max_examples=scaled(200))
@given(data=st.binary(max_size=300), link=st.sampled_from([Link.HOST, Link.PUMP]))
def test_random_bodies_never_raise_in_lua(lua54, data, link):
    lua54.dissect(_record(link, data))


@settings(max_examples=scaled(300))
@given(data=st.data())
def test_mutated_real_frames_never_raise_in_lua(lua54, data):
    frame = data.draw(st.sampled_from(MUTABLE))
    at = data.draw(st.integers(PSEUDO_HEADER.size, len(frame) - 1))
    value = data.draw(st.integers(0, 255))
    keep = data.draw(st.integers(PSEUDO_HEADER.size, len(frame)))
    tree, _ = lua54.dissect((frame[:at] + bytes([value]) + frame[at + 1 :])[:keep])
    if keep < len(frame) or value != frame[at]:
        assert tree.all_experts(), "a changed frame must be flagged (at least by its CRC)"
