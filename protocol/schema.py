"""Message declarations in construct, and the fast codec compiled from them.

Each message is declared once, as a construct Struct of named, documented fields drawn
from the small vocabulary below. From that one declaration come:
  - the message's frozen dataclass (fields in declaration order),
  - the reference codec (construct itself: `Msg.SCHEMA.parse/build`),
  - the fast codec (Python source generated from the Struct and exec'd once: one
    struct.unpack_from per run of fixed fields; interpreted construct costs ~25-60 us
    per parse, which would cap the link far below its target),
  - the byte tables of protocol/SPEC.md and the vectors file.
Tests hold the fast codec to the reference codec on random messages.

Field vocabulary: U8..U64, I8..I64 (little-endian integers), Bool, EnumField(U8/U16,
IntEnum), Text(max_bytes) (u8 length + UTF-8), Blob(max_bytes) (u16 length + bytes),
Array(max_items, Record) (u8 count + fixed-size records).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from enum import IntEnum
from typing import Any, ClassVar

import construct as cs

from .codes import MessageFamily, NakReason, Role
from .errors import DecodeError, EncodeError

U8, U16, U32, U64 = cs.Int8ul, cs.Int16ul, cs.Int32ul, cs.Int64ul
I8, I16, I32, I64 = cs.Int8sl, cs.Int16sl, cs.Int32sl, cs.Int64sl

NONE_U64 = (1 << 64) - 1  # "no value" in a u64 time field (e.g. low_reservoir_at_s)
NONE_U32 = (1 << 32) - 1  # "not known" in a u32 volume (a reservoir never filled)
NONE_I32 = -(1 << 31)  # "none" in an i32 difference (nothing to compare with)

_new = object.__new__
_setattr = object.__setattr__


# ---------------------------------------------------------------- field vocabulary


class EnumField(cs.Adapter):
    """An integer that must be a member of `enum`; decodes to the member."""

    def __init__(self, subcon: cs.FormatField, enum: type[IntEnum]) -> None:
        super().__init__(subcon)
        self.enum = enum

    def _decode(self, obj, context, path):
        try:
            return self.enum(obj)
        except ValueError:
            raise cs.ValidationError(f"{obj} is not a {self.enum.__name__}", path=path) from None

    def _encode(self, obj, context, path):
        # A plain int or a member of this enum: not a bool, a float or another enum's member
        # that happens to share a value (the fast codec applies the same rule).
        if (type(obj) is not int and type(obj) is not self.enum) or obj not in self.enum._value2member_map_:
            raise cs.ValidationError(f"{obj!r} is not a {self.enum.__name__}", path=path)
        return int(obj)


class BoolField(cs.Adapter):
    """One byte, 0 or 1 only (any other value is malformed, not 'true')."""

    def __init__(self) -> None:
        super().__init__(cs.Int8ul)

    def _decode(self, obj, context, path):
        if obj > 1:
            raise cs.ValidationError(f"{obj} is not 0 or 1", path=path)
        return bool(obj)

    def _encode(self, obj, context, path):
        # True, False, or the ints 1 and 0 (not 1.0: the fast codec applies the same rule)
        if (type(obj) is not bool and type(obj) is not int) or obj not in (0, 1):
            raise cs.ValidationError(f"{obj!r} is not a bool", path=path)
        return int(obj)


class Text(cs.Adapter):
    """A UTF-8 string of at most `max_bytes` bytes after a u8 length."""

    def __init__(self, max_bytes: int) -> None:
        if not 0 < max_bytes <= 255:
            raise ValueError("Text max_bytes must be 1..255")
        super().__init__(cs.PascalString(cs.Int8ul, "utf-8"))
        self.max_bytes = max_bytes

    def _decode(self, obj, context, path):
        if len(obj.encode("utf-8")) > self.max_bytes:
            raise cs.ValidationError(f"text longer than {self.max_bytes} bytes", path=path)
        return obj

    def _encode(self, obj, context, path):
        if not isinstance(obj, str):
            raise cs.ValidationError(f"{obj!r} is not text", path=path)
        if len(obj.encode("utf-8")) > self.max_bytes:
            raise cs.ValidationError(f"text longer than {self.max_bytes} bytes", path=path)
        return obj


class Blob(cs.Adapter):
    """Opaque bytes, at most `max_bytes`, after a u16 length."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(cs.Prefixed(cs.Int16ul, cs.GreedyBytes))
        self.max_bytes = max_bytes

    def _decode(self, obj, context, path):
        if len(obj) > self.max_bytes:
            raise cs.ValidationError(f"blob longer than {self.max_bytes} bytes", path=path)
        return bytes(obj)

    def _encode(self, obj, context, path):
        if not isinstance(obj, bytes | bytearray):
            raise cs.ValidationError(f"{type(obj).__name__} is not bytes", path=path)
        if len(obj) > self.max_bytes:
            raise cs.ValidationError(f"blob longer than {self.max_bytes} bytes", path=path)
        return bytes(obj)


class Array(cs.Adapter):
    """At most `max_items` fixed-size records after a u8 count; decodes to a tuple."""

    def __init__(self, max_items: int, record: type[Record]) -> None:
        super().__init__(cs.PrefixedArray(cs.Int8ul, record.SCHEMA))
        self.max_items = max_items
        self.record = record

    def _decode(self, obj, context, path):
        if len(obj) > self.max_items:
            raise cs.ValidationError(f"more than {self.max_items} items", path=path)
        return tuple(self.record._from_container(c) for c in obj)

    def _encode(self, obj, context, path):
        # Exactly a list or tuple of exactly this record type, as the fast codec requires.
        if type(obj) is not list and type(obj) is not tuple:
            raise cs.ValidationError(f"{type(obj).__name__} is not a list or tuple", path=path)
        if len(obj) > self.max_items:
            raise cs.ValidationError(f"more than {self.max_items} items", path=path)
        out = []
        for item in obj:
            if type(item) is not self.record:
                raise cs.ValidationError(f"{item!r} is not a {self.record.__name__}", path=path)
            out.append(dataclasses.asdict(item))
        return out


def Bool() -> BoolField:  # noqa: N802 - reads like the other field constructors
    return BoolField()


# ---------------------------------------------------------------- records and messages


class Record:
    """Base of every generated dataclass (records inside arrays, and messages)."""

    SCHEMA: ClassVar[cs.Struct]
    FIELDS: ClassVar[tuple[str, ...]]

    @classmethod
    def _from_container(cls, c: Mapping[str, Any]):
        return cls(**{name: c[name] for name in cls.FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as names, bytes as hex, records as dicts."""
        return {name: _jsonable(getattr(self, name)) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Inverse of to_dict; raises EncodeError naming a missing, unknown or bad field
        (dotted inside an array, e.g. `basal.start_s`). A message is checked as a whole:
        what from_dict returns, encode accepts."""
        obj = _from_dict(cls, data, getattr(cls, "NAME", cls.__name__), "")
        if isinstance(obj, Message):
            cls._fast_build(obj)  # raises EncodeError naming the bad field
        return obj


class Message(Record):
    """Base of every message dataclass. Class attributes describe the message type."""

    TYPE: ClassVar[int]
    NAME: ClassVar[str]  # wire name, e.g. STATUS_ACK
    FAMILY: ClassVar[MessageFamily]
    ROLES: ClassVar[tuple[Role, ...]]  # host requests: roles allowed to send it
    DOC: ClassVar[str]
    ANSWERS: ClassVar[type[Message] | None]  # responses: the request they answer
    ACK: ClassVar[type[Message] | None]  # requests: their ACK type

    def encode_payload(self) -> bytes:
        return self._fast_build(self)

    @classmethod
    def decode_payload(cls, payload: bytes):
        return cls._fast_parse(payload)


def _jsonable(v: Any) -> Any:
    if isinstance(v, IntEnum):
        return v.name.lower()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, Record):
        return v.to_dict()
    return v


def _from_dict(cls: type, data: Any, msg: str, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        where = prefix[:-1] or None  # a record inside an array is named by the array
        raise EncodeError(msg, where, f"expected a mapping of fields, got {type(data).__name__}")
    unknown = set(data) - set(cls.FIELDS)
    if unknown:
        raise EncodeError(msg, prefix + sorted(map(str, unknown))[0], "no such field")
    values = {}
    for sub in cls.SCHEMA.subcons:
        if sub.name not in data:
            raise EncodeError(msg, prefix + sub.name, "missing field")
        values[sub.name] = _from_jsonable(msg, prefix + sub.name, sub.subcon, data[sub.name])
    return cls(**values)


def _from_jsonable(msg: str, field: str, sub: cs.Construct, v: Any) -> Any:
    if isinstance(sub, EnumField):
        if isinstance(v, str):
            try:
                return sub.enum[v.upper()]
            except KeyError:
                raise EncodeError(msg, field, f"{v!r} is not a {sub.enum.__name__}") from None
        if type(v) is int and v in sub.enum._value2member_map_:
            return sub.enum(v)
        return v
    if isinstance(sub, Blob) and isinstance(v, str):
        try:
            return bytes.fromhex(v)
        except ValueError:
            raise EncodeError(msg, field, "not a hex string") from None
    if isinstance(sub, Array) and isinstance(v, list | tuple):
        return tuple(x if type(x) is sub.record else _from_dict(sub.record, x, msg, field + ".") for x in v)
    return v


def _python_type(sub: cs.Construct) -> Any:
    if isinstance(sub, EnumField):
        return sub.enum
    if isinstance(sub, BoolField):
        return bool
    if isinstance(sub, Text):
        return str
    if isinstance(sub, Blob):
        return bytes
    if isinstance(sub, Array):
        return tuple[sub.record, ...]
    if isinstance(sub, cs.FormatField):
        return int
    raise TypeError(f"field type {sub!r} is outside the protocol's vocabulary")


def _fixed_code(sub: cs.Construct) -> str | None:
    """struct format character of a fixed-size field, or None for a variable one."""
    if isinstance(sub, cs.FormatField):
        return sub.fmtstr[1]
    if isinstance(sub, EnumField | BoolField):
        return sub.subcon.fmtstr[1]
    return None


def _make_class(name: str, schema: cs.Struct, base: type, namespace: dict[str, Any]) -> type:
    fields = []
    for sub in schema.subcons:
        if not sub.name:
            raise TypeError(f"{name}: every field needs a name")
        fields.append((sub.name, _python_type(sub.subcon)))
    cls = dataclasses.make_dataclass(name, fields, bases=(base,), frozen=True, namespace=namespace)
    cls.__module__ = "protocol.messages"
    cls.SCHEMA = schema
    cls.FIELDS = tuple(f for f, _ in fields)
    return cls


def record(name: str, schema: cs.Struct, doc: str = "") -> type[Record]:
    """A fixed-size record for use in Array(); every field must be fixed-size."""
    for sub in schema.subcons:
        if _fixed_code(sub.subcon) is None:
            raise TypeError(f"record {name}: field {sub.name} is not fixed-size")
    cls = _make_class(name, schema, Record, {"__doc__": doc})
    cls._fmt = struct.Struct("<" + "".join(_fixed_code(s.subcon) for s in schema.subcons))
    cls._fast_new = _fast_constructor(cls)
    cls._convert = _record_converter(cls)
    return cls


def _fast_constructor(cls: type) -> Any:
    """cls(*values) without the frozen dataclass __init__ (which costs ~1 us per call)."""
    args = ", ".join(cls.FIELDS)
    items = ", ".join(f"{f!r}: {f}" for f in cls.FIELDS)
    src = f"def _mk({args}):\n    o = _new(cls)\n    _setattr(o, '__dict__', {{{items}}})\n    return o\n"
    ns = {"_new": _new, "_setattr": _setattr, "cls": cls}
    exec(src, ns)  # noqa: S102 - source built from our own field names
    return ns["_mk"]


def _record_converter(cls: type, msg_name: str | None = None, prefix: str = "") -> Any:
    """Turns one struct.unpack tuple into a record, checking enum and bool fields.

    A DecodeError names `msg_name` (the message the record travels in) and the field as
    `prefix` + the record's field, e.g. `alarms.alarm`."""
    ns: dict[str, Any] = {"_mk": cls._fast_new, "_bad": _bad_value, "name": msg_name or cls.__name__}
    lines = ["def _conv(t):"]
    args = []
    for i, sub in enumerate(cls.SCHEMA.subcons):
        v = f"v{i}"
        lines.append(f"    {v} = t[{i}]")
        _emit_check(lines, ns, sub, v, "    ", "name", prefix + sub.name)
        args.append(v)
    lines.append(f"    return _mk({', '.join(args)})")
    exec("\n".join(lines) + "\n", ns)  # noqa: S102
    return ns["_conv"]


def _emit_check(
    lines: list[str], ns: dict, sub: cs.Renamed, v: str, ind: str, msg_name: str, field: str | None = None
) -> None:
    """Decode-side conversion for enum and bool fields (unknown values are rejected)."""
    inner = sub.subcon
    field = field or sub.name
    if isinstance(inner, EnumField):
        key = f"_E_{sub.name}"
        ns[key] = inner.enum._value2member_map_
        lines.append(f"{ind}try:")
        lines.append(f"{ind}    {v} = {key}[{v}]")
        lines.append(f"{ind}except KeyError:")
        lines.append(f"{ind}    _bad({msg_name}, {field!r}, {v})")
    elif isinstance(inner, BoolField):
        lines.append(f"{ind}if {v} > 1: _bad({msg_name}, {field!r}, {v})")
        lines.append(f"{ind}{v} = {v} == 1")


def _bad_value(msg_name: str, field: str, raw: Any) -> None:
    raise DecodeError(msg_name, NakReason.OUT_OF_RANGE, field, f"{raw!r} is not a valid value")


def _bad_length(msg_name: str, detail: str) -> None:
    raise DecodeError(msg_name, NakReason.BAD_LENGTH, None, detail)


def _compile_parse(cls: type) -> Any:
    """Generate `parse(payload) -> cls` from the Struct (see module docstring)."""
    ns: dict[str, Any] = {
        "_mk": cls._fast_new,
        "_bad": _bad_value,
        "_badlen": _bad_length,
        "_serr": struct.error,
        "name": cls.NAME if hasattr(cls, "NAME") else cls.__name__,
    }
    body: list[str] = []
    checks: list[str] = []
    out_vars: list[str] = []
    run: list[tuple[int, cs.Renamed]] = []
    off_known: int | None = 0  # offset when statically known

    def flush() -> None:
        nonlocal off_known
        if not run:
            return
        fmt = struct.Struct("<" + "".join(_fixed_code(s.subcon) for _, s in run))
        key = f"_S{len(ns)}"
        ns[key] = fmt
        names = [f"v{i}" for i, _ in run]
        off = str(off_known) if off_known is not None else "off"
        body.append(f"    {', '.join(names)}, = {key}.unpack_from(buf, {off})")
        if off_known is not None:
            off_known += fmt.size
        else:
            body.append(f"    off += {fmt.size}")
        for i, s in run:
            _emit_check(checks, ns, s, f"v{i}", "    ", "name")
        run.clear()

    for i, sub in enumerate(cls.SCHEMA.subcons):
        inner = sub.subcon
        out_vars.append(f"v{i}")
        if _fixed_code(inner) is not None:
            run.append((i, sub))
            continue
        flush()
        if off_known is not None:
            body.append(f"    off = {off_known}")
            off_known = None
        if isinstance(inner, Text):
            body += [
                "    n = buf[off]",
                "    off += 1",
                f"    v{i} = buf[off:off + n]",
                f"    if len(v{i}) != n: _badlen(name, 'text {sub.name} runs past the payload')",
                "    off += n",
                f"    if n > {inner.max_bytes}: _bad(name, {sub.name!r}, n)",
                "    try:",
                f"        v{i} = v{i}.decode('utf-8')",
                "    except UnicodeDecodeError:",
                f"        _bad(name, {sub.name!r}, v{i})",
            ]
        elif isinstance(inner, Blob):
            body += [
                "    n = buf[off] | (buf[off + 1] << 8)",
                "    off += 2",
                f"    if n > {inner.max_bytes}: _bad(name, {sub.name!r}, n)",
                f"    v{i} = buf[off:off + n]",
                f"    if len(v{i}) != n: _badlen(name, 'blob {sub.name} runs past the payload')",
                "    off += n",
            ]
        elif isinstance(inner, Array):
            rec = inner.record
            rk, ck = f"_R{i}", f"_C{i}"
            ns[rk] = rec._fmt
            ns[ck] = _record_converter(rec, ns["name"], sub.name + ".")
            body += [
                "    n = buf[off]",
                "    off += 1",
                f"    if n > {inner.max_items}: _bad(name, {sub.name!r}, n)",
                f"    end = off + n * {rec._fmt.size}",
                f"    if end > len(buf): _badlen(name, 'array {sub.name} runs past the payload')",
                f"    v{i} = tuple(map({ck}, {rk}.iter_unpack(buf[off:end])))",
                "    off = end",
            ]
        else:  # pragma: no cover - _python_type already refused it
            raise TypeError(sub)
    flush()
    end = str(off_known) if off_known is not None else "off"
    src = ["def parse(buf):", "    try:"]
    src += ["    " + line for line in body] or ["        pass"]
    src += [
        "    except (_serr, IndexError):",
        "        _badlen(name, 'payload too short')",
        f"    if {end} != len(buf): _badlen(name, 'payload has ' + str(len(buf) - {end}) + ' extra bytes')",
    ]
    src += checks
    src.append(f"    return _mk({', '.join(out_vars)})")
    exec("\n".join(src) + "\n", ns)  # noqa: S102
    parse = ns["parse"]
    parse.__source__ = "\n".join(src)
    return parse


def _compile_build(cls: type) -> Any:
    """Generate `build(msg) -> bytes`; on any error fall back to a slow diagnosis that
    names the field (EncodeError), never a bare KeyError or struct.error."""
    ns: dict[str, Any] = {"_diagnose": _diagnose, "cls": cls, "_pk": struct.pack}
    parts: list[str] = []
    run: list[str] = []
    lines: list[str] = []

    def flush() -> None:
        if not run:
            return
        fmt = struct.Struct("<" + "".join(c for c, _ in run))
        key = f"_S{len(ns)}"
        ns[key] = fmt
        parts.append(f"{key}.pack({', '.join(e for _, e in run)})")
        run.clear()

    for sub in cls.SCHEMA.subcons:
        inner, attr = sub.subcon, f"m.{sub.name}"
        if isinstance(inner, EnumField | BoolField):
            run.append((_fixed_code(inner), _emit_build_check(lines, ns, sub, attr, "    ")))
        elif isinstance(inner, cs.FormatField):
            run.append((_fixed_code(inner), attr))
        else:
            flush()
            t = f"t_{sub.name}"
            if isinstance(inner, Text):
                lines.append(f"    {t} = {attr}.encode('utf-8')")
                lines.append(f"    if len({t}) > {inner.max_bytes}: raise ValueError")
                parts.append(f"bytes((len({t}),)) + {t}")
            elif isinstance(inner, Blob):
                lines.append(f"    {t} = {attr}")
                lines.append(
                    f"    if len({t}) > {inner.max_bytes} or not isinstance({t}, (bytes, bytearray)): raise ValueError"
                )
                parts.append(f"_pk('<H', len({t})) + bytes({t})")
            elif isinstance(inner, Array):
                rec = inner.record
                rk = f"_R_{sub.name}"
                ns[rk] = _record_builder(rec)
                lines.append(f"    {t} = {attr}")
                lines.append(
                    f"    if len({t}) > {inner.max_items} or type({t}) is not tuple and type({t}) is not list:"
                    " raise ValueError"
                )
                parts.append(f"bytes((len({t}),)) + b''.join(map({rk}, {t}))")
    flush()
    src = ["def build(m):", "    try:"]
    src += ["    " + line for line in lines]
    src.append(f"        return {' + '.join(parts) if parts else 'b' + repr('')}")
    src += ["    except Exception:", "        _diagnose(cls, m)", "        raise"]
    exec("\n".join(src) + "\n", ns)  # noqa: S102
    build = ns["build"]
    build.__source__ = "\n".join(src)
    return build


def _emit_build_check(lines: list[str], ns: dict, sub: cs.Renamed, attr: str, ind: str) -> str:
    """Encode-side check of an enum or bool field; returns the expression to pack.

    The value must be of the field's own type (the enum or bool) or a plain int, and a
    member (0 or 1 for a bool). A dict lookup alone would let True through for an enum
    value 1, and 1.0 for either (they hash and compare equal): the reference codec
    refuses those, so the fast codec must too."""
    inner = sub.subcon
    v = f"f_{sub.name}"
    lines.append(f"{ind}{v} = {attr}")
    if isinstance(inner, EnumField):
        key, tkey = f"_E_{sub.name}", f"_T_{sub.name}"
        ns[key] = {x: x for x in inner.enum._value2member_map_}
        ns[tkey] = inner.enum
        lines.append(f"{ind}if type({v}) is not {tkey} and type({v}) is not int: raise ValueError")
        return f"{key}[{v}]"
    ns["_B"] = {False: 0, True: 1}
    lines.append(f"{ind}if type({v}) is not bool and type({v}) is not int: raise ValueError")
    return f"_B[{v}]"


def _record_builder(rec: type) -> Any:
    ns: dict[str, Any] = {"rec": rec, "_fmt": rec._fmt}
    lines = ["def b(r):", "    if type(r) is not rec: raise TypeError"]
    args = []
    for sub in rec.SCHEMA.subcons:
        attr = f"r.{sub.name}"
        if isinstance(sub.subcon, EnumField | BoolField):
            args.append(_emit_build_check(lines, ns, sub, attr, "    "))
        else:
            args.append(attr)
    lines.append(f"    return _fmt.pack({', '.join(args)})")
    src = "\n".join(lines) + "\n"
    exec(src, ns)  # noqa: S102
    b = ns["b"]
    b.__source__ = src
    return b


def _diagnose(cls: type, m: Any) -> None:
    """Slow path after the fast build failed: find the field and raise EncodeError.

    It judges each field with the reference codec (construct), so the field it names is
    one the reference codec refuses too; a field inside an array record is named dotted,
    e.g. `basal.start_s`."""
    name = getattr(cls, "NAME", cls.__name__)
    if type(m) is not cls:
        raise EncodeError(name, None, f"expected a {cls.__name__}, got {type(m).__name__}")
    _diagnose_fields(name, cls.SCHEMA, m, "")
    raise EncodeError(name, None, "payload could not be built")


def _diagnose_fields(name: str, schema: cs.Struct, obj: Any, prefix: str) -> None:
    for sub in schema.subcons:
        field = prefix + sub.name
        inner = sub.subcon
        try:
            value = getattr(obj, sub.name)
        except AttributeError:
            raise EncodeError(name, field, "missing field") from None
        # Bools pass here as they do in struct and construct: True encodes as 1.
        if isinstance(inner, cs.FormatField) and not isinstance(value, int):
            raise EncodeError(name, field, f"{value!r} is not an integer")
        try:
            inner.build(value)
        except cs.ConstructError as e:
            if isinstance(inner, Array) and isinstance(value, list | tuple) and len(value) <= inner.max_items:
                # A bad value inside a record is named `array.field`; a wrong item or
                # count is the array's own fault (raised below).
                for item in value:
                    if type(item) is inner.record:
                        _diagnose_fields(name, inner.record.SCHEMA, item, field + ".")
            detail = str(e).split("\n")[-1].strip()
            if isinstance(inner, cs.FormatField):
                lo, hi = _int_range(inner)
                detail = f"{value!r} is outside {lo}..{hi}"
            raise EncodeError(name, field, detail) from None
        except Exception as e:  # noqa: BLE001 - any failure here is the field's fault
            raise EncodeError(name, field, f"{type(e).__name__}: {e}") from None


def _int_range(sub: cs.FormatField) -> tuple[int, int]:
    bits = 8 * sub.sizeof()
    if sub.fmtstr[1].islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def int_range(sub: cs.Construct) -> tuple[int, int] | None:
    """The integer range of a fixed-size integer field, for docs and generators."""
    if isinstance(sub, cs.FormatField):
        return _int_range(sub)
    return None


def compile_message(cls: type) -> None:
    cls._fast_new = _fast_constructor(cls)
    cls._fast_parse = staticmethod(_compile_parse(cls))
    cls._fast_build = staticmethod(_compile_build(cls))


def reference_parse(cls: type[Message], payload: bytes) -> Message:
    """Decode with interpreted construct: the slow, obviously-right codec."""
    c = cls.SCHEMA.parse(payload)
    if len(cls.SCHEMA.build(c)) != len(payload):
        raise DecodeError(cls.NAME, NakReason.BAD_LENGTH, None, "extra bytes")
    return cls._from_container(c)


def reference_build(msg: Message) -> bytes:
    return type(msg).SCHEMA.build({f: getattr(msg, f) for f in msg.FIELDS})


# ---------------------------------------------------------------- type ranges

FAMILY_RANGES: tuple[tuple[int, int, MessageFamily], ...] = (
    (0x01, 0x1F, MessageFamily.PUMP_TO_PUMP_HW),
    (0x20, 0x3F, MessageFamily.PUMP_HW_TO_CONTROLLER),
    (0x40, 0x5F, MessageFamily.HOST_REQUEST),
    (0x60, 0x8F, MessageFamily.HOST_RESPONSE),  # ACK = request + 0x20; NAK 0x80
    (0x90, 0x9F, MessageFamily.HOST_EVENT),
    (0xA0, 0xAF, MessageFamily.SIM_REQUEST),
    (0xB0, 0xBF, MessageFamily.SIM_RESPONSE),  # ACK = request + 0x10
)
PUMP_LINK_RANGE = (0x01, 0x3F)
HOST_LINK_RANGE = (0x40, 0xBF)


def family_of(msg_type: int) -> MessageFamily | None:
    for lo, hi, fam in FAMILY_RANGES:
        if lo <= msg_type <= hi:
            return fam
    return None


def max_size(sub: cs.Construct) -> int:
    """Largest encoding of a field or Struct (for the relay and frame-size checks)."""
    if isinstance(sub, cs.Struct):
        return sum(max_size(s.subcon) for s in sub.subcons)
    if isinstance(sub, cs.Renamed):
        return max_size(sub.subcon)
    if isinstance(sub, Text):
        return 1 + sub.max_bytes
    if isinstance(sub, Blob):
        return 2 + sub.max_bytes
    if isinstance(sub, Array):
        return 1 + sub.max_items * sub.record._fmt.size
    return sub.sizeof()


def make_message(
    msg_type: int,
    name: str,
    doc: str,
    fields: tuple[cs.Renamed, ...],
    roles: tuple[Role, ...] = (),
    answers: type[Message] | None = None,
) -> type[Message]:
    """Declare one message type: its wire code, wire name, meaning, fields, who may send it."""
    family = family_of(msg_type)
    if family is None:
        raise ValueError(f"{name}: type 0x{msg_type:02X} is in no family's range")
    class_name = "".join(part.capitalize() for part in name.split("_"))
    ns = {"__doc__": doc}
    cls = _make_class(class_name, cs.Struct(*fields), Message, ns)
    cls.TYPE = msg_type
    cls.NAME = name
    cls.FAMILY = family
    cls.ROLES = tuple(roles)
    cls.DOC = doc
    cls.ANSWERS = answers
    cls.ACK = None
    if answers is not None:
        answers.ACK = cls
    compile_message(cls)
    return cls
