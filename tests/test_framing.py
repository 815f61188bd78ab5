"""Frames: layout, CRC-32, COBS, and the streaming FrameDecoder under hostile input.

The frame bodies here are built independently of protocol.framing (struct, a bitwise
CRC-32 and a from-the-definition COBS), so the wire format is pinned by this file, not
by the code under test.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import framing
from protocol.auth import COUNTER_CEILING, FrameSigner
from protocol.codes import FrameFlag
from protocol.framing import (
    MAX_BODY,
    MAX_ENCODED,
    MAX_PAYLOAD,
    MIN_BODY,
    PROTOCOL_VERSION,
    AuthTrailer,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    encode_body,
    encode_frame,
    parse_body,
    wrap_body,
)
from protocol.messages import REGISTRY
from tests.strategies import scaled

KNOWN = frozenset(REGISTRY)
UNKNOWN_TYPES = sorted(set(range(256)) - KNOWN)
KEY = bytes(range(32))
K = FrameErrorKind

# ---------------------------------------------------------------- independent references


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def ref_crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC from its definition: reflected poly 0x04C11DB7, init and xorout all ones."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def ref_cobs(data: bytes) -> bytes:
    """COBS from its definition (a full 254-byte block at the very end takes no 0x01 after it)."""
    out, block, last_full = bytearray(), bytearray(), False
    for b in data:
        last_full = False
        if b == 0:
            out += bytes((len(block) + 1,)) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += b"\xff" + block
                block, last_full = bytearray(), True
    if block or not last_full:
        out += bytes((len(block) + 1,)) + block
    return bytes(out)


def wire(body: bytes) -> bytes:
    return b"\x00" + ref_cobs(body) + b"\x00"


def make_body(
    msg_type: int,
    seq: int,
    payload: bytes,
    *,
    version: int = PROTOCOL_VERSION,
    flags: int = 0,
    plen: int | None = None,
    trailer: bytes = b"",
) -> bytes:
    """A frame body with a correct CRC, any header field set to anything."""
    head = struct.pack("<BBBHH", version, msg_type, flags, seq, len(payload) if plen is None else plen)
    head += payload + trailer
    return head + struct.pack("<I", ref_crc32(head))


def signed_body(msg_type: int, seq: int, payload: bytes, key_id: int = 1, counter: int = 0) -> tuple[bytes, Frame]:
    """A signed body and the Frame the decoder must produce for it."""
    signer = FrameSigner(key_id, KEY, counter)
    head = struct.pack("<BBBHH", PROTOCOL_VERSION, msg_type, FrameFlag.AUTH, seq, len(payload)) + payload
    trailer = signer(head)
    assert len(trailer) == framing.TRAILER_SIZE
    body = head + trailer + struct.pack("<I", ref_crc32(head + trailer))
    key_id_, counter_ = struct.unpack("<BQ", trailer[:9])
    assert (key_id_, counter_) == (key_id, counter + 1)
    frame = Frame(msg_type, 1, seq, payload, AuthTrailer(key_id, counter + 1, trailer[9:]), head + trailer[:9])
    return body, frame


def feed_all(data: bytes, chunks: list[int] | None = None, known=KNOWN) -> tuple[FrameDecoder, list]:
    dec = FrameDecoder(known)
    out = []
    cuts = sorted(set(chunks or []))
    prev = 0
    for cut in [*cuts, len(data)]:
        out += dec.feed(data[prev:cut])
        assert len(dec._buf) <= MAX_ENCODED
        prev = cut
    return dec, out


def frames_of(items: list) -> list[Frame]:
    return [x for x in items if type(x) is Frame]


def errors_of(items: list) -> list[FrameError]:
    return [x for x in items if type(x) is FrameError]


# ---------------------------------------------------------------- layout, CRC, COBS


def test_reference_crc_is_crc32_iso_hdlc():
    assert ref_crc32(b"123456789") == 0xCBF43926  # the catalogue check value
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_crc_residue_constant():
    for body in (b"", b"\x00", b"123456789", bytes(range(256))):
        assert zlib.crc32(body + struct.pack("<I", ref_crc32(body))) == framing.CRC_RESIDUE


def test_known_answer_frame():
    """One frame spelled out byte by byte: header, payload, CRC-32 (LE), COBS, delimiters."""
    body = encode_body(0x41, 0x1234, b"\x00\xab")
    head = bytes([PROTOCOL_VERSION, 0x41, 0x00, 0x34, 0x12, 0x02, 0x00, 0x00, 0xAB])
    assert body == head + ref_crc32(head).to_bytes(4, "little")
    assert encode_frame(0x41, 0x1234, b"\x00\xab") == wire(body)
    assert body[-4:] == bytes.fromhex("e9cd0e43")
    # COBS: each code byte is the distance to the next zero (the zero itself dropped)
    assert encode_frame(0x41, 0x1234, b"\x00\xab") == bytes.fromhex("00030241043412020106abe9cd0e4300")


@given(msg_type=st.integers(0, 255), seq=st.integers(0, 0xFFFF), payload=st.binary(max_size=600))
def test_encode_body_matches_independent_layout(msg_type, seq, payload):
    assert encode_body(msg_type, seq, payload) == make_body(msg_type, seq, payload)
    assert encode_frame(msg_type, seq, payload) == wire(make_body(msg_type, seq, payload))
    assert wrap_body(make_body(msg_type, seq, payload)) == wire(make_body(msg_type, seq, payload))


@given(
    msg_type=st.integers(0, 255), seq=st.integers(0, 0xFFFF), payload=st.binary(max_size=600), ctr=st.integers(0, 99)
)
def test_encode_body_signed_matches_independent_layout(msg_type, seq, payload, ctr):
    body, _ = signed_body(msg_type, seq, payload, 2, ctr)
    assert encode_body(msg_type, seq, payload, FrameSigner(2, KEY, ctr)) == body


@given(
    st.one_of(
        st.binary(max_size=1200), st.binary(min_size=250, max_size=1200).map(lambda b: b.replace(b"\x00", b"\x07"))
    )
)
def test_cobs_matches_reference(data):
    assert framing._cobs_encode(data) == ref_cobs(data)
    assert framing._cobs_decode(ref_cobs(data)) == data


def test_encode_rejects_oversize_payload():
    encode_body(1, 0, bytes(MAX_PAYLOAD))
    with pytest.raises(ValueError, match="MAX_PAYLOAD"):
        encode_body(1, 0, bytes(MAX_PAYLOAD + 1))


def test_largest_frame_fits_max_encoded():
    """The worst case for COBS (no zero bytes at all) at the largest size, signed."""
    payload = bytes([0x5A]) * MAX_PAYLOAD
    body, frame = signed_body(0x42, 0xFFFF, payload, 3, 0xFFFF_FFFF)
    assert len(body) == MAX_BODY
    assert len(wire(body)) - 2 <= MAX_ENCODED
    # and it decodes fed a byte at a time, the buffer never passing the limit
    dec = FrameDecoder(KNOWN)
    out = []
    for i in range(len(wire(body))):
        out += dec.feed(wire(body)[i : i + 1])
        assert len(dec._buf) <= MAX_ENCODED
    assert out == [frame]


@given(
    msg_type=st.sampled_from(sorted(KNOWN)),
    seq=st.integers(0, 0xFFFF),
    payload=st.one_of(st.binary(max_size=300), st.binary(min_size=MAX_PAYLOAD - 300, max_size=MAX_PAYLOAD)),
    signed=st.booleans(),
)
def test_frame_round_trip(msg_type, seq, payload, signed):
    if signed:
        body, expected = signed_body(msg_type, seq, payload)
    else:
        body, expected = make_body(msg_type, seq, payload), Frame(msg_type, 0, seq, payload)
    assert parse_body(body, KNOWN) == expected
    assert feed_all(wire(body))[1] == [expected]


# ---------------------------------------------------------------- parse_body: each error kind


def test_parse_body_error_kinds():
    p = b"\x01\x02"
    cases = [
        (make_body(0x41, 7, p, version=1), FrameError(K.UNKNOWN_VERSION, 0x41, 7, 0, 1)),
        (make_body(0x41, 7, p, version=3), FrameError(K.UNKNOWN_VERSION, 0x41, 7, 0, 3)),
        (make_body(0x41, 7, p, version=0), FrameError(K.UNKNOWN_VERSION, 0x41, 7, 0, 0)),
        (make_body(0x41, 7, p, flags=0x02), FrameError(K.BAD_FLAGS, 0x41, 7, 0x02)),
        (make_body(0x41, 7, p, flags=0x81), FrameError(K.BAD_FLAGS, 0x41, 7, 0x81)),
        (make_body(0x41, 7, p, plen=1), FrameError(K.BAD_LENGTH, 0x41, 7, 0)),
        (make_body(0x41, 7, p, plen=3), FrameError(K.BAD_LENGTH, 0x41, 7, 0)),
        (make_body(0x41, 7, p, plen=0xFFFF), FrameError(K.OVERSIZE, 0x41, 7, 0)),
        (make_body(0x41, 7, p, plen=MAX_PAYLOAD + 1), FrameError(K.OVERSIZE, 0x41, 7, 0)),
        # AUTH flag set but no room for the trailer
        (make_body(0x41, 7, p, flags=1), FrameError(K.BAD_LENGTH, 0x41, 7, 1)),
        (make_body(0xFF, 7, p), FrameError(K.UNKNOWN_TYPE, 0xFF, 7, 0)),
        (make_body(0x00, 9, b""), FrameError(K.UNKNOWN_TYPE, 0x00, 9, 0)),
        (b"", FrameError(K.BAD_LENGTH)),
        (struct.pack("<I", ref_crc32(b"1234567")), FrameError(K.BAD_LENGTH)),
        (bytes(MAX_BODY + 1), FrameError(K.OVERSIZE)),
        (_flip(make_body(0x41, 7, p), 8 * 11 - 1), FrameError(K.BAD_CRC)),
    ]
    for body, expected in cases:
        assert parse_body(body, KNOWN) == expected, body.hex()
        dec, out = feed_all(wire(body))
        assert out == [expected]
        assert dec.errors[expected.kind] == 1 and dec.error_count == 1 and dec.frames == 0


def test_smallest_frame_decodes():
    assert parse_body(make_body(0x41, 0, b"")) == Frame(0x41, 0, 0, b"")
    assert len(make_body(0x41, 0, b"")) == MIN_BODY


def test_unknown_type_passes_without_known_types():
    assert parse_body(make_body(0xFF, 3, b"x")) == Frame(0xFF, 0, 3, b"x")
    assert FrameDecoder().feed(wire(make_body(0xFF, 3, b"x"))) == [Frame(0xFF, 0, 3, b"x")]


@pytest.mark.parametrize("zeros", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("signed", [False, True], ids=["plain", "signed"])
def test_trailing_zero_inside_body_fails_crc(zeros, signed):
    """Regression (CRC-16/CCITT-FALSE pitfall): with a CRC whose residue is zero and no
    final XOR, body + CRC + 0x00 still checks, so a stray zero inside the COBS block
    would be accepted. CRC-32/ISO-HDLC must reject it."""
    body = signed_body(0x45, 1, b"\x01\x00\x00\x00")[0] if signed else make_body(0x45, 1, b"\x01\x00\x00\x00")
    assert type(parse_body(body, KNOWN)) is Frame
    bad = body + bytes(zeros)
    assert parse_body(bad, KNOWN) == FrameError(K.BAD_CRC)
    dec, out = feed_all(wire(bad))
    assert out == [FrameError(K.BAD_CRC)] and dec.errors[K.BAD_CRC] == 1 and dec.frames == 0
    assert parse_body(bytes(zeros) + body, KNOWN) == FrameError(K.BAD_CRC)


def test_every_single_and_double_bit_flip_fails_crc():
    body, _ = signed_body(0x45, 0x0102, b"\x07\x00\x00\x00")
    nbits = len(body) * 8
    for i in range(nbits):
        bad = _flip(body, i)
        assert parse_body(bad, KNOWN) == FrameError(K.BAD_CRC)
    small = make_body(0x41, 1, b"")
    for i in range(len(small) * 8):
        for j in range(i + 1, len(small) * 8):
            assert parse_body(_flip(_flip(small, i), j), KNOWN) == FrameError(K.BAD_CRC)


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def test_every_wire_truncation_and_flip_yields_no_frame():
    """Corrupted wire bytes (cut anywhere, or any bit flipped) never come out as a frame."""
    body, frame = signed_body(0x45, 0x0203, bytes(i % 256 for i in range(0, 900, 3)))
    w = wire(body)
    for cut in range(1, len(w) - 1):  # at least the last COBS byte is lost
        assert frames_of(feed_all(w[:cut] + b"\x00")[1]) == []
    for cut in range(2, len(w) - 1):  # at least the first COBS byte is lost
        assert frames_of(feed_all(b"\x00" + w[cut:])[1]) == []
    for bit in range(8, (len(w) - 1) * 8):
        assert frames_of(feed_all(_flip(w, bit))[1]) == []
    assert feed_all(w)[1] == [frame]


# ---------------------------------------------------------------- streaming decoder: splits


def _stream() -> tuple[bytes, list[Frame]]:
    parts = [
        (make_body(0x41, 1, b""), Frame(0x41, 0, 1, b"")),
        signed_body(0x42, 2, bytes(300) + b"\x01" * 300, 1, 41),
        (make_body(0x61, 0xFFFF, b"\x00\x00\xff" * 10), Frame(0x61, 0, 0xFFFF, b"\x00\x00\xff" * 10)),
        signed_body(0x45, 3, b"\x05\x00\x00\x00", 2, 0),
        (make_body(0x09, 0, b"\x01" * 600), Frame(0x09, 0, 0, b"\x01" * 600)),
    ]
    return b"".join(wire(b) for b, _ in parts), [f for _, f in parts]


def test_every_split_point_yields_the_same_frames():
    stream, expected = _stream()
    assert feed_all(stream)[1] == expected
    for cut in range(len(stream) + 1):
        dec, out = feed_all(stream, [cut])
        assert out == expected, cut
        assert dec.frames == len(expected) and dec.error_count == 0 and dec.bytes_in == len(stream)


def test_byte_at_a_time_yields_the_same_frames():
    stream, expected = _stream()
    _, out = feed_all(stream, list(range(len(stream))))
    assert out == expected


def test_split_points_between_shared_delimiters():
    """Frames written back to back without their own trailing delimiter (one 0x00
    between frames) decode too, at every split point."""
    stream, expected = _stream()
    compact = stream.replace(b"\x00\x00", b"\x00")
    for cut in range(len(compact) + 1):
        assert feed_all(compact, [cut])[1] == expected


@given(data=st.data())
@settings(max_examples=scaled(200))
def test_arbitrary_chunkings_yield_the_same_frames(data):
    stream, expected = _stream()
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    assert feed_all(stream, cuts)[1] == expected


@pytest.mark.parametrize("chunk", [bytearray, memoryview])
def test_feed_accepts_bytes_like(chunk):
    stream, expected = _stream()
    dec = FrameDecoder(KNOWN)
    assert dec.feed(chunk(stream)) == expected


def test_reset_drops_partial_frame():
    stream, expected = _stream()
    dec = FrameDecoder(KNOWN)
    assert dec.feed(stream[:20]) == [expected[0]]
    dec.reset()
    # the rest of the interrupted frame is now garbage, the frames after it are intact
    out = dec.feed(stream[20:])
    assert frames_of(out) == expected[2:]
    assert len(errors_of(out)) == 1


def test_reset_ends_discarding_an_oversize_segment():
    dec = FrameDecoder(KNOWN)
    assert dec.feed(b"\x21" * (MAX_ENCODED + 5)) == []
    dec.reset()
    assert dec.feed(wire(make_body(0x41, 1, b""))) == [Frame(0x41, 0, 1, b"")]
    assert dec.error_count == 0


# ---------------------------------------------------------------- streaming decoder: garbage


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x05\x01\x02",  # a COBS block cut short
        b"\xff" * 10,
        b"\x01",  # decodes to an empty body
        b"\x00\x00\x00",
        b"\x03\x41\x00\x00",
        bytes(range(1, 256)),
        b"\x00" + bytes(range(1, 256)) * 30,  # longer than MAX_ENCODED, no delimiter after
    ],
    ids=["cobs-cut", "ff", "empty-body", "zeros", "bad-body", "ramp", "oversize"],
)
def test_garbage_then_frame_recovers_frame(garbage):
    stream, expected = _stream()
    for cuts in ([], [len(garbage)], list(range(0, len(garbage) + 40, 7))):
        dec, out = feed_all(garbage + stream, cuts)
        assert frames_of(out) == expected
        assert dec.frames == len(expected)
        assert dec.error_count == len(errors_of(out))


def test_error_counters_count_each_kind():
    bodies = [
        (_flip(make_body(0x41, 1, b"ab"), 3), K.BAD_CRC),
        (make_body(0x41, 1, b"ab", plen=5), K.BAD_LENGTH),
        (make_body(0x41, 1, b"ab", plen=5), K.BAD_LENGTH),
        (make_body(0x41, 1, b"ab", version=9), K.UNKNOWN_VERSION),
        (make_body(0xFE, 1, b"ab"), K.UNKNOWN_TYPE),
        (make_body(0x41, 1, b"ab", flags=4), K.BAD_FLAGS),
        (make_body(0x41, 1, b"ab", plen=4000), K.OVERSIZE),
    ]
    stream = b"".join(wire(b) for b, _ in bodies)
    stream += b"\x00\x05\x01\x00"  # BAD_COBS
    stream += b"\x00" + b"\x11" * (MAX_ENCODED + 1) + b"\x00"  # OVERSIZE, from the buffer limit
    stream += wire(make_body(0x41, 2, b""))
    for cuts in ([], list(range(0, len(stream), 100))):
        dec, out = feed_all(stream, cuts)
        want = dict.fromkeys(K, 0)
        for _, kind in bodies:
            want[kind] += 1
        want[K.BAD_COBS] += 1
        want[K.OVERSIZE] += 1
        assert dec.errors == want
        assert [e.kind for e in errors_of(out)] == [k for _, k in bodies] + [K.BAD_COBS, K.OVERSIZE]
        assert frames_of(out) == [Frame(0x41, 0, 2, b"")]
        assert dec.frames == 1 and dec.error_count == sum(want.values()) and dec.bytes_in == len(stream)


# ---------------------------------------------------------------- streaming decoder: oversize


@pytest.fixture
def cobs_spy(monkeypatch) -> list[int]:
    """Records the length of every segment the decoder hands to COBS."""
    seen: list[int] = []
    real = framing._cobs_decode

    def spy(seg):
        seen.append(len(seg))
        return real(seg)

    monkeypatch.setattr(framing, "_cobs_decode", spy)
    return seen


@pytest.mark.parametrize("chunk", [1, 7, 1000, MAX_ENCODED, 100_000], ids=lambda c: f"chunk{c}")
def test_oversize_segment_dropped_unread_and_bounded(cobs_spy, chunk):
    frame_body = make_body(0x41, 5, b"ok")
    for n in (MAX_ENCODED + 1, MAX_ENCODED + 2, 3 * MAX_ENCODED + 17):
        cobs_spy.clear()
        stream = b"\x42" * n + wire(frame_body)
        dec = FrameDecoder(KNOWN)
        out = []
        for i in range(0, len(stream), chunk):
            out += dec.feed(stream[i : i + chunk])
            assert len(dec._buf) <= MAX_ENCODED
        assert out == [FrameError(K.OVERSIZE), Frame(0x41, 0, 5, b"ok")]
        assert dec.errors[K.OVERSIZE] == 1 and dec.error_count == 1
        assert max(cobs_spy) <= MAX_ENCODED
        assert cobs_spy == [len(wire(frame_body)) - 2]  # only the real frame was decoded


def test_segment_of_exactly_max_encoded_is_decoded(cobs_spy):
    """The limit is inclusive: MAX_ENCODED bytes are decoded (here: a bad COBS block),
    one more is OVERSIZE without decoding."""
    for chunk in (1, 64, 10_000):
        for n, kind, decoded in ((MAX_ENCODED, K.BAD_COBS, [MAX_ENCODED]), (MAX_ENCODED + 1, K.OVERSIZE, [])):
            cobs_spy.clear()
            stream = b"\x00" + b"\xff" * n + b"\x00"
            _, out = feed_all(stream, list(range(0, len(stream), chunk)))
            assert out == [FrameError(kind)]
            assert cobs_spy == decoded


def test_oversize_without_delimiter_stays_bounded():
    dec = FrameDecoder(KNOWN)
    for _ in range(50):
        assert dec.feed(b"\x33" * 997) == []
        assert len(dec._buf) <= MAX_ENCODED
    assert dec.feed(wire(make_body(0x41, 1, b""))) == [FrameError(K.OVERSIZE), Frame(0x41, 0, 1, b"")]


# ---------------------------------------------------------------- the main property


@dataclass(frozen=True)
class Piece:
    """A stretch of the stream. `expected` is the decoder's exact output for it, or None
    for garbage-like pieces (whose output is anything but a Frame)."""

    data: bytes
    expected: tuple | None


# Strategies built once: building them inside the composites costs more than the test.
_KEY_IDS = st.sampled_from([1, 2, 3])
_COUNTERS = st.integers(0, COUNTER_CEILING - 2)  # (a signer stops below the ceiling)
_TYPES = st.sampled_from(sorted(KNOWN))
_UNKNOWN = st.sampled_from(UNKNOWN_TYPES)
_SEQS = st.integers(0, 0xFFFF)
_PAYLOADS = st.one_of(st.binary(max_size=40), st.binary(max_size=600))
_BOOLS = st.booleans()
_BYTE = st.integers(1, 255)
_INDEX = st.integers(0, 1 << 24)  # taken modulo a length: one strategy for every range
_GARBAGE = st.binary(max_size=300)
_SHORT = st.binary(max_size=MIN_BODY - 1)
_KINDS = st.sampled_from(
    [
        "intact",
        "intact",
        "body_flip",
        "trailing_zero",
        "lying_plen",
        "bad_version",
        "bad_flags",
        "unknown_type",
        "short_body",
        "oversize_body",
        "oversize_segment",
        "garbage",
        "wire_cut_end",
        "wire_cut_start",
        "wire_flip",
    ]
)


def _index(draw, lo: int, hi: int) -> int:
    """An int in lo..hi (inclusive)."""
    return lo + draw(_INDEX) % (hi - lo + 1)


@st.composite
def intact(draw) -> tuple[bytes, Frame]:
    msg_type, seq, payload = draw(_TYPES), draw(_SEQS), draw(_PAYLOADS)
    if draw(_BOOLS):
        return signed_body(msg_type, seq, payload, draw(_KEY_IDS), draw(_COUNTERS))
    return make_body(msg_type, seq, payload), Frame(msg_type, 0, seq, payload)


@st.composite
def pieces(draw) -> Piece:
    kind = draw(_KINDS)
    if kind == "garbage":
        return Piece(draw(_GARBAGE), None)
    if kind == "oversize_segment":
        n = _index(draw, MAX_ENCODED + 1, 2 * MAX_ENCODED)
        return Piece(b"\x00" + bytes([draw(_BYTE)]) * n + b"\x00", (FrameError(K.OVERSIZE),))
    if kind == "oversize_body":
        # decodes within MAX_ENCODED but is longer than any valid body
        return Piece(wire(bytes(_index(draw, MAX_BODY + 1, MAX_ENCODED - 1))), (FrameError(K.OVERSIZE),))
    if kind == "short_body":
        return Piece(wire(draw(_SHORT)), (FrameError(K.BAD_LENGTH),))
    body, frame = draw(intact())
    if kind == "intact":
        return Piece(wire(body), (frame,))
    if kind == "body_flip":
        return Piece(wire(_flip(body, _index(draw, 0, len(body) * 8 - 1))), (FrameError(K.BAD_CRC),))
    if kind == "trailing_zero":
        return Piece(wire(body + bytes(_index(draw, 1, 3))), (FrameError(K.BAD_CRC),))
    w = wire(body)
    if kind == "wire_cut_end":
        return Piece(w[: _index(draw, 0, len(w) - 2)], None)
    if kind == "wire_cut_start":
        # the delimiter in front keeps it from rejoining a wire_cut_end of the same frame
        return Piece(b"\x00" + w[_index(draw, 2, len(w) - 1) :], None)
    if kind == "wire_flip":
        return Piece(_flip(w, _index(draw, 8, len(w) * 8 - 9)), None)
    payload, msg_type, seq, flags = frame.payload, frame.msg_type, frame.seq, frame.flags
    trailer = body[framing.HEADER_SIZE + len(payload) : -4]
    if kind == "lying_plen":
        plen = (len(payload) + _index(draw, 1, 0xFFFF)) % 0x10000
        err = FrameError(K.OVERSIZE if plen > MAX_PAYLOAD else K.BAD_LENGTH, msg_type, seq, flags)
        return Piece(wire(make_body(msg_type, seq, payload, plen=plen, flags=flags, trailer=trailer)), (err,))
    if kind == "bad_version":
        version = (PROTOCOL_VERSION + _index(draw, 1, 255)) % 256
        err = FrameError(K.UNKNOWN_VERSION, msg_type, seq, flags, version)
        return Piece(wire(make_body(msg_type, seq, payload, version=version, flags=flags, trailer=trailer)), (err,))
    if kind == "bad_flags":
        flags |= _index(draw, 1, 127) << 1
        err = FrameError(K.BAD_FLAGS, msg_type, seq, flags)
        return Piece(wire(make_body(msg_type, seq, payload, flags=flags, trailer=trailer)), (err,))
    assert kind == "unknown_type"
    msg_type = draw(_UNKNOWN)
    err = FrameError(K.UNKNOWN_TYPE, msg_type, seq, flags)
    return Piece(wire(make_body(msg_type, seq, payload, flags=flags, trailer=trailer)), (err,))


def _expected(ps: list[Piece]) -> Iterator:
    """The exact output for the whole stream. Neighbouring garbage pieces run together
    into one stretch; a stretch decodes on its own as it does in the stream, because
    every exact piece starts and ends with a delimiter."""
    run = b""
    for p in ps:
        if p.expected is None:
            run += p.data
            continue
        if run:
            yield from _garbage_output(run)
            run = b""
        yield from p.expected
    if run:
        yield from _garbage_output(run)


def _garbage_output(run: bytes) -> list:
    out = FrameDecoder(KNOWN).feed(b"\x00" + run + b"\x00")
    assert frames_of(out) == [], f"garbage decoded as a frame: {run.hex()}"
    return out


_CUTS = st.lists(_INDEX, max_size=12)


@given(ps=st.lists(pieces(), max_size=6), data=st.data())
@settings(max_examples=scaled(10_000))
def test_stream_decoder_property(ps, data):
    """Garbage, truncations, bit flips, oversize segments, lying lengths and intact frames,
    chunked anywhere: the decoder never raises, yields exactly the intact frames (so never
    a frame that failed its CRC), recovers every frame after garbage, predicts each error
    kind, counts what it yields and never buffers more than MAX_ENCODED bytes."""
    stream = b"".join(p.data for p in ps) + b"\x00"
    cuts = [c % (len(stream) + 1) for c in data.draw(_CUTS, label="cuts")]
    dec, out = feed_all(stream, cuts)
    expected = list(_expected(ps))
    assert out == expected
    assert frames_of(out) == [f for p in ps if p.expected for f in p.expected if type(f) is Frame]
    kinds = dict.fromkeys(K, 0)
    for e in errors_of(out):
        kinds[e.kind] += 1
    assert dec.errors == kinds
    assert dec.frames == len(frames_of(out))
    assert dec.error_count == len(out) - dec.frames
    assert dec.bytes_in == len(stream)
    assert dec._buf == b""


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=10))
@settings(max_examples=scaled(1000))
def test_random_bytes_never_raise(data, cuts):
    dec, out = feed_all(data, [c for c in cuts if c <= len(data)])
    assert frames_of(out) == []
    assert dec.error_count == len(out)
