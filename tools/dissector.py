"""Generate tools/thecal.lua, the Wireshark dissector for Thecal captures, from the
protocol's own definitions.

Every message type and field comes from protocol/messages.py (through the construct
Struct of each message, as protocol/spec_types.py reads them), every value_string from the
enums of protocol/codes.py, the sizes from protocol/framing.py and the record layout
from emulator/capture.py, so the dissector cannot drift from the codec: the tests hold
the committed file to what this module renders. The Lua that walks those tables (the
"engine" below) is written by hand once and works on Lua 5.1 to 5.4, the versions
Wireshark has been built with.

    python -m tools.dissector            print the dissector
    python -m tools.dissector --write    rewrite tools/thecal.lua (also `make spec`)
    python -m tools.dissector --check    exit 1 if tools/thecal.lua is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from enum import IntEnum
from pathlib import Path

import construct as cs

from emulator.capture import LINKTYPE_USER0, PSEUDO_HEADER, PSEUDO_VERSION, Direction
from emulator.capture import Link as CapLink
from protocol import framing
from protocol.codes import FrameFlag, Role
from protocol.messages import HOST_LINK_TYPES, REGISTRY, HostRx, HostTx, Message
from protocol.schema import Array, Blob, BoolField, EnumField, Record, Text
from protocol.spec_types import enums
from tools.decode import TYPE_CODE_FIELDS

HERE = Path(__file__).resolve().parent
LUA_PATH = HERE / "thecal.lua"
PROTO = "thecal"
WTAP_ENCAP_USER0 = 45  # Wireshark's own number for DLT_USER0 (147) captures
RELAYS = (HostRx, HostTx)  # their `frame` blob is a host-link frame body

# The engine reads these layouts at fixed offsets: a change to one must be a change here.
_LAYOUTS = {
    "framing.HEADER": (framing.HEADER.format, "<BBBHH"),
    "framing.AUTH_PREFIX": (framing.AUTH_PREFIX.format, "<BQ"),
    "capture.PSEUDO_HEADER": (PSEUDO_HEADER.format, "<BBBBIQ"),
}

GENERATED_NOTICE = """\
-- GENERATED FILE, do not edit: tools/dissector.py writes it from the protocol's own
-- definitions (protocol/messages.py, protocol/codes.py, protocol/framing.py and
-- emulator/capture.py). Regenerate with `make spec` or `python -m tools.dissector --write`.
"""

USAGE = f"""\
--
-- Wireshark dissector for Thecal captures (`thecal emulator --capture FILE`): pcap files
-- of link type USER0 (DLT {LINKTYPE_USER0}). Load it for one run:
--
--     wireshark -X lua_script:tools/thecal.lua capture.pcap
--     tshark -X lua_script:tools/thecal.lua -r capture.pcap -V
--
-- or for good by copying it into Wireshark's personal Lua plugins folder (Help > About
-- Wireshark > Folders > Personal Lua Plugins; on Linux ~/.local/lib/wireshark/plugins/).
-- While loaded it takes USER0 over from Wireshark's DLT_USER preferences.
--
-- Each record is a {PSEUDO_HEADER.size}-byte pseudo-header (link, direction, low 32 bits of the simulated
-- time in ms, wall time in us or 0) and one frame body as it was on the wire before COBS,
-- so there is nothing to un-COBS: header, payload, auth trailer (when flags has AUTH),
-- CRC-32. The frame's timestamp is the simulated time. The CRC is checked; the auth tag
-- is shown, not verified (the dissector holds no keys). The `frame` of a HOST_RX or
-- HOST_TX relay is dissected as the host-link frame it carries.
--
-- Display filters: thecal.type == 0x42, thecal.nak.reason == 3, thecal.auth.key_id == 1,
-- thecal.link == 2, thecal.program.command_id == 7, thecal.bad_crc, thecal.malformed ...
-- Fields are thecal.<message>.<field> (thecal.<record>.<field> inside arrays).
"""


# ---------------------------------------------------------------- names


def snake(name: str) -> str:
    """'AlarmEntry' -> 'alarm_entry'."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def owner_abbr(owner: type[Record]) -> str:
    """Filter prefix of a message (thecal.status_ack) or a record (thecal.alarm_entry)."""
    if issubclass(owner, Message):
        return f"{PROTO}.{owner.NAME.lower()}"
    return f"{PROTO}.{snake(owner.__name__)}"


def field_abbr(owner: type[Record], field: str) -> str:
    return f"{owner_abbr(owner)}.{field}"


def lua_str(text: str) -> str:
    """A Lua string literal any Lua from 5.1 on reads (decimal escapes, no \\u{})."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _vs_name(enum: type[IntEnum]) -> str:
    return f"vs_{enum.__name__}"


# ---------------------------------------------------------------- generated tables


def _records() -> list[type[Record]]:
    out: list[type[Record]] = []
    for cls in REGISTRY.values():
        for sub in cls.SCHEMA.subcons:
            if isinstance(sub.subcon, Array) and sub.subcon.record not in out:
                out.append(sub.subcon.record)
    return out


def _used_enums() -> list[type[IntEnum]]:
    used = {Role}
    for owner in [*REGISTRY.values(), *_records()]:
        for sub in owner.SCHEMA.subcons:
            if isinstance(sub.subcon, EnumField):
                used.add(sub.subcon.enum)
    return [e for e in enums() if e in used]


def _value_string(name: str, items: Iterable[tuple[int, str]], hex_keys: bool = False) -> str:
    key = "[0x{:02X}]" if hex_keys else "[{}]"
    body = "".join(f"    {key.format(v)} = {lua_str(n)},\n" for v, n in items)
    return f"local {name} = {{\n{body}}}\n"


def _field_entry(owner: type[Record], sub: cs.Renamed, indent: str) -> str:
    """One field descriptor: its kind, size and limits for the engine, and its ProtoField."""
    inner = sub.subcon
    abbr, name, doc = lua_str(field_abbr(owner, sub.name)), lua_str(sub.name), lua_str(sub.docs or "")
    if isinstance(inner, EnumField):
        size = inner.sizeof()
        vs = _vs_name(inner.enum)
        pf = f"ProtoField.uint{8 * size}({abbr}, {name}, base.DEC, {vs}, nil, {doc})"
        desc = f'kind = "enum", size = {size}, vs = {vs}, enum = {lua_str(inner.enum.__name__)}'
    elif isinstance(inner, BoolField):
        pf = f"ProtoField.bool({abbr}, {name}, base.NONE, nil, nil, {doc})"
        desc = 'kind = "bool", size = 1'
    elif isinstance(inner, Text):
        pf = f"ProtoField.string({abbr}, {name}, nil, {doc})"
        desc = f'kind = "text", max = {inner.max_bytes}'
    elif isinstance(inner, Blob):
        pf = f"ProtoField.bytes({abbr}, {name}, nil, {doc})"
        relay = "true" if owner in RELAYS and sub.name == "frame" else "false"
        desc = f'kind = "blob", max = {inner.max_bytes}, relay = {relay}'
    elif isinstance(inner, Array):
        pf = f"ProtoField.none({abbr}, {name}, {doc})"
        desc = f'kind = "array", max = {inner.max_items}, record = rec_{inner.record.__name__}'
    elif isinstance(inner, cs.FormatField):
        code = inner.fmtstr[1]
        size = inner.sizeof()
        signed = code.islower()
        if issubclass(owner, Message) and (owner.NAME, sub.name) in TYPE_CODE_FIELDS:
            pf = f"ProtoField.uint8({abbr}, {name}, base.HEX, vs_msg_type, nil, {doc})"
        else:
            pf = f"ProtoField.{'int' if signed else 'uint'}{8 * size}({abbr}, {name}, base.DEC, nil, nil, {doc})"
        desc = f'kind = "{"i" if signed else "u"}", size = {size}'
    else:
        raise TypeError(f"{owner.__name__}.{sub.name}: {inner!r} is not in the protocol's vocabulary")
    return f"{indent}{{ name = {name}, {desc},\n{indent}  field = {pf} }},\n"


def _fields_block(owner: type[Record], indent: str) -> str:
    return "".join(_field_entry(owner, sub, indent) for sub in owner.SCHEMA.subcons)


def _records_block() -> str:
    out = []
    for rec in _records():
        out.append(
            f"local rec_{rec.__name__} = {{\n"
            f"    name = {lua_str(rec.__name__)}, size = {rec._fmt.size},\n"
            f"    field = ProtoField.none({lua_str(owner_abbr(rec))}, {lua_str(rec.__name__)}, "
            f"{lua_str(rec.__doc__ or '')}),\n"
            f"    fields = {{\n{_fields_block(rec, '        ')}    }},\n}}\n"
        )
    names = ", ".join(f"rec_{r.__name__}" for r in _records())
    out.append(f"local record_list = {{ {names} }}\n")
    return "\n".join(out)


def _messages_block() -> str:
    out = ["local messages = {}\n", "local message_codes = {}\n"]
    for code, cls in REGISTRY.items():
        link = "HOST_LINK" if code in HOST_LINK_TYPES else "PUMP_LINK"
        fields = f"{{\n{_fields_block(cls, '        ')}    }}" if cls.FIELDS else "{}"
        out.append(
            f"messages[0x{code:02X}] = {{\n"
            f"    name = {lua_str(cls.NAME)}, link = {link},\n"
            f"    fields = {fields},\n}}\n"
            f"table.insert(message_codes, 0x{code:02X})\n"
        )
    return "\n".join(out)


def _constants_block() -> str:
    for what, (actual, expected) in _LAYOUTS.items():
        if actual != expected:
            raise RuntimeError(
                f"{what} is {actual!r}, the dissector engine reads {expected!r}: update tools/dissector.py"
            )
    if not framing.KNOWN_FLAGS == int(FrameFlag.AUTH) == 1:
        raise RuntimeError("the dissector engine knows one flag, AUTH in bit 0: update tools/dissector.py")
    values = {
        "PSEUDO_SIZE": PSEUDO_HEADER.size,
        "PSEUDO_VERSION": PSEUDO_VERSION,
        "PROTOCOL_VERSION": framing.PROTOCOL_VERSION,
        "HEADER_SIZE": framing.HEADER_SIZE,
        "AUTH_FLAG": int(FrameFlag.AUTH),
        "KNOWN_FLAGS": framing.KNOWN_FLAGS,
        "TRAILER_SIZE": framing.TRAILER_SIZE,
        "TAG_SIZE": framing.TAG_SIZE,
        "CRC_SIZE": framing.CRC_SIZE,
        "MIN_BODY": framing.MIN_BODY,
        "MAX_PAYLOAD": framing.MAX_PAYLOAD,
        "HOST_LINK": int(CapLink.HOST),
        "PUMP_LINK": int(CapLink.PUMP),
        "WTAP_ENCAP_USER0": WTAP_ENCAP_USER0,
    }
    return "".join(f"local {k} = {v}\n" for k, v in values.items())


_DIRECTION_ENDS = {
    Direction.HOST_TO_PUMP: ("host", "pump"),
    Direction.PUMP_TO_HOST: ("pump", "host"),
    Direction.CONTROLLER_TO_PUMP: ("controller", "pump"),
    Direction.PUMP_TO_CONTROLLER: ("pump", "controller"),
}


def _value_strings_block() -> str:
    out = [_value_string(_vs_name(e), ((m.value, m.name) for m in e)) for e in _used_enums()]
    out.append(_value_string("vs_msg_type", ((c, cls.NAME) for c, cls in REGISTRY.items()), hex_keys=True))
    out.append(_value_string("vs_link", ((m.value, m.name) for m in CapLink)))
    out.append(_value_string("vs_direction", ((m.value, m.name) for m in Direction)))
    ends = "".join(f"    [{d.value}] = {{ {lua_str(a)}, {lua_str(b)} }},\n" for d, (a, b) in _DIRECTION_ENDS.items())
    out.append(f"local direction_ends = {{\n{ends}}}\n")
    return "\n".join(out)


def all_abbrs() -> list[str]:
    """Filter names of every message and record field, each of which must be unique."""
    owners: list[type[Record]] = [*_records(), *REGISTRY.values()]
    return [owner_abbr(r) for r in _records()] + [field_abbr(o, s.name) for o in owners for s in o.SCHEMA.subcons]


def _check_unique() -> None:
    taken = set(re.findall(r'ProtoField\.\w+\("([^"]+)"', _ENGINE_FIELDS))
    for abbr in all_abbrs():
        if abbr in taken:
            raise RuntimeError(f"two Wireshark fields would be called {abbr}: rename one")
        taken.add(abbr)


def render_lua() -> str:
    _check_unique()
    parts = [
        GENERATED_NOTICE + USAGE,
        f'local thecal = Proto("{PROTO}", "Thecal pump protocol")\n',
        "-- ---------------------------------------------------------------- sizes and codes\n",
        _constants_block(),
        "-- ---------------------------------------------------------------- value strings (protocol/codes.py)\n",
        _value_strings_block(),
        _ENGINE_FIELDS,
        "-- ---------------------------------------------------------------- records (protocol/messages.py)\n",
        _records_block(),
        "-- ---------------------------------------------------------------- messages (protocol/messages.py)\n",
        _messages_block(),
        _ENGINE,
    ]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


# ---------------------------------------------------------------- the engine (hand-written Lua)

_ENGINE_FIELDS = """\
-- ---------------------------------------------------------------- fields of every record
local f = {
    pseudo = ProtoField.none("thecal.pseudo", "Pseudo-header", "written by the emulator before each frame body"),
    pseudo_version = ProtoField.uint8("thecal.pseudo.version", "Pseudo-header version", base.DEC),
    link = ProtoField.uint8("thecal.link", "Link", base.DEC, vs_link),
    direction = ProtoField.uint8("thecal.direction", "Direction", base.DEC, vs_direction),
    pseudo_flags = ProtoField.uint8("thecal.pseudo.flags", "Pseudo-header flags", base.HEX),
    sim_time_ms = ProtoField.uint32("thecal.sim_time_ms", "Simulated time (ms, low 32 bits)", base.DEC, nil, nil,
        "the full simulated time is the frame's timestamp"),
    wall_time_us = ProtoField.uint64("thecal.wall_time_us", "Wall time (us since 1970)", base.DEC, nil, nil,
        "0 when the capture was made with --no-capture-wall-time"),
    wall_time = ProtoField.absolute_time("thecal.wall_time", "Wall time", base.UTC),
    frame = ProtoField.none("thecal.frame", "Frame"),
    relayed = ProtoField.none("thecal.relayed", "Relayed host-link frame"),
    header = ProtoField.none("thecal.header", "Header"),
    version = ProtoField.uint8("thecal.version", "version", base.DEC),
    type = ProtoField.uint8("thecal.type", "msg_type", base.HEX, vs_msg_type),
    flags = ProtoField.uint8("thecal.flags", "flags", base.HEX),
    flag_auth = ProtoField.bool("thecal.flags.auth", "AUTH", 8, nil, AUTH_FLAG, "an auth trailer follows the payload"),
    seq = ProtoField.uint16("thecal.seq", "seq", base.DEC),
    payload_len = ProtoField.uint16("thecal.payload_len", "payload_len", base.DEC),
    payload = ProtoField.none("thecal.payload", "Payload"),
    payload_bytes = ProtoField.bytes("thecal.payload.bytes", "Payload bytes"),
    length8 = ProtoField.uint8("thecal.length8", "Length", base.DEC),
    length16 = ProtoField.uint16("thecal.length16", "Length", base.DEC),
    count = ProtoField.uint8("thecal.count", "Count", base.DEC),
    auth = ProtoField.none("thecal.auth", "Auth trailer"),
    key_id = ProtoField.uint8("thecal.auth.key_id", "key_id", base.DEC, vs_Role, nil, "the signer's role"),
    counter = ProtoField.uint64("thecal.auth.counter", "counter", base.DEC),
    tag = ProtoField.bytes("thecal.auth.tag", "tag", nil, "truncated HMAC-SHA256, not verified here"),
    crc = ProtoField.uint32("thecal.crc", "crc32", base.HEX),
}
local base_fields = {
    f.pseudo, f.pseudo_version, f.link, f.direction, f.pseudo_flags, f.sim_time_ms, f.wall_time_us, f.wall_time,
    f.frame, f.relayed, f.header, f.version, f.type, f.flags, f.flag_auth, f.seq, f.payload_len, f.payload,
    f.payload_bytes, f.length8, f.length16, f.count, f.auth, f.key_id, f.counter, f.tag, f.crc,
}
local ex = {
    bad_crc = ProtoExpert.new("thecal.bad_crc", "CRC-32 does not match", expert.group.CHECKSUM, expert.severity.ERROR),
    malformed = ProtoExpert.new("thecal.malformed", "Malformed", expert.group.MALFORMED, expert.severity.ERROR),
    bad_value = ProtoExpert.new("thecal.bad_value", "Value not allowed", expert.group.MALFORMED,
        expert.severity.ERROR),
    unknown_type = ProtoExpert.new("thecal.unknown_type", "Unknown message type", expert.group.UNDECODED,
        expert.severity.WARN),
    wrong_link = ProtoExpert.new("thecal.wrong_link", "Message type of the other link", expert.group.PROTOCOL,
        expert.severity.WARN),
}
thecal.experts = { ex.bad_crc, ex.malformed, ex.bad_value, ex.unknown_type, ex.wrong_link }
"""

_ENGINE = """\
-- ---------------------------------------------------------------- engine
-- Everything below is written once by hand; the tables above carry the protocol.

local field_list = {}
for _, pf in ipairs(base_fields) do table.insert(field_list, pf) end
for _, rec in ipairs(record_list) do
    table.insert(field_list, rec.field)
    for _, fd in ipairs(rec.fields) do table.insert(field_list, fd.field) end
end
for _, code in ipairs(message_codes) do
    for _, fd in ipairs(messages[code].fields) do table.insert(field_list, fd.field) end
end
thecal.fields = field_list

-- CRC-32/ISO-HDLC. Wireshark has been built with Lua 5.1 to 5.4, whose bit operations
-- differ (bit32 in 5.2, native operators from 5.3, which 5.1 and 5.2 cannot even parse),
-- so xor comes from whichever is there, with plain arithmetic as the last resort.
local TWO32 = 4294967296
local bxor
if bit32 then
    bxor = bit32.bxor
else
    local ok, chunk = pcall(load, "return function(a, b) return a ~ b end")
    if ok and type(chunk) == "function" then
        bxor = chunk()
    elseif bit then
        bxor = function(a, b) return bit.bxor(a, b) % TWO32 end
    else
        bxor = function(a, b)
            local r, p = 0, 1
            while a > 0 or b > 0 do
                local x, y = a % 2, b % 2
                if x ~= y then r = r + p end
                a, b, p = (a - x) / 2, (b - y) / 2, p * 2
            end
            return r
        end
    end
end

local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if c % 2 == 1 then c = bxor(math.floor(c / 2), 0xEDB88320) else c = math.floor(c / 2) end
    end
    crc_table[i] = c
end

local function crc32(s)
    local c = 0xFFFFFFFF
    for i = 1, #s do
        c = bxor(crc_table[bxor(c % 256, s:byte(i))], math.floor(c / 256))
    end
    return bxor(c, 0xFFFFFFFF)
end

local function int_text(v) return string.format("%d", v) end

-- One field at `off`; returns the offset after it and its text for the Info column, or
-- nil when it runs past the payload's end `pend` (the caller reports that).
local dissect_body

local function add_field(tvb, pinfo, tree, fd, off, pend)
    local k = fd.kind
    if k == "u" or k == "i" or k == "enum" or k == "bool" then
        if off + fd.size > pend then return nil end
        local r = tvb(off, fd.size)
        local item = tree:add_le(fd.field, r)
        if k == "enum" then
            local v = r:le_uint()
            local name = fd.vs[v]
            if name == nil then
                item:add_proto_expert_info(ex.bad_value, string.format("%d is not a %s", v, fd.enum))
                return off + fd.size, int_text(v)
            end
            return off + fd.size, name
        elseif k == "bool" then
            local v = r:uint()
            if v > 1 then
                item:add_proto_expert_info(ex.bad_value, string.format("%d is not 0 or 1", v))
            end
            return off + 1, v == 1 and "true" or (v == 0 and "false" or int_text(v))
        elseif fd.size == 8 then
            return off + 8, tostring(k == "i" and r:le_int64() or r:le_uint64())
        elseif k == "i" then
            return off + fd.size, int_text(r:le_int())
        end
        return off + fd.size, int_text(r:le_uint())
    elseif k == "text" then
        if off + 1 > pend then return nil end
        local n = tvb(off, 1):uint()
        if off + 1 + n > pend then return nil end
        local item = tree:add_packet_field(fd.field, tvb(off + 1, n), ENC_UTF_8)
        item:add(f.length8, tvb(off, 1))
        if n > fd.max then
            item:add_proto_expert_info(ex.bad_value, string.format("%d bytes, at most %d allowed", n, fd.max))
        end
        local s = n > 0 and tvb(off + 1, n):string(ENC_UTF_8) or ""
        return off + 1 + n, '"' .. s .. '"'
    elseif k == "blob" then
        if off + 2 > pend then return nil end
        local n = tvb(off, 2):le_uint()
        if off + 2 + n > pend then return nil end
        local item = tree:add(fd.field, tvb(off + 2, n))
        item:add_le(f.length16, tvb(off, 2))
        if n > fd.max then
            item:add_proto_expert_info(ex.bad_value, string.format("%d bytes, at most %d allowed", n, fd.max))
        end
        if fd.relay and n > 0 then
            return off + 2 + n, "[" .. dissect_body(tvb(off + 2, n):tvb(), pinfo, item, HOST_LINK, true) .. "]"
        end
        return off + 2 + n, string.format("<%d bytes>", n)
    elseif k == "array" then
        if off + 1 > pend then return nil end
        local n = tvb(off, 1):uint()
        local rec = fd.record
        local size = 1 + n * rec.size
        if off + size > pend then return nil end
        local item = tree:add(fd.field, tvb(off, size))
        item:append_text(string.format(" (%d)", n))
        item:add(f.count, tvb(off, 1))
        if n > fd.max then
            item:add_proto_expert_info(ex.bad_value, string.format("%d items, at most %d allowed", n, fd.max))
        end
        for i = 0, n - 1 do
            local ro = off + 1 + i * rec.size
            local rt = item:add(rec.field, tvb(ro, rec.size))
            rt:append_text(string.format(" [%d]", i))
            local o = ro
            local parts = {}
            for _, rfd in ipairs(rec.fields) do
                local text
                o, text = add_field(tvb, pinfo, rt, rfd, o, ro + rec.size)
                table.insert(parts, rfd.name .. "=" .. text)
            end
            rt:append_text(": " .. table.concat(parts, " "))
        end
        return off + size, string.format("[%d]", n)
    end
    error("thecal.lua: unknown field kind " .. tostring(k))
end

-- One frame body (header to CRC) in its own tvb; returns its summary for the Info column.
dissect_body = function(tvb, pinfo, parent, link, relayed)
    local n = tvb:len()
    local tree = parent:add(relayed and f.relayed or f.frame, tvb())
    if n < MIN_BODY then
        tree:add_proto_expert_info(ex.malformed,
            string.format("a body of %d bytes is shorter than the %d of header and CRC", n, MIN_BODY))
        return "[too short]"
    end
    local crc_ok = crc32(tvb:raw(0, n - CRC_SIZE)) == tvb(n - CRC_SIZE, CRC_SIZE):le_uint()

    local h = tree:add(f.header, tvb(0, HEADER_SIZE))
    h:add(f.version, tvb(0, 1))
    h:add(f.type, tvb(1, 1))
    h:add(f.flags, tvb(2, 1)):add(f.flag_auth, tvb(2, 1))
    h:add_le(f.seq, tvb(3, 2))
    h:add_le(f.payload_len, tvb(5, 2))
    local version, mtype, flags = tvb(0, 1):uint(), tvb(1, 1):uint(), tvb(2, 1):uint()
    local seq, plen = tvb(3, 2):le_uint(), tvb(5, 2):le_uint()
    local msg = messages[mtype]
    local name = msg and msg.name or string.format("0x%02X", mtype)
    tree:append_text(": " .. name)
    local summary = name .. " seq=" .. int_text(seq)
    local bad = {}

    if not crc_ok then table.insert(bad, "bad CRC") end
    if version ~= PROTOCOL_VERSION then
        h:add_proto_expert_info(ex.malformed, string.format("protocol version %d, not %d", version, PROTOCOL_VERSION))
        table.insert(bad, "bad version")
    end
    if flags >= 2 * KNOWN_FLAGS then  -- AUTH is bit 0, every other bit is reserved
        h:add_proto_expert_info(ex.malformed, string.format("reserved flag bits set in 0x%02X", flags))
        table.insert(bad, "bad flags")
    end
    local signed = flags % 2 == AUTH_FLAG
    local pend = HEADER_SIZE + plen
    local want = pend + (signed and TRAILER_SIZE or 0) + CRC_SIZE
    local role, counter
    if signed and want == n then
        local key_id = tvb(pend, 1):uint()
        role = vs_Role[key_id] and string.lower(vs_Role[key_id]) or ("key" .. int_text(key_id))
        counter = tostring(tvb(pend + 1, 8):le_uint64())
        summary = summary .. " [" .. role .. "#" .. counter .. "]"
    end
    if plen > MAX_PAYLOAD or want ~= n then
        h:add_proto_expert_info(ex.malformed,
            string.format("payload_len %d and flags make a %d-byte body, this one has %d bytes", plen, want, n))
        table.insert(bad, "bad length")
        if n - CRC_SIZE > HEADER_SIZE then
            tree:add(f.payload_bytes, tvb(HEADER_SIZE, n - CRC_SIZE - HEADER_SIZE))
        end
    elseif msg == nil then
        tree:add(f.payload_bytes, tvb(HEADER_SIZE, plen)):add_proto_expert_info(ex.unknown_type,
            string.format("no message has type 0x%02X", mtype))
        table.insert(bad, "unknown type")
    else
        local p = tree:add(f.payload, tvb(HEADER_SIZE, plen))
        p:append_text(string.format(": %s (0x%02X)", name, mtype))
        if msg.link ~= link then
            p:add_proto_expert_info(ex.wrong_link, string.format("%s is a %s-link message, seen on the %s link",
                name, string.lower(vs_link[msg.link]), string.lower(vs_link[link] or "?")))
        end
        local off, parts = HEADER_SIZE, {}
        for _, fd in ipairs(msg.fields) do
            local next_off, text = add_field(tvb, pinfo, p, fd, off, pend)
            if next_off == nil then
                p:add_proto_expert_info(ex.malformed, string.format("%s.%s runs past the payload", name, fd.name))
                table.insert(bad, "payload too short")
                off = nil
                break
            end
            off = next_off
            table.insert(parts, fd.name .. "=" .. text)
        end
        if off ~= nil and off < pend then
            p:add_proto_expert_info(ex.malformed, string.format("%d bytes after the last field", pend - off))
            table.insert(bad, "extra bytes")
        end
        if #parts > 0 then summary = summary .. " " .. table.concat(parts, " ") end
    end

    if role ~= nil then
        local a = tree:add(f.auth, tvb(pend, TRAILER_SIZE))
        a:add(f.key_id, tvb(pend, 1))
        a:add_le(f.counter, tvb(pend + 1, 8))
        a:add(f.tag, tvb(pend + 9, TAG_SIZE))
        a:append_text(": " .. role .. " #" .. counter)
    end

    local c = tree:add_le(f.crc, tvb(n - CRC_SIZE, CRC_SIZE))
    if crc_ok then
        c:append_text(" [correct]")
    else
        c:add_proto_expert_info(ex.bad_crc)
    end
    if #bad > 0 then summary = summary .. " [" .. table.concat(bad, ", ") .. "]" end
    return summary
end

function thecal.dissector(tvb, pinfo, root)
    pinfo.cols.protocol = "THECAL"
    local n = tvb:len()
    local tree = root:add(thecal, tvb())
    if n < PSEUDO_SIZE then
        tree:add_proto_expert_info(ex.malformed,
            string.format("a record of %d bytes is shorter than the %d-byte pseudo-header", n, PSEUDO_SIZE))
        pinfo.cols.info = "[malformed record]"
        return n
    end
    local p = tree:add(f.pseudo, tvb(0, PSEUDO_SIZE))
    p:add(f.pseudo_version, tvb(0, 1))
    p:add(f.link, tvb(1, 1))
    p:add(f.direction, tvb(2, 1))
    p:add(f.pseudo_flags, tvb(3, 1))
    p:add_le(f.sim_time_ms, tvb(4, 4))
    local wall = p:add_le(f.wall_time_us, tvb(8, 8))
    local wall_us = tvb(8, 8):le_uint64():tonumber()
    if wall_us == 0 then
        wall:append_text(" (not recorded)")
    else
        local secs = math.floor(wall_us / 1000000)
        p:add(f.wall_time, tvb(8, 8), NSTime.new(secs, math.floor((wall_us - secs * 1000000) * 1000)))
    end
    local version, link, dir = tvb(0, 1):uint(), tvb(1, 1):uint(), tvb(2, 1):uint()
    if version ~= PSEUDO_VERSION then
        p:add_proto_expert_info(ex.malformed,
            string.format("pseudo-header version %d, this dissector reads %d", version, PSEUDO_VERSION))
        pinfo.cols.info = "[unknown pseudo-header version]"
        return n
    end
    local ends = direction_ends[dir]
    if ends then
        pinfo.cols.src = ends[1]
        pinfo.cols.dst = ends[2]
    end
    if n == PSEUDO_SIZE then
        tree:add_proto_expert_info(ex.malformed, "no frame body after the pseudo-header")
        pinfo.cols.info = "[no frame body]"
        return n
    end
    local summary = dissect_body(tvb(PSEUDO_SIZE, n - PSEUDO_SIZE):tvb(), pinfo, tree, link, false)
    tree:append_text(", " .. summary)
    pinfo.cols.info = summary
    return n
end

DissectorTable.get("wtap_encap"):add(wtap_encap and wtap_encap.USER0 or WTAP_ENCAP_USER0, thecal)
"""


# ---------------------------------------------------------------- command line


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(HERE.parent))
    except ValueError:
        return str(path)


def is_stale(path: Path | None = None) -> bool:
    path = path or LUA_PATH
    return not path.exists() or path.read_bytes() != render_lua().encode("utf-8")


def main(write: bool = False, check: bool = False, path: Path | None = None) -> int:
    """Print the dissector; --write rewrites the file; --check exits 1 if it is stale."""
    path = path or LUA_PATH
    text = render_lua()
    data = text.encode("utf-8")
    if write:
        if path.exists() and path.read_bytes() == data:
            print(f"{_rel(path)} is up to date")
        else:
            path.write_bytes(data)
            print(f"wrote {_rel(path)}")
        return 0
    if check:
        if not path.exists() or path.read_bytes() != data:
            print(f"{_rel(path)} is stale: run `python -m tools.dissector --write` (or `make spec`)", file=sys.stderr)
            return 1
        print(f"{_rel(path)} is up to date")
        return 0
    sys.stdout.write(text)
    return 0


def _cli(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.dissector", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"rewrite {_rel(LUA_PATH)}")
    mode.add_argument("--check", action="store_true", help=f"exit 1 if {_rel(LUA_PATH)} is stale")
    args = p.parse_args(argv)
    return main(write=args.write, check=args.check)


if __name__ == "__main__":
    sys.exit(_cli())
