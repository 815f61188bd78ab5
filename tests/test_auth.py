"""Host-link authentication: HMAC-SHA256/128 tags and per-key replay counters."""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.auth import (
    COUNTER_CEILING,
    COUNTER_MAX,
    AuthResult,
    FrameSigner,
    FrameVerifier,
    ResponseVerifier,
    compute_tag,
)
from protocol.codec import MessageDecoder, Received, encode
from protocol.codes import Role
from protocol.framing import (
    AUTH_PREFIX,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    TAG_SIZE,
    TRAILER_SIZE,
    Frame,
    encode_body,
    parse_body,
)
from protocol.messages import BY_NAME
from tests.strategies import messages, seqs

KEYS = {Role.CLINICIAN: b"C" * 32, Role.PATIENT: bytes(range(32)), Role.SIM: b"\x00" * 16, Role.PUMP: b"P" * 32}
OTHER_KEY = b"not the key, not the key, no...."
BOLUS = BY_NAME["BOLUS_REQUEST"]
PROGRAM = BY_NAME["PROGRAM"]


def signed_frame(payload: bytes = b"\x07\x00\x00\x00", key_id: int = Role.PATIENT, counter: int = 0, key=None, seq=1):
    """A signed frame as the receiver sees it (after framing), and the signer used."""
    signer = FrameSigner(key_id, KEYS.get(key_id, OTHER_KEY) if key is None else key, counter)
    frame = parse_body(encode_body(0x45, seq, payload, signer))
    assert type(frame) is Frame
    return frame


def frame_at(counter: int, key_id: int = Role.PATIENT, key: bytes | None = None) -> Frame:
    """A frame signed at exactly `counter`, which FrameSigner will not sign at the top of
    the range (an attacker's tool would)."""
    key = KEYS.get(key_id, OTHER_KEY) if key is None else key

    def sign(head: bytes) -> bytes:
        prefix = AUTH_PREFIX.pack(key_id, counter)
        return prefix + compute_tag(key, head + prefix)

    frame = parse_body(encode_body(0x45, 1, b"\x07\x00\x00\x00", sign))
    assert type(frame) is Frame
    return frame


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, key_id: int, counter: int) -> None:
        self.calls.append((key_id, counter))


def verifier(**kw) -> tuple[FrameVerifier, Recorder]:
    rec = Recorder()
    return FrameVerifier(KEYS, on_accept=rec, **kw), rec


def with_crc(signed_and_tag: bytes) -> bytes:
    return signed_and_tag + struct.pack("<I", zlib.crc32(signed_and_tag))


# ---------------------------------------------------------------- the tag


@given(key=st.binary(min_size=16, max_size=200), signed=st.binary(max_size=300))
def test_tag_is_truncated_hmac_sha256(key, signed):
    """Keys up to and beyond the SHA-256 block size (64 bytes: longer keys are hashed)."""
    want = hmac.new(key, signed, hashlib.sha256).digest()[:16]
    assert compute_tag(key, signed) == want
    head = signed[: max(0, len(signed) - AUTH_PREFIX.size)]
    trailer = FrameSigner(1, key, 41)(head)
    prefix = AUTH_PREFIX.pack(1, 42)
    assert trailer == prefix + hmac.new(key, head + prefix, hashlib.sha256).digest()[:16]


def test_trailer_layout():
    frame = signed_frame(counter=0x0102030405060708 - 1)
    assert frame.auth.key_id == Role.PATIENT and frame.auth.counter == 0x0102030405060708
    assert len(frame.auth.tag) == TAG_SIZE
    # the tag covers the header (flags and seq too), the payload, the key id and the counter
    assert frame.signed[:HEADER_SIZE] == struct.pack("<BBBHH", PROTOCOL_VERSION, 0x45, 1, 1, 4)
    assert frame.signed[HEADER_SIZE + 4 :] == bytes([Role.PATIENT]) + (0x0102030405060708).to_bytes(8, "little")
    assert frame.auth.tag == compute_tag(KEYS[Role.PATIENT], frame.signed)


@pytest.mark.parametrize("key", [b"", b"x" * 15, "k" * 32, None])
def test_short_or_non_bytes_key_refused(key):
    with pytest.raises(ValueError, match="at least 16 bytes"):
        FrameSigner(1, key)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        FrameVerifier({1: key})


@pytest.mark.parametrize("key_id", [0, 256, -1])
def test_signer_key_id_range(key_id):
    with pytest.raises(ValueError, match="key_id"):
        FrameSigner(key_id, KEYS[Role.PATIENT])


# ---------------------------------------------------------------- accept


@given(
    msg=st.sampled_from([BOLUS, PROGRAM]).flatmap(messages),
    seq=seqs,
    role=st.sampled_from(list(Role)),
    start=st.integers(0, 1 << 62),
)
def test_sign_verify_ok(msg, seq, role, start):
    signer = FrameSigner(role, KEYS[role], start)
    v, rec = verifier()
    (item,) = MessageDecoder().feed(encode(msg, seq, signer))
    assert type(item) is Received and item.message == msg
    verdict = v.check(item.frame)
    assert verdict.ok and verdict.result is AuthResult.OK
    assert verdict.role is role and verdict.counter == start + 1 == signer.counter
    assert rec.calls == [(role, start + 1)]
    assert v.last_counters[role] == start + 1
    assert all(v.last_counters[r] == 0 for r in Role if r is not role)


def test_counters_are_per_key():
    v, rec = verifier()
    assert v.check(signed_frame(key_id=Role.PATIENT, counter=50)).ok
    assert v.check(signed_frame(key_id=Role.CLINICIAN, counter=0)).ok
    assert v.check(signed_frame(key_id=Role.SIM, counter=7)).ok
    assert v.last_counters == {Role.CLINICIAN: 1, Role.PATIENT: 51, Role.SIM: 8, Role.PUMP: 0}
    assert rec.calls == [(Role.PATIENT, 51), (Role.CLINICIAN, 1), (Role.SIM, 8)]


def test_signer_uses_each_counter_once_and_reports_it():
    used = []
    signer = FrameSigner(Role.CLINICIAN, KEYS[Role.CLINICIAN], 10, on_use=used.append)
    counters = [parse_body(encode_body(0x42, i, b"", signer)).auth.counter for i in range(3)]
    assert counters == [11, 12, 13] == used and signer.counter == 13


def test_signer_stops_below_the_counter_ceiling():
    signer = FrameSigner(Role.CLINICIAN, KEYS[Role.CLINICIAN], COUNTER_CEILING - 2)
    frame = parse_body(encode_body(0x42, 0, b"", signer))
    assert frame.auth.counter == COUNTER_CEILING - 1
    v, _ = verifier()
    assert v.check(frame).ok
    with pytest.raises(ValueError, match="top of its range"):
        encode_body(0x42, 0, b"", signer)
    assert signer.counter == COUNTER_CEILING - 1


@pytest.mark.parametrize("counter", [COUNTER_CEILING, COUNTER_MAX])
def test_a_counter_at_the_top_of_its_range_is_refused_and_the_key_lives_on(counter):
    """A frame signed at 2**64 - 1 was accepted and stored: no counter was left above it,
    and the key was dead for good. Now it is refused and nothing is stored."""
    v, _ = verifier()
    top = frame_at(counter)
    assert top.auth.counter == counter
    verdict = v.check(top)
    assert verdict.result is AuthResult.COUNTER_OUT_OF_RANGE and not verdict.ok
    assert v.check(signed_frame(key_id=Role.PATIENT, key=KEYS[Role.PATIENT], counter=1_000)).ok


# ---------------------------------------------------------------- reject


def test_wrong_key_is_bad_tag():
    v, rec = verifier()
    forged = signed_frame(key_id=Role.CLINICIAN, key=OTHER_KEY, counter=5)
    verdict = v.check(forged)
    assert verdict.result is AuthResult.BAD_TAG and not verdict.ok
    assert v.last_counters[Role.CLINICIAN] == 0 and rec.calls == []


def _flipped(frame: Frame, bit: int) -> bytes:
    """The frame's body with one bit of its signed part or tag flipped and the CRC made
    right again, so the damage gets past framing to the verifier."""
    raw = bytearray(frame.signed + frame.auth.tag)
    raw[bit // 8] ^= 1 << (bit % 8)
    return with_crc(bytes(raw))


@pytest.mark.parametrize("payload", [b"", b"\x07\x00\x00\x00", bytes(range(200))], ids=["empty", "bolus", "long"])
def test_any_flipped_bit_is_refused(payload):
    v, rec = verifier()
    frame = signed_frame(payload, key_id=Role.PATIENT, counter=1000)
    nbits = (len(frame.signed) + TAG_SIZE) * 8
    key_id_at = HEADER_SIZE + len(payload)
    reached = 0
    for bit in range(nbits):
        item = parse_body(_flipped(frame, bit))
        byte = bit // 8
        if byte < HEADER_SIZE and type(item) is not Frame:
            continue  # version, flags or payload_len: refused by framing, never reaches auth
        assert type(item) is Frame, bit
        reached += 1
        verdict = v.check(item)
        if byte == key_id_at:
            # another key id: a key the verifier does not hold, or the wrong key
            assert verdict.result in (AuthResult.UNKNOWN_KEY, AuthResult.BAD_TAG), bit
        else:
            assert verdict.result is AuthResult.BAD_TAG, bit
    assert reached >= nbits - 4 * 8  # only the version, flags and the two length bytes can miss
    assert rec.calls == [] and v.last_counters[Role.PATIENT] == 0
    # none of that moved the counter: the genuine frame is still good
    assert v.check(frame).ok and rec.calls == [(Role.PATIENT, 1001)]


def test_replayed_frame_refused():
    v, rec = verifier()
    frame = signed_frame(counter=9)
    assert v.check(frame).ok
    again = v.check(frame)
    assert again.result is AuthResult.REPLAYED and again.counter == 10 and again.role is Role.PATIENT
    assert rec.calls == [(Role.PATIENT, 10)]


def test_lower_and_equal_counters_refused():
    v, rec = verifier()
    assert v.check(signed_frame(counter=99)).ok  # counter 100
    for counter in (0, 50, 98, 99):
        verdict = v.check(signed_frame(counter=counter))
        assert verdict.result is AuthResult.REPLAYED, counter
    assert v.check(signed_frame(counter=100)).ok  # counter 101: gaps are fine, going back is not
    assert v.last_counters[Role.PATIENT] == 101
    assert rec.calls == [(Role.PATIENT, 100), (Role.PATIENT, 101)]


def test_forged_high_counter_does_not_advance():
    """A frame with the top counter and a bad tag must not lock the key out."""
    v, rec = verifier()
    forged = frame_at(COUNTER_MAX, key=OTHER_KEY)
    assert forged.auth.counter == COUNTER_MAX
    assert v.check(forged).result is AuthResult.BAD_TAG
    # the same frame with the tag of a genuine low-counter frame spliced on
    genuine = signed_frame(counter=4)
    spliced = parse_body(with_crc(forged.signed + genuine.auth.tag))
    assert v.check(spliced).result is AuthResult.BAD_TAG
    assert v.last_counters[Role.PATIENT] == 0 and rec.calls == []
    assert v.check(genuine).ok and v.last_counters[Role.PATIENT] == 5


def test_unknown_key_id():
    v, rec = verifier()
    for key_id in (5, 200, 255):
        verdict = v.check(signed_frame(key_id=key_id, key=OTHER_KEY))
        assert verdict.result is AuthResult.UNKNOWN_KEY and verdict.role is None
    # a key the verifier holds under an id that is no role: still unknown, never OK
    odd = FrameVerifier({7: OTHER_KEY})
    assert odd.check(signed_frame(key_id=7, key=OTHER_KEY)).result is AuthResult.UNKNOWN_KEY
    assert rec.calls == []


def test_missing_trailer():
    v, rec = verifier()
    plain = parse_body(encode_body(0x45, 1, b"\x07\x00\x00\x00"))
    assert plain.auth is None
    verdict = v.check(plain)
    assert verdict.result is AuthResult.NO_TRAILER and not verdict.ok
    assert rec.calls == [] and all(c == 0 for c in v.last_counters.values())


def test_trailer_stripped_and_flag_cleared_is_no_trailer():
    """Dropping the trailer (and the AUTH flag, CRC recomputed) leaves an unsigned frame."""
    frame = signed_frame()
    head = bytearray(frame.signed[: HEADER_SIZE + len(frame.payload)])
    head[2] = 0
    stripped = parse_body(with_crc(bytes(head)))
    assert type(stripped) is Frame and stripped.auth is None
    assert verifier()[0].check(stripped).result is AuthResult.NO_TRAILER
    assert len(frame.signed) + TAG_SIZE == HEADER_SIZE + len(frame.payload) + TRAILER_SIZE


# ---------------------------------------------------------------- counters across restarts


def test_on_accept_persists_before_verdict():
    """on_accept sees the counter before check() returns, so a failure to persist (an
    exception) reaches the caller instead of a verdict to act on."""
    store: dict[int, int] = {}

    def persist(key_id: int, counter: int) -> None:
        store[key_id] = counter

    v = FrameVerifier(KEYS, on_accept=persist)
    assert v.check(signed_frame(counter=20)).ok and store == {Role.PATIENT: 21}

    def broken(key_id: int, counter: int) -> None:
        raise OSError("NVM write failed")

    v2 = FrameVerifier(KEYS, on_accept=broken)
    with pytest.raises(OSError, match="NVM"):
        v2.check(signed_frame(counter=20))


def test_restored_counters_refuse_replay_across_power_cycle():
    store: dict[int, int] = {}
    signer = FrameSigner(Role.CLINICIAN, KEYS[Role.CLINICIAN])
    sent = [parse_body(encode_body(0x43, i, b"\x01\x00\x00\x00", signer)) for i in range(5)]
    before = FrameVerifier(KEYS, on_accept=lambda k, c: store.__setitem__(k, c))
    assert all(before.check(f).ok for f in sent[:3])
    assert store == {Role.CLINICIAN: 3}
    # power cycle: a new verifier from what was persisted
    after = FrameVerifier(KEYS, last_counters=store)
    for f in sent[:3]:
        assert after.check(f).result is AuthResult.REPLAYED
    assert after.check(sent[3]).ok and after.check(sent[4]).ok
    assert after.check(sent[4]).result is AuthResult.REPLAYED
    # restored counters for other keys stay at zero
    assert after.last_counters[Role.PATIENT] == 0


@pytest.mark.parametrize("restored", [1, 1000, COUNTER_CEILING - 2])
def test_restored_counter_boundary(restored):
    v = FrameVerifier(KEYS, last_counters={int(Role.SIM): restored})
    assert v.check(signed_frame(key_id=Role.SIM, counter=restored - 2)).result is AuthResult.REPLAYED
    assert v.check(signed_frame(key_id=Role.SIM, counter=restored - 1)).result is AuthResult.REPLAYED  # == restored
    assert v.check(signed_frame(key_id=Role.SIM, counter=restored)).ok  # restored + 1


# ---------------------------------------------------------------- the pump's answers and events (SR-058)


def _answer(request_tag: bytes | None, key_id: int = Role.PUMP, key: bytes | None = None, counter: int = 0) -> Frame:
    signer = FrameSigner(key_id, KEYS[key_id] if key is None else key, counter)
    frame = parse_body(encode_body(0x65, 7, b"\x01\x02", signer.bound(request_tag)))
    assert type(frame) is Frame
    return frame


def test_an_answer_is_bound_to_its_request_tag():
    tag_a, tag_b = b"A" * TAG_SIZE, b"B" * TAG_SIZE
    v = ResponseVerifier(KEYS)
    assert v.answer(_answer(tag_a), Role.PUMP, tag_a) is AuthResult.OK
    # The same genuine answer, offered as the answer to another request: refused.
    assert v.answer(_answer(tag_a), Role.PUMP, tag_b) is AuthResult.BAD_TAG
    # A request without a trailer: bound to NO_REQUEST_TAG, and to nothing else.
    assert v.answer(_answer(None), Role.PUMP, None) is AuthResult.OK
    assert v.answer(_answer(None), Role.PUMP, tag_a) is AuthResult.BAD_TAG
    # The bound tag is not the unbound one: an event's tag does not make an answer.
    unbound = parse_body(encode_body(0x65, 7, b"\x01\x02", FrameSigner(Role.PUMP, KEYS[Role.PUMP])))
    assert v.answer(unbound, Role.PUMP, tag_a) is AuthResult.BAD_TAG


def test_an_answer_needs_the_key_its_request_calls_for():
    tag = b"T" * TAG_SIZE
    v = ResponseVerifier(KEYS)
    assert v.answer(_answer(tag, Role.SIM), Role.SIM, tag) is AuthResult.OK
    assert v.answer(_answer(tag, Role.SIM), Role.PUMP, tag) is AuthResult.UNKNOWN_KEY
    assert v.answer(_answer(tag, key=OTHER_KEY), Role.PUMP, tag) is AuthResult.BAD_TAG
    plain = parse_body(encode_body(0x65, 7, b"\x01\x02"))
    assert v.answer(plain, Role.PUMP, tag) is AuthResult.NO_TRAILER
    # A host without the pump key cannot check: no verdict, not a pass.
    assert ResponseVerifier({Role.SIM: KEYS[Role.SIM]}).answer(plain, Role.PUMP, tag) is None


def test_events_need_the_pump_key_and_a_rising_counter():
    signer = FrameSigner(Role.PUMP, KEYS[Role.PUMP], 100)
    first = parse_body(encode_body(0x90, 1, b"\x00", signer))
    second = parse_body(encode_body(0x90, 2, b"\x00", signer))
    v = ResponseVerifier(KEYS)
    assert v.event(first) is AuthResult.OK
    assert v.event(second) is AuthResult.OK
    assert v.event(first) is AuthResult.REPLAYED
    assert v.event(second) is AuthResult.REPLAYED
    forged = parse_body(encode_body(0x90, 3, b"\x00", FrameSigner(Role.PUMP, OTHER_KEY, 500)))
    assert v.event(forged) is AuthResult.BAD_TAG
    assert v.last_event_counter == 102  # a forged frame does not move it
    assert v.event(parse_body(encode_body(0x90, 3, b"\x00"))) is AuthResult.NO_TRAILER
