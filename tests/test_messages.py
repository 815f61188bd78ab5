"""Messages: round trips, the fast codec against the reference codec, and what the
encoder and decoder refuse.

Every test is parametrized over protocol.messages.REGISTRY (one test id per message
type) and draws its messages from strategies built from the declarations, so a newly
declared message is covered without touching this file.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import construct as cs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec, schema
from protocol.auth import COUNTER_CEILING, FrameSigner, FrameVerifier
from protocol.codec import MessageDecoder, Received, Rejected, decode, encode, encode_to_body, nak_for
from protocol.codes import NakReason, Role
from protocol.errors import DecodeError, EncodeError
from protocol.framing import MAX_PAYLOAD, Frame, FrameError, FrameErrorKind, encode_frame, wrap_body
from protocol.messages import ALL_TYPES, BY_NAME, HOST_MAX_PAYLOAD, REGISTRY, Nak
from protocol.schema import Array, Blob, BoolField, EnumField, Message, Text, reference_build, reference_parse
from tests.strategies import (
    MESSAGE_CLASSES,
    a_valid,
    bad_record_values,
    bad_values,
    field_spans,
    fields_of_kind,
    ints,
    messages,
    non_member,
    odd_values,
    scaled,
    seqs,
    type_id,
    wire_range,
)

KEY = bytes(range(100, 132))
by_type = pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=type_id)
# Errors the reference (interpreted construct) codec may raise on a bad payload.
REFERENCE_REJECTS = (cs.ConstructError, UnicodeDecodeError, DecodeError)


def assert_identical(got: Any, want: Any, where: str = "") -> None:
    """Equal, and of the same type all the way down (an enum member, not an int; a bool,
    not 1; a tuple of records, not a list)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, schema.Record):
        for f in want.FIELDS:
            assert_identical(getattr(got, f), getattr(want, f), f"{where}.{f}")
    elif isinstance(want, tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_identical(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


def reference_rejects(cls: type[Message], payload: bytes) -> bool:
    try:
        reference_parse(cls, payload)
    except REFERENCE_REJECTS:
        return True
    return False


# ---------------------------------------------------------------- round trips


@by_type
@given(data=st.data())
def test_round_trip(cls, data):
    """Random instance -> encode (plain and signed) -> MessageDecoder -> the same message."""
    msg = data.draw(messages(cls), label="msg")
    seq = data.draw(seqs, label="seq")
    signer = FrameSigner(Role.CLINICIAN, KEY, data.draw(ints(0, COUNTER_CEILING - 2), label="counter"))
    plain, signed = encode(msg, seq), encode(msg, (seq + 1) & 0xFFFF, signer)
    dec = MessageDecoder()
    out = dec.feed(plain + signed)
    assert [type(x) for x in out] == [Received, Received]
    for item, want_seq in zip(out, (seq, (seq + 1) & 0xFFFF), strict=True):
        assert_identical(item.message, msg, cls.NAME)
        assert item.frame.msg_type == cls.TYPE
        assert item.frame.seq == want_seq
    assert out[0].frame.auth is None and out[0].frame.flags == 0
    assert out[1].frame.auth.counter == signer.counter
    assert FrameVerifier({Role.CLINICIAN: KEY}).check(out[1].frame).ok
    assert dec.rejected == 0 and dec.frames.error_count == 0
    # the relay path: the body alone, then wrapped, is the same frame
    assert wrap_body(encode_to_body(msg, seq)) == plain
    assert decode(out[0].frame) == msg


@by_type
@given(data=st.data())
def test_fast_codec_matches_reference(cls, data):
    """The generated codec and interpreted construct agree byte for byte, both ways."""
    msg = data.draw(messages(cls), label="msg")
    fast = cls._fast_build(msg)
    ref = reference_build(msg)
    assert fast == ref
    assert_identical(cls._fast_parse(ref), msg, "fast parse")
    assert_identical(reference_parse(cls, fast), msg, "reference parse")
    assert len(fast) <= schema.max_size(cls.SCHEMA)


_MUTATION = st.sampled_from(["replace", "insert", "delete", "random"])


@by_type
@given(data=st.data())
def test_fast_parse_agrees_with_reference_on_mutated_payloads(cls, data):
    """On damaged payloads the two parsers accept and refuse the same bytes, and what
    they accept re-encodes to exactly those bytes (the encoding is canonical)."""
    payload = bytearray(reference_build(data.draw(messages(cls), label="msg")))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        how = data.draw(_MUTATION)
        at = data.draw(st.integers(0, len(payload)), label="at")
        if how == "replace" and at < len(payload):
            payload[at] = data.draw(st.integers(0, 255))
        elif how == "insert":
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif how == "delete":
            del payload[at : at + data.draw(st.integers(1, 3))]
        else:
            payload = bytearray(data.draw(st.binary(max_size=64)))
    payload = bytes(payload)
    try:
        fast = cls._fast_parse(payload)
    except DecodeError as e:
        assert e.message_name == cls.NAME
        assert e.reason in (NakReason.BAD_LENGTH, NakReason.OUT_OF_RANGE)
        assert (e.field is None) == (e.reason is NakReason.BAD_LENGTH)
        assert reference_rejects(cls, payload), f"reference accepts what the fast codec refuses: {e}"
        return
    assert_identical(reference_parse(cls, payload), fast, "reference parse")
    assert cls._fast_build(fast) == payload


# ---------------------------------------------------------------- decoding refuses


@by_type
@given(data=st.data())
@settings(max_examples=scaled(25))
def test_every_truncation_and_extension_is_bad_length(cls, data):
    msg = data.draw(messages(cls), label="msg")
    payload = reference_build(msg)
    for n in range(len(payload)):
        with pytest.raises(DecodeError) as e:
            cls._fast_parse(payload[:n])
        assert (e.value.reason, e.value.field, e.value.message_name) == (NakReason.BAD_LENGTH, None, cls.NAME)
    extra = data.draw(st.binary(min_size=1, max_size=9), label="extra")
    with pytest.raises(DecodeError) as e:
        cls._fast_parse(payload + extra)
    assert (e.value.reason, e.value.field) == (NakReason.BAD_LENGTH, None)
    # the reference codec agrees (checked on a few cuts: it is slow)
    for n in {0, len(payload) // 2, len(payload) - 1}:
        if 0 <= n < len(payload):
            assert reference_rejects(cls, payload[:n])
    assert reference_rejects(cls, payload + extra)
    # and through the stream decoder: Rejected, with the frame (seq) to NAK
    if payload:
        dec = MessageDecoder()
        (item,) = dec.feed(encode_frame(cls.TYPE, 77, payload[:-1]))
        assert type(item) is Rejected and item.frame.seq == 77 and item.error.reason is NakReason.BAD_LENGTH
        assert dec.rejected == 1


def _corruptions(msg: Message) -> list[tuple[bytes, str]]:
    """(payload, field at fault) for every refusable value of every checkable field."""
    payload = reference_build(msg)
    out: list[tuple[bytes, str]] = []

    def put(start: int, end: int, raw: bytes, field: str) -> None:
        out.append((payload[:start] + raw + payload[end:], field))

    for span in field_spans(msg):
        sub, s, e = span.sub, span.start, span.end
        if isinstance(sub, EnumField):
            _, hi = wire_range(sub)
            fmt = sub.subcon.fmtstr
            bad = [v for v in range(min(hi, 255) + 1) if v not in sub.enum._value2member_map_]
            bad += [hi] if hi > 255 and hi not in sub.enum._value2member_map_ else []
            for v in bad:
                put(s, e, struct.pack(fmt, v), span.name)
        elif isinstance(sub, BoolField):
            for v in range(2, 256):
                put(s, e, bytes([v]), span.name)
        elif isinstance(sub, Text):
            for n in sorted({sub.max_bytes + 1, 255} - {256}):
                put(s, e, bytes([n]) + b"a" * n, span.name)
            for raw in (b"\xff", b"\xc3", b"a\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"):
                put(s, e, bytes([len(raw)]) + raw, span.name)
        elif isinstance(sub, Blob):
            n = sub.max_bytes + 1
            put(s, e, struct.pack("<H", n) + bytes(n), span.name)
        elif isinstance(sub, Array):
            n = sub.max_items + 1
            put(s, e, bytes([n]) + reference_build_record(a_valid(sub.record)) * n, span.name)
            out.extend(_record_corruptions(payload, span, sub))
    return out


def reference_build_record(rec: schema.Record) -> bytes:
    return rec.SCHEMA.build({f: getattr(rec, f) for f in rec.FIELDS})


def _record_corruptions(payload: bytes, span, sub: Array) -> list[tuple[bytes, str]]:
    """Bad enum and bool values inside each record of an array (named `array.field`)."""
    out = []
    count = payload[span.start]
    size = sub.record._fmt.size
    for i in range(count):
        rec_start = span.start + 1 + i * size
        off = rec_start
        for rsub in sub.record.SCHEMA.subcons:
            width = rsub.subcon.sizeof()
            field = f"{span.name}.{rsub.name}"
            if isinstance(rsub.subcon, EnumField):
                _, hi = wire_range(rsub.subcon)
                raw = struct.pack(rsub.subcon.subcon.fmtstr, non_member(rsub.subcon.enum, hi))
                out.append((payload[:off] + raw + payload[off + width :], field))
            elif isinstance(rsub.subcon, BoolField):
                out.append((payload[:off] + b"\x02" + payload[off + width :], field))
            off += width
    return out


def _has_checkable_fields(cls: type[Message]) -> bool:
    return bool(fields_of_kind(cls, EnumField, BoolField, Text, Blob, Array))


CHECKABLE = [c for c in MESSAGE_CLASSES if _has_checkable_fields(c)]


@pytest.mark.parametrize("cls", CHECKABLE, ids=type_id)
@given(data=st.data())
@settings(max_examples=scaled(10))
def test_decode_rejects_bad_field_values(cls, data):
    """Unknown enum values, a Bool byte other than 0/1, Text over its max or not UTF-8,
    a Blob or array count over its max, a bad enum or bool inside an array record: each
    is DecodeError OUT_OF_RANGE naming the field (never a bare int passed through)."""
    msg = data.draw(messages(cls), label="msg")
    cases = _corruptions(msg)
    assert cases
    for payload, field in cases:
        with pytest.raises(DecodeError) as e:
            cls._fast_parse(payload)
        assert (e.value.reason, e.value.field, e.value.message_name) == (NakReason.OUT_OF_RANGE, field, cls.NAME), (
            payload.hex()
        )
    # the reference codec refuses them too (a sample: it is slow)
    for payload, _ in cases[:: max(1, len(cases) // 12)]:
        assert reference_rejects(cls, payload)
    # and the stream decoder hands back a Rejected carrying the same error. A blob one over
    # its max in the largest message (HOST_RX) is over MAX_PAYLOAD, which has no headroom:
    # no frame can carry it (a receiver drops it as OVERSIZE before the codec sees it).
    framable = [(p, f) for p, f in cases if len(p) <= MAX_PAYLOAD]
    for payload, _ in cases:
        if len(payload) > MAX_PAYLOAD:
            with pytest.raises(ValueError, match="MAX_PAYLOAD"):
                encode_frame(cls.TYPE, 9, payload)
    if not framable:  # (HOST_RX: its one field is that blob)
        return
    payload, field = framable[-1]
    dec = MessageDecoder()
    (item,) = dec.feed(encode_frame(cls.TYPE, 9, payload))
    assert type(item) is Rejected and item.frame.seq == 9
    assert (item.error.reason, item.error.field) == (NakReason.OUT_OF_RANGE, field)


def test_array_record_decode_error_names_message_and_dotted_field():
    """Regression: a bad enum inside an array record was reported as the record class
    (`AlarmEntry`) with the bare field (`alarm`), not as STATUS_ACK `alarms.alarm`."""
    cls = BY_NAME["STATUS_ACK"]
    record = cls.SCHEMA.subcons[cls.FIELDS.index("alarms")].subcon.record
    msg = dataclasses.replace(a_valid(cls), alarms=(a_valid(record),))
    payload = bytearray(reference_build(msg))
    alarms = next(s for s in field_spans(msg) if s.name == "alarms")
    payload[alarms.start + 1] = 0xEE  # the first record's `alarm`
    with pytest.raises(DecodeError) as e:
        cls._fast_parse(bytes(payload))
    assert (e.value.message_name, e.value.field, e.value.reason) == (
        "STATUS_ACK",
        "alarms.alarm",
        NakReason.OUT_OF_RANGE,
    )


@pytest.mark.parametrize("msg_type", sorted(set(range(256)) - ALL_TYPES), ids=lambda t: f"0x{t:02X}")
def test_unknown_type_is_frame_error_with_type_and_seq(msg_type):
    dec = MessageDecoder()
    assert dec.feed(encode_frame(msg_type, 0x1234, b"\x01\x02")) == [
        FrameError(FrameErrorKind.UNKNOWN_TYPE, msg_type, 0x1234, 0)
    ]
    assert dec.frames.errors[FrameErrorKind.UNKNOWN_TYPE] == 1 and dec.rejected == 0
    with pytest.raises(DecodeError) as e:
        decode(Frame(msg_type, 0, 5, b""))
    assert e.value.reason is NakReason.UNKNOWN_TYPE


@pytest.mark.parametrize("known", [None, range(256)], ids=["none", "superset"])
def test_message_decoder_unregistered_type_does_not_raise(known):
    """Regression: MessageDecoder(known_types=None) (or any set wider than REGISTRY)
    raised KeyError on a frame of an unregistered type instead of yielding UNKNOWN_TYPE."""
    dec = MessageDecoder(known)
    hello = BY_NAME["HELLO"]()
    out = dec.feed(encode_frame(0xFF, 3, b"") + encode(hello, 4))
    assert out[0] == FrameError(FrameErrorKind.UNKNOWN_TYPE, 0xFF, 3, 0)
    assert type(out[1]) is Received and out[1].message == hello


def test_message_decoder_respects_narrower_known_types():
    dec = MessageDecoder({0x40})
    out = dec.feed(encode(BY_NAME["STATUS"](), 1) + encode(BY_NAME["HELLO"](), 2))
    assert out[0] == FrameError(FrameErrorKind.UNKNOWN_TYPE, 0x41, 1, 0)
    assert type(out[1]) is Received


# ---------------------------------------------------------------- encoding refuses


def _with(msg: Message, field: str, value: Any) -> Message:
    return dataclasses.replace(msg, **{field: value})


def _bad_messages(cls: type[Message]):
    """(message, field expected in the error) for every bad value of every field."""
    base = a_valid(cls)
    for sub in cls.SCHEMA.subcons:
        for bad in bad_values(sub.subcon):
            yield _with(base, sub.name, bad), sub.name
        if isinstance(sub.subcon, Array):
            rec = a_valid(sub.subcon.record)
            for rfield, bad in bad_record_values(sub.subcon):
                yield _with(base, sub.name, (rec, _with(rec, rfield, bad))), f"{sub.name}.{rfield}"


@by_type
def test_encode_rejects_bad_values(cls):
    """Out-of-range ints (each width, both ends), wrong types, non-member enums, text
    too long or not encodable, too many array items, a wrong record type, a bad value
    inside a record: EncodeError naming the field, from encode(), signed or not, and the
    reference codec refuses it too. A refused message does not use up a counter value."""
    cases = list(_bad_messages(cls))
    if not cls.FIELDS:
        assert cases == []
        return
    signer = FrameSigner(Role.PATIENT, KEY)
    for msg, field in cases:
        for sign in (None, signer):
            with pytest.raises(EncodeError) as e:
                encode(msg, 1, sign)
            assert (e.value.field, e.value.message_name) == (field, cls.NAME), repr(msg)
        try:
            reference_build(msg)
        except Exception:  # noqa: BLE001 - any refusal will do
            pass
        else:
            pytest.fail(f"the reference codec accepts {msg!r}")
    assert signer.counter == 0
    assert encode(a_valid(cls), 1, signer) and signer.counter == 1


@by_type
def test_fast_and_reference_agree_on_odd_values(cls):
    """True, 1.0, a foreign enum's member, bytearray, lists...: the fast codec accepts
    exactly what the reference codec accepts, with the same bytes."""
    base = a_valid(cls)
    cases = []
    for sub in cls.SCHEMA.subcons:
        cases += [(_with(base, sub.name, v), sub.name) for v in odd_values(sub.subcon)]
        if isinstance(sub.subcon, Array):
            rec = a_valid(sub.subcon.record)
            for rsub in rec.SCHEMA.subcons:
                cases += [
                    (_with(base, sub.name, (_with(rec, rsub.name, v),)), f"{sub.name}.{rsub.name}")
                    for v in odd_values(rsub.subcon)
                ]
    for msg, field in cases:
        try:
            ref = reference_build(msg)
        except Exception:  # noqa: BLE001 - any refusal
            ref = None
        try:
            fast = cls._fast_build(msg)
        except EncodeError as e:
            assert ref is None, f"fast refuses what reference accepts: {msg!r}: {e}"
            assert e.field == field
            continue
        assert fast == ref, f"fast accepts what reference refuses (or other bytes): {msg!r}"


@pytest.mark.parametrize(
    ("field", "value"),
    [("state", True), ("state", 2.0), ("state", NakReason.OUT_OF_RANGE), ("bolus_active", 1.0)],
    ids=["bool-for-enum", "float-for-enum", "foreign-enum", "float-for-bool"],
)
def test_fast_build_refuses_non_member_lookalikes(field, value):
    """Regression: the fast codec's dict lookup let True (== 1) and 1.0 through as enum
    values and 1.0 as a bool, where the reference codec refused True; now both refuse
    all of these, naming the field."""
    cls = BY_NAME["STATUS_ACK"]
    msg = _with(a_valid(cls), field, value)
    with pytest.raises(EncodeError) as e:
        encode(msg, 1)
    assert e.value.field == field
    with pytest.raises(cs.ConstructError):
        reference_build(msg)


def test_diagnosis_names_the_bad_field_not_a_bool_int():
    """Regression: the slow diagnosis treated True in an int field as an error although
    both codecs encode it as 1, so a message with True in one int field and a real
    error in a later one blamed the wrong field."""
    cls = BY_NAME["BEEP"]
    ok = _with(a_valid(cls), "repeat", True)
    assert encode(ok, 1) == encode(_with(ok, "repeat", 1), 1)
    with pytest.raises(EncodeError) as e:
        encode(_with(ok, "repeat_interval_ms", -1), 1)
    assert e.value.field == "repeat_interval_ms"


def test_encode_refuses_non_messages():
    for thing in (None, 5, {"command_id": 1}, a_valid(BY_NAME["STATUS_ACK"]).alarms):
        with pytest.raises(EncodeError):
            encode(thing, 1)
        with pytest.raises(EncodeError):
            encode_to_body(thing, 1)


# ---------------------------------------------------------------- to_dict / from_dict


@by_type
@given(data=st.data())
@settings(max_examples=scaled(30))
def test_dict_round_trip_through_json(cls, data):
    msg = data.draw(messages(cls), label="msg")
    doc = json.loads(json.dumps(msg.to_dict()))
    assert_identical(cls.from_dict(doc), msg, cls.NAME)


@by_type
def test_from_dict_missing_and_unknown_fields(cls):
    doc = a_valid(cls).to_dict()
    for name in cls.FIELDS:
        with pytest.raises(EncodeError) as e:
            cls.from_dict({k: v for k, v in doc.items() if k != name})
        assert (e.value.field, e.value.message_name) == (name, cls.NAME)
    with pytest.raises(EncodeError) as e:
        cls.from_dict({**doc, "no_such_field": 1})
    assert e.value.field == "no_such_field"
    with pytest.raises(EncodeError):
        cls.from_dict([1, 2])
    for sub in cls.SCHEMA.subcons:
        if isinstance(sub.subcon, EnumField):
            with pytest.raises(EncodeError) as e:
                cls.from_dict({**doc, sub.name: "no_such_member"})
            assert e.value.field == sub.name


@by_type
def test_from_dict_refuses_bad_values(cls):
    """from_dict checks values too: what it returns, encode accepts."""
    doc = a_valid(cls).to_dict()
    for sub in cls.SCHEMA.subcons:
        for bad in bad_values(sub.subcon):
            if (
                isinstance(sub.subcon, EnumField)
                and isinstance(bad, str)
                and bad.upper() in sub.subcon.enum.__members__
            ):
                continue  # a member's name is a valid spelling in a dict
            if isinstance(sub.subcon, Blob) and isinstance(bad, str):
                bad = "zz"  # hex is a valid spelling of bytes in a dict
            if isinstance(sub.subcon, Array) and isinstance(bad, tuple):
                continue  # records as objects: covered by the encoder tests
            with pytest.raises(EncodeError) as e:
                cls.from_dict({**doc, sub.name: bad})
            assert e.value.field == sub.name, (sub.name, bad)


ARRAY_TYPES = [c for c in MESSAGE_CLASSES if fields_of_kind(c, Array)]


@pytest.mark.parametrize("cls", ARRAY_TYPES, ids=type_id)
def test_from_dict_nested_errors_name_dotted_field(cls):
    """Regression: an error inside an array record named the record class and the bare
    field (or no field at all for a non-mapping item); now the message and `array.field`."""
    for array in fields_of_kind(cls, Array):
        sub = cls.SCHEMA.subcons[cls.FIELDS.index(array)].subcon
        rec = a_valid(sub.record).to_dict()
        doc = a_valid(cls).to_dict()
        for rfield in sub.record.FIELDS:
            with pytest.raises(EncodeError) as e:
                cls.from_dict({**doc, array: [{k: v for k, v in rec.items() if k != rfield}]})
            assert (e.value.message_name, e.value.field) == (cls.NAME, f"{array}.{rfield}")
        with pytest.raises(EncodeError) as e:
            cls.from_dict({**doc, array: [{**rec, "bogus": 1}]})
        assert e.value.field == f"{array}.bogus"
        with pytest.raises(EncodeError) as e:
            cls.from_dict({**doc, array: [5]})
        assert e.value.field == array
        first = sub.record.SCHEMA.subcons[0]
        with pytest.raises(EncodeError) as e:
            cls.from_dict({**doc, array: [{**rec, first.name: -1}]})
        assert e.value.field == f"{array}.{first.name}"


def test_from_dict_accepts_enum_values_as_ints():
    cls = BY_NAME["STATUS_ACK"]
    doc = a_valid(cls).to_dict()
    msg = cls.from_dict({**doc, "state": 2})
    assert type(msg.state) is type(a_valid(cls).state) and msg.state == 2


# ---------------------------------------------------------------- declarations


@by_type
def test_declaration_fits_its_link(cls):
    """Every message's largest encoding fits its link (host-link frames must fit whole in
    a pump-link relay), and the registry is consistent with the declaration."""
    limit = HOST_MAX_PAYLOAD if cls.TYPE >= 0x40 else MAX_PAYLOAD
    assert schema.max_size(cls.SCHEMA) <= limit
    assert REGISTRY[cls.TYPE] is cls and BY_NAME[cls.NAME] is cls
    assert schema.family_of(cls.TYPE) is cls.FAMILY
    assert cls.ANSWERS is None or cls.ANSWERS.ACK is cls


def test_nak_for_clips_to_the_wire_limits():
    nak = nak_for(0x142, NakReason.OUT_OF_RANGE, field="f" * 100, detail="é" * 200)
    assert isinstance(nak, Nak) and nak.request_type == 0x42
    (item,) = MessageDecoder().feed(encode(nak, 1))
    assert item.message == nak
    assert len(nak.field.encode()) <= 32 and len(nak.detail.encode()) <= 160
    assert codec.nak_for(1, NakReason.BUSY).detail == ""
