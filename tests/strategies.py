"""Hypothesis strategies built from the message declarations themselves.

Every strategy here is derived from a message's construct Struct (protocol/schema.py's
field vocabulary), never written per message, so a newly declared message is covered by
every property test without touching this file. A field type outside the vocabulary
raises TypeError here, so a new kind of field cannot slip through untested.

Besides valid values, this module lists values each kind of field must refuse
(`bad_values`), odd values on which the fast and reference codecs must agree
(`odd_values`), and where each field sits in an encoded payload (`field_spans`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import construct as cs
from hypothesis import settings
from hypothesis import strategies as st

from protocol import schema
from protocol.messages import REGISTRY
from protocol.schema import Array, Blob, BoolField, EnumField, Message, Record, Text

# Example counts are given for the "ci" profile (tests/conftest.py) and scale with the
# loaded profile, so the "long" profile runs every test proportionally longer.
CI_MAX_EXAMPLES = 100

MESSAGE_CLASSES: tuple[type[Message], ...] = tuple(REGISTRY.values())


def scaled(ci_examples: int) -> int:
    """`ci_examples` under the ci profile, scaled by the loaded profile's max_examples."""
    return max(1, ci_examples * settings.default.max_examples // CI_MAX_EXAMPLES)


def type_id(cls: type[Message]) -> str:
    """Test id of a message type: its wire name (so each type is its own test)."""
    return cls.NAME


# ---------------------------------------------------------------- valid values


def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Anywhere in lo..hi, with the edges and their neighbours drawn often."""
    edges = sorted({v for v in (lo, lo + 1, 0, 1, hi - 1, hi) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def clip_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in max_bytes."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def texts(max_bytes: int) -> st.SearchStrategy[str]:
    """UTF-8 text of at most max_bytes *bytes*: ASCII, multi-byte (2-4 byte sequences,
    NUL included) and text filled right up to the limit."""
    non_ascii = st.characters(min_codepoint=0x80, exclude_categories=("Cs",))
    return st.one_of(
        st.text(max_size=max_bytes).map(lambda t: clip_utf8(t, max_bytes)),
        st.text(non_ascii, max_size=max_bytes).map(lambda t: clip_utf8(t, max_bytes)),
        st.text(st.characters(max_codepoint=0x7F), min_size=max_bytes, max_size=max_bytes),
        st.text(min_size=max_bytes, max_size=max_bytes).map(lambda t: clip_utf8(t, max_bytes)),
    )


def blobs(max_bytes: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=min(max_bytes, 64)),
        st.binary(min_size=max(0, max_bytes - 3), max_size=max_bytes),
    )


@functools.cache
def field_values(sub: cs.Construct) -> st.SearchStrategy[Any]:
    """Valid values of one field, from its construct declaration."""
    if isinstance(sub, cs.Renamed):
        return field_values(sub.subcon)
    if isinstance(sub, EnumField):
        return st.sampled_from(list(sub.enum))
    if isinstance(sub, BoolField):
        return st.booleans()
    if isinstance(sub, Text):
        return texts(sub.max_bytes)
    if isinstance(sub, Blob):
        return blobs(sub.max_bytes)
    if isinstance(sub, Array):
        item = records(sub.record)
        return st.one_of(
            st.lists(item, max_size=min(sub.max_items, 4)),
            st.lists(item, max_size=sub.max_items),
            st.lists(item, min_size=sub.max_items, max_size=sub.max_items),
        ).map(tuple)
    rng = schema.int_range(sub)
    if rng is not None:
        return ints(*rng)
    raise TypeError(f"no strategy for field type {sub!r}: extend tests/strategies.py with the vocabulary")


@functools.cache
def records(cls: type[Record]) -> st.SearchStrategy[Record]:
    """Random instances of a record or message class."""
    return st.builds(cls, **{sub.name: field_values(sub.subcon) for sub in cls.SCHEMA.subcons})


def messages(cls: type[Message]) -> st.SearchStrategy[Message]:
    return records(cls)


def any_message() -> st.SearchStrategy[Message]:
    return st.sampled_from(MESSAGE_CLASSES).flatmap(messages)


seqs = ints(0, 0xFFFF)


# ---------------------------------------------------------------- invalid and odd values


class _Other(IntEnum):
    """A member of a foreign enum, whose value collides with most enums' members."""

    ONE = 1


@dataclass(frozen=True)
class _NotARecord:
    """Looks like a record to duck typing, but is not one."""

    x: int = 0


def non_member(enum: type[IntEnum], hi: int) -> int:
    """The smallest value that fits the field's width but is not a member."""
    return next(v for v in range(hi + 1) if v not in enum._value2member_map_)


def wire_range(sub: EnumField) -> tuple[int, int]:
    rng = schema.int_range(sub.subcon)
    assert rng is not None
    return rng


def bad_values(sub: cs.Construct) -> list[Any]:
    """Values an encoder must refuse for this field."""
    if isinstance(sub, EnumField):
        lo, hi = wire_range(sub)
        return [non_member(sub.enum, hi), -1, hi + 1, "x", None, 1.0, True, _Other.ONE, next(iter(sub.enum)).name]
    if isinstance(sub, BoolField):
        return [2, -1, 256, 1.0, "1", None, b"\x01"]
    if isinstance(sub, Text):
        n = sub.max_bytes
        return [
            "a" * (n + 1),
            "é" * (n // 2 + 1),  # few enough characters, too many bytes
            "\U0001f600" * (n // 4 + 1),
            "\ud800",  # a lone surrogate has no UTF-8 encoding
            b"abc",
            None,
            5,
        ]
    if isinstance(sub, Blob):
        return [bytes(sub.max_bytes + 1), "ab", None, 5, [1, 2]]
    if isinstance(sub, Array):
        item = a_valid(sub.record)
        return [
            (item,) * (sub.max_items + 1),
            (_NotARecord(),),
            (item, 5),
            ({f: getattr(item, f) for f in item.FIELDS},),
            None,
            5,
            "ab",
        ]
    rng = schema.int_range(sub)
    if rng is not None:
        lo, hi = rng
        return [lo - 1, hi + 1, -(1 << 64) - 1, 1 << 64, "1", 1.0, 0.5, None, b"\x01"]
    raise TypeError(f"no bad values for field type {sub!r}")


def bad_record_values(sub: Array) -> Iterator[tuple[str, Any]]:
    """(record field, bad value) pairs for the records of an array field."""
    for rsub in sub.record.SCHEMA.subcons:
        for bad in bad_values(rsub.subcon):
            yield rsub.name, bad


def odd_values(sub: cs.Construct) -> list[Any]:
    """Values that are easy to mishandle; the fast codec must accept exactly those the
    reference codec accepts (some of these are valid, most are not)."""
    common = [True, False, 0, 1, 1.0, 0.0, -1, None, "", b"", (), []]
    if isinstance(sub, EnumField):
        members = list(sub.enum)
        return [*common, members[0], int(members[-1]), _Other.ONE, float(members[0])]
    if isinstance(sub, Text):
        return [*common, "x", bytearray(b"x"), "\x00", "\ud800"]
    if isinstance(sub, Blob):
        return [*common, b"x", bytearray(b"x"), memoryview(b"x"), "x"]
    if isinstance(sub, Array):
        item = a_valid(sub.record)
        return [*common, (item,), [item], (item, item), [None]]
    return common


@functools.cache
def a_valid(cls: type[Record]) -> Record:
    """A fixed valid instance: the first member, zero, empty or False in every field."""
    return cls(**{sub.name: _a_value(sub.subcon) for sub in cls.SCHEMA.subcons})


def _a_value(sub: cs.Construct) -> Any:
    if isinstance(sub, EnumField):
        return next(iter(sub.enum))
    if isinstance(sub, BoolField):
        return False
    if isinstance(sub, Text):
        return ""
    if isinstance(sub, Blob):
        return b""
    if isinstance(sub, Array):
        return ()
    return 0


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class Span:
    name: str
    sub: cs.Construct
    start: int
    end: int


def field_spans(msg: Message) -> list[Span]:
    """Where each field of `msg` sits in its payload (laid out by the reference codec)."""
    spans, off = [], 0
    for sub in msg.SCHEMA.subcons:
        raw = sub.subcon.build(getattr(msg, sub.name))
        spans.append(Span(sub.name, sub.subcon, off, off + len(raw)))
        off += len(raw)
    return spans


def fields_of_kind(cls: type[Message], *kinds: type) -> list[str]:
    return [sub.name for sub in cls.SCHEMA.subcons if isinstance(sub.subcon, kinds)]
