"""protocol/vectors.json: current with the code, and every vector means what it says."""

from __future__ import annotations

import json
import zlib

import pytest

from protocol import codec
from protocol.auth import AuthResult, FrameSigner, FrameVerifier, compute_tag
from protocol.codes import MessageFamily, Role
from protocol.framing import CRC_RESIDUE, Frame, FrameError, FrameErrorKind, wrap_body
from protocol.messages import REGISTRY
from protocol.schema import reference_build, reference_parse
from protocol.vectors import TEST_KEYS, VECTORS_PATH, build_vectors, render_vectors

COMMITTED = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
OK = [v for v in COMMITTED if v["expect"] == "ok"]
SIGNED = [v for v in OK if "key_id" in v]
ERRORS = [v for v in COMMITTED if v["expect"] == "frame_error"]
REJECTED = [v for v in COMMITTED if v["expect"] == "rejected"]


def _ids(vectors):
    return [v["name"] for v in vectors]


def _decode_all(wire: bytes, chunk: int | None = None):
    dec = codec.MessageDecoder()
    if chunk is None:
        return dec.feed(wire)
    out = []
    for i in range(0, len(wire), chunk):
        out += dec.feed(wire[i : i + chunk])
    return out


def _signer_for(v) -> FrameSigner | None:
    if "key_id" not in v:
        return None
    return FrameSigner(v["key_id"], bytes.fromhex(v["key_hex"]), counter=v["counter"] - 1)


# ---------------------------------------------------------------- the file as a whole


def test_committed_file_is_current():
    assert VECTORS_PATH.read_text(encoding="utf-8") == render_vectors(), (
        "protocol/vectors.json is stale: run `thecal spec --write`"
    )


def test_generation_is_deterministic():
    assert render_vectors(build_vectors()) == render_vectors(build_vectors())
    text = render_vectors()
    assert text.endswith("}\n]\n")
    assert isinstance(json.loads(text), list)


def test_names_are_unique():
    names = _ids(COMMITTED)
    assert len(names) == len(set(names))


def test_every_message_type_has_a_valid_vector():
    covered = {v["msg_type"] for v in OK}
    missing = sorted(f"0x{t:02X} {REGISTRY[t].NAME}" for t in set(REGISTRY) - covered)
    assert not missing, f"no vector for {missing}: add an example to protocol/vectors.py"


def test_every_request_type_has_a_signed_vector_with_an_allowed_role():
    requests = {t for t, c in REGISTRY.items() if c.FAMILY in (MessageFamily.HOST_REQUEST, MessageFamily.SIM_REQUEST)}
    signed = {v["msg_type"] for v in SIGNED}
    assert requests <= signed
    for v in SIGNED:
        assert Role(v["key_id"]) in REGISTRY[v["msg_type"]].ROLES, v["name"]


def test_there_are_negative_vectors_of_each_kind():
    kinds = {v["error"] for v in ERRORS}
    assert {"bad_crc", "bad_cobs", "bad_length", "unknown_type"} <= kinds
    assert REJECTED


def test_the_program_vector_is_the_reference_therapy():
    (v,) = [v for v in OK if v["name"] == "PROGRAM"]
    f = v["fields"]
    assert f["drug"] == "morphine"
    assert f["concentration_ng_per_ml"] == 5_000_000
    assert [(s["start_s"], s["rate_ng_per_day"]) for s in f["basal"]] == [
        (0, 1_000_000),
        (7 * 3600, 1_500_000),
        (22 * 3600, 1_000_000),
    ]
    assert (f["bolus_dose_ng"], f["bolus_duration_s"], f["bolus_lockout_s"]) == (100_000, 600, 7200)
    assert (f["bolus_max_per_24h"], f["max_dose_24h_ng"], f["low_reservoir_ul"]) == (6, 3_000_000, 2000)


# ---------------------------------------------------------------- valid frames


@pytest.mark.parametrize("v", OK, ids=_ids(OK))
def test_valid_vector_decodes_to_its_fields(v):
    wire = bytes.fromhex(v["wire_hex"])
    body = bytes.fromhex(v["body_hex"])
    assert wire == wrap_body(body)
    assert zlib.crc32(body) == CRC_RESIDUE
    for chunk in (None, 1, 7):
        items = _decode_all(wire, chunk)
        assert len(items) == 1, items
        (item,) = items
        assert isinstance(item, codec.Received), item
        assert item.frame.msg_type == v["msg_type"]
        assert item.frame.seq == v["seq"]
        assert item.frame.payload.hex() == v["payload_hex"]
        msg = item.message
        assert type(msg) is REGISTRY[v["msg_type"]]
        assert msg.NAME == v["message"]
        assert msg.to_dict() == v["fields"]
        assert (item.frame.auth is not None) == ("key_id" in v)


@pytest.mark.parametrize("v", OK, ids=_ids(OK))
def test_valid_vector_reencodes_to_the_same_bytes(v):
    cls = REGISTRY[v["msg_type"]]
    msg = cls.from_dict(v["fields"])
    assert msg.encode_payload().hex() == v["payload_hex"]
    assert reference_build(msg).hex() == v["payload_hex"]
    assert reference_parse(cls, bytes.fromhex(v["payload_hex"])) == msg
    assert codec.encode_to_body(msg, v["seq"], _signer_for(v)).hex() == v["body_hex"]
    assert codec.encode(msg, v["seq"], _signer_for(v)).hex() == v["wire_hex"]


# ---------------------------------------------------------------- signatures


@pytest.mark.parametrize("v", SIGNED, ids=_ids(SIGNED))
def test_signed_vector_verifies_and_only_with_its_key(v):
    (item,) = _decode_all(bytes.fromhex(v["wire_hex"]))
    frame: Frame = item.frame
    key = bytes.fromhex(v["key_hex"])
    role = Role(v["key_id"])
    assert key == TEST_KEYS[role]
    assert frame.auth.key_id == v["key_id"]
    assert frame.auth.counter == v["counter"]
    assert frame.signed.hex() == v["signed_hex"]
    assert frame.auth.tag.hex() == v["tag_hex"] == compute_tag(key, frame.signed).hex()

    verifier = FrameVerifier({role: key})
    verdict = verifier.check(frame)
    assert verdict.ok and verdict.role is role and verdict.counter == v["counter"]
    assert verifier.check(frame).result is AuthResult.REPLAYED  # the same frame again

    other = bytes(b ^ 0x5A for b in key)
    assert FrameVerifier({role: other}).check(frame).result is AuthResult.BAD_TAG
    other_roles = {r: k for r, k in TEST_KEYS.items() if r is not role}
    assert FrameVerifier(other_roles).check(frame).result is AuthResult.UNKNOWN_KEY


@pytest.mark.parametrize("v", SIGNED, ids=_ids(SIGNED))
def test_a_flipped_bit_in_a_signed_vector_fails_the_tag(v):
    body = bytearray.fromhex(v["body_hex"])
    body[1 + len(body) // 3] ^= 0x01  # somewhere in header, payload or trailer
    body[-4:] = zlib.crc32(bytes(body[:-4])).to_bytes(4, "little")
    items = _decode_all(wrap_body(bytes(body)))
    frames = [i.frame for i in items if isinstance(i, codec.Received | codec.Rejected)]
    if not frames:  # the flip broke the header itself (type, flags or length)
        assert all(isinstance(i, FrameError) for i in items)
        return
    role = Role(v["key_id"])
    verdict = FrameVerifier({role: TEST_KEYS[role]}).check(frames[0])
    assert not verdict.ok


# ---------------------------------------------------------------- negative vectors


@pytest.mark.parametrize("v", ERRORS, ids=_ids(ERRORS))
def test_frame_error_vector_gives_its_error(v):
    items = _decode_all(bytes.fromhex(v["wire_hex"]))
    assert len(items) == 1, items
    (err,) = items
    assert isinstance(err, FrameError), err
    assert err.kind is FrameErrorKind(v["error"])
    assert err.msg_type == v["msg_type"]
    assert err.seq == v["seq"]


@pytest.mark.parametrize("v", REJECTED, ids=_ids(REJECTED))
def test_rejected_vector_gives_its_nak_reason(v):
    items = _decode_all(bytes.fromhex(v["wire_hex"]))
    assert len(items) == 1, items
    (item,) = items
    assert isinstance(item, codec.Rejected), item
    assert item.frame.msg_type == v["msg_type"]
    assert item.frame.seq == v["seq"]
    assert item.frame.payload.hex() == v["payload_hex"]
    assert item.error.reason.name.lower() == v["nak_reason"]
    assert item.error.field == v["nak_field"]
    if "key_id" in v:  # the signature is fine: only the payload is wrong
        role = Role(v["key_id"])
        assert FrameVerifier({role: TEST_KEYS[role]}).check(item.frame).ok


# ---------------------------------------------------------------- COBS's full block


def _cobs_blocks(wire: bytes) -> list[int]:
    """The code bytes of one frame's COBS encoding (between its delimiters)."""
    seg = wire[1:-1]
    codes, i = [], 0
    while i < len(seg):
        codes.append(seg[i])
        i += seg[i]
    return codes


def test_the_cobs_run_vectors_pin_down_the_full_block():
    named = {v["name"]: v for v in OK}
    at_end = named["HOST_TX/cobs-run-254-at-end"]
    body = bytes.fromhex(at_end["body_hex"])
    assert len(body.split(b"\x00")[-1]) == 254  # exactly 254 non-zero bytes end the body
    codes = _cobs_blocks(bytes.fromhex(at_end["wire_hex"]))
    assert codes[-1] == 0xFF  # the last block is full, and no 0x01 block follows it
    over = named["HOST_TX/cobs-run-over-254"]
    body = bytes.fromhex(over["body_hex"])
    assert max(len(r) for r in body.split(b"\x00")) > 254
    codes = _cobs_blocks(bytes.fromhex(over["wire_hex"]))
    full = codes.index(0xFF)
    assert full < len(codes) - 1 and codes[full + 1] != 0xFF  # a full block inside the body, then the rest
    for v in (at_end, over):
        assert codec.encode(REGISTRY[v["msg_type"]].from_dict(v["fields"]), v["seq"]).hex() == v["wire_hex"]
