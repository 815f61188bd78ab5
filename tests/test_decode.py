"""`thecal decode` (tools/decode.py): a real capture from the emulator's rig with the
firmware, hand-broken frames and records inside a capture, and files that are no
capture at all."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from emulator.capture import PCAP_HEADER, RECORD_HEADER, Capture, Direction, Link, read_capture
from protocol import framing
from protocol.codes import MessageFamily, NakReason, Role
from protocol.messages import BY_NAME, Hello, HostRx, Nak, Program, SimAdvance, Status, TimeRequest
from protocol.schema import family_of
from tests.captures import (
    REPO,
    body,
    make_capture,
    patched_body,
    pcap_header,
    pseudo,
    raw_body,
    raw_record,
    write_records,
)
from tests.harness import Procs
from tools.decode import CaptureError, decode_capture, format_text, run_decode, sim_time_text, to_json

PYTHON = sys.executable


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_capture(tmp_path_factory.mktemp("decode") / "run.pcap")


@pytest.fixture(scope="module")
def frames(capture: Path):
    return decode_capture(capture)


def by_name(frames, name: str, direction: Direction | None = None):
    return [fr for fr in frames if fr.name == name and (direction is None or fr.direction == direction)]


# ============================================================ a real capture


def test_every_frame_of_a_real_capture_decodes(capture, frames):
    recs = read_capture(capture)  # the emulator's own reader, to check against
    assert len(frames) == len(recs) > 50
    assert [fr.number for fr in frames] == list(range(1, len(frames) + 1))
    assert all(fr.ok for fr in frames), [(fr.number, fr.error) for fr in frames if not fr.ok]
    for fr, rec in zip(frames, recs, strict=True):
        assert (fr.sim_ms, fr.link, fr.direction, fr.body.raw) == (
            rec["sim_ms"],
            rec["link"],
            rec["direction"],
            rec["body"],
        )
        assert fr.wall_us == rec["wall_us"] > 0
    names = {fr.name for fr in frames}
    assert {
        "POWER_ON",
        "HW_INFO",
        "SLEEP_UNTIL",
        "MOTOR_RUN",
        "RUN_PROGRESS",
        "HOST_RX",
        "HOST_TX",
        "PROGRAM",
        "PROGRAM_ACK",
        "NAK",
        "STATUS_ACK",
        "ALARM_RAISED",
        "SIM_GROUND_TRUTH_ACK",
    } <= names
    assert {(fr.link, fr.direction) for fr in frames} == {
        (Link.HOST, Direction.HOST_TO_PUMP),
        (Link.HOST, Direction.PUMP_TO_HOST),
        (Link.PUMP, Direction.CONTROLLER_TO_PUMP),
        (Link.PUMP, Direction.PUMP_TO_CONTROLLER),
    }


def test_signed_requests_name_their_role_and_counter(frames):
    programs = by_name(frames, "PROGRAM", Direction.HOST_TO_PUMP)
    assert [(p.body.auth.role, p.body.auth.counter, p.message.command_id) for p in programs] == [
        (Role.CLINICIAN, 4, 3),
        (Role.CLINICIAN, 5, 4),
    ]
    assert all(len(p.body.auth.tag) == framing.TAG_SIZE for p in programs)
    (bolus,) = by_name(frames, "BOLUS_REQUEST", Direction.HOST_TO_PUMP)
    assert (bolus.body.auth.role_name, bolus.body.auth.counter) == ("patient", 1)
    assert [f.body.auth.role for f in by_name(frames, "SIM_ADVANCE")] == [Role.SIM, Role.SIM]
    # SR-058: what the pump and the emulator send the host is signed, pump-link frames not.
    to_host = [fr for fr in frames if fr.direction == Direction.PUMP_TO_HOST]
    sim = {fr for fr in to_host if family_of(fr.body.msg_type) is MessageFamily.SIM_RESPONSE}
    assert sim and {fr.body.auth.role for fr in sim} == {Role.SIM}
    assert {fr.body.auth.role for fr in to_host if fr not in sim} == {Role.PUMP}
    assert all(fr.body.auth is None for fr in frames if fr.link == Link.PUMP)


def test_the_refused_program_shows_as_a_nak_with_its_reason_named(frames):
    (nak,) = by_name(frames, "NAK", Direction.PUMP_TO_HOST)
    refused = by_name(frames, "PROGRAM", Direction.HOST_TO_PUMP)[0]
    assert nak.body.seq == refused.body.seq
    assert nak.message.reason is NakReason.OUT_OF_RANGE
    assert nak.message.request_type == Program.TYPE
    assert nak.message.field == "basal[0].start_s"
    line = next(ln for ln in format_text(frames).splitlines() if re.search(r"\bNAK\b", ln) and "host" in ln)
    assert "reason=OUT_OF_RANGE" in line
    assert "request_type=PROGRAM" in line
    assert 'field="basal[0].start_s"' in line


def test_relays_show_the_host_frame_they_carry(frames):
    host_in = {fr.body.raw: fr for fr in frames if fr.direction == Direction.HOST_TO_PUMP}
    host_out = {fr.body.raw: fr for fr in frames if fr.direction == Direction.PUMP_TO_HOST}
    rx, tx = by_name(frames, "HOST_RX"), by_name(frames, "HOST_TX")
    assert rx and tx
    for fr in rx:  # each is a host request the pump passed to the controller
        assert host_in[fr.relayed.raw].name == fr.relayed.name
        assert fr.relayed.message == host_in[fr.relayed.raw].message
    for fr in tx:  # each is what the controller had the pump send to the host
        assert host_out[fr.relayed.raw].message == fr.relayed.message
    text = format_text(frames)
    assert re.search(r"HOST_RX .* frame=\[PROGRAM seq=5 clinician#5: command_id=4 drug=\"morphine\"", text)
    assert re.search(r"HOST_TX .* frame=\[PROGRAM_ACK seq=5 pump#\d+: command_id=4\]", text)
    assert re.search(r"HOST_RX .* frame=\[STATUS seq=\d+ patient#2\]", text)


def test_text_is_one_aligned_line_per_frame(frames):
    lines = format_text(frames).splitlines()
    header, body, summary = lines[0], lines[1:-1], lines[-1]
    assert len(body) == len(frames)
    assert summary == f"{len(frames)} frames, 0 with errors"
    columns = {name: header.index(name) for name in ("link", "dir", "type", "auth", "fields")}
    for line, fr in zip(body, frames, strict=True):
        assert line[columns["link"] :].startswith(fr.link.name.lower()), line
        assert line[columns["type"] :].startswith(fr.name + " "), line
        assert line[columns["auth"] - 1] == " " and line[columns["auth"]] != " ", line
        assert line[columns["dir"] :].split()[0] in ("host->pump", "pump->host", "ctrl->pump", "pump->ctrl")
    status_ack = next(ln for ln in body if " STATUS_ACK " in ln and " host " in ln)
    assert "state=RUNNING" in status_ack
    assert (
        "alarms=[{alarm=BATTERY_ERI priority=MEDIUM acknowledged=false condition_present=true silenced=false "
        "needs_reset=false}]"
    ) in status_ack
    sleep = next(ln for ln in body if " SLEEP_UNTIL " in ln)
    assert re.search(r"wake_at_ms=\d+$", sleep)


def test_json_is_one_object_whose_fields_rebuild_the_messages(capture, frames, capsys):
    assert run_decode(str(capture), as_json=True) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)  # raises if stdout held more than one document
    assert out.count("\n") == 1
    assert doc["count"] == len(doc["frames"]) == len(frames)
    assert doc["errors"] == 0
    assert doc["capture"] == str(capture)
    for fj, fr in zip(doc["frames"], frames, strict=True):
        assert (fj["number"], fj["sim_ms"], fj["type"], fj["seq"]) == (fr.number, fr.sim_ms, fr.name, fr.body.seq)
        assert fj["link"] == fr.link.name.lower() and fj["direction"] == fr.direction.name.lower()
        assert fj["wall_time"].endswith("Z") and "T" in fj["wall_time"]
        assert BY_NAME[fj["type"]].from_dict(fj["fields"]) == fr.message
        if fr.relayed is not None:
            assert BY_NAME[fj["relayed"]["type"]].from_dict(fj["relayed"]["fields"]) == fr.relayed.message
    nak = next(fj for fj in doc["frames"] if fj["type"] == "NAK")
    assert nak["fields"]["reason"] == "out_of_range"
    signed = next(fj for fj in doc["frames"] if fj["type"] == "BOLUS_REQUEST")
    assert signed["auth"]["role"] == "patient" and signed["auth"]["key_id"] == Role.PATIENT
    assert len(bytes.fromhex(signed["auth"]["tag"])) == framing.TAG_SIZE


def test_a_capture_from_the_emulator_process_decodes(tmp_path):
    """`thecal emulator --capture FILE` over real ptys, stopped as a user stops it."""
    path = tmp_path / "emu.pcap"
    with Procs(tmp_path) as procs:
        emu = procs.emulator("--capture", str(path), split=False, firmware=True)
        hello = emu.sim.request(Hello(), role=Role.CLINICIAN)
        emu.sim.sim(SimAdvance(duration_ms=10_000))
        assert emu.stop() == 0
    frames = decode_capture(path)
    assert frames and all(fr.ok for fr in frames), [(fr.number, fr.name, fr.error) for fr in frames if not fr.ok]
    assert all(fr.wall_us is not None for fr in frames)
    (request,) = by_name(frames, "HELLO", Direction.HOST_TO_PUMP)
    assert request.body.auth.role is Role.CLINICIAN
    (ack,) = by_name(frames, "HELLO_ACK", Direction.PUMP_TO_HOST)
    assert ack.message == hello and ack.body.seq == request.body.seq
    assert any(fr.relayed is not None and fr.relayed.raw == request.body.raw for fr in by_name(frames, "HOST_RX"))
    assert by_name(frames, "SIM_ADVANCE_ACK")[0].message.time_ms >= 10_000
    assert "POWER_ON" in {fr.name for fr in frames}


def test_module_entry_point(capture, tmp_path):
    ok = subprocess.run([PYTHON, "-m", "tools.decode", str(capture), "--json"], cwd=REPO, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["count"] > 50
    missing = subprocess.run([PYTHON, "-m", "tools.decode", str(tmp_path / "nope.pcap")], cwd=REPO, capture_output=True)
    assert missing.returncode == 2
    assert missing.stdout == b""
    assert b"nope.pcap" in missing.stderr and b"No such file" in missing.stderr
    assert b"Traceback" not in missing.stderr


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    path = write_records(
        tmp_path / "many.pcap", [(Link.HOST, Direction.HOST_TO_PUMP, body(Hello(), i)) for i in range(4000)]
    )
    proc = subprocess.Popen(
        [PYTHON, "-m", "tools.decode", str(path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline().split()[0] == b"#"
    proc.stdout.close()  # as `| head -1` does, with most of the output still to come
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert err == b""


def test_without_wall_time_there_is_no_wall_column(tmp_path):
    path = make_capture(tmp_path / "nowall.pcap", wall_time=False)
    frames = decode_capture(path)
    assert all(fr.wall_us is None for fr in frames)
    assert "wall time" not in format_text(frames).splitlines()[0]
    assert all(fj["wall_time"] is None for fj in to_json(frames)["frames"])


def test_simulated_time_beyond_32_bits_comes_from_the_pcap_timestamp(tmp_path):
    late = 50 * 86_400_000 + 3_723_004  # 50 days 01:02:03.004: more than 2**32 ms
    cap = Capture(tmp_path / "late.pcap", wall_time=False)
    cap.frame(Link.HOST, Direction.HOST_TO_PUMP, late, body(Status()))
    cap.close()
    (fr,) = decode_capture(tmp_path / "late.pcap")
    assert fr.sim_ms == late
    assert sim_time_text(late) == "50d 01:02:03.004"
    assert "50d 01:02:03.004" in format_text([fr])


# ============================================================ broken frames inside a capture


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def _with_header(version: int, msg_type: int, flags: int, seq: int, plen: int, payload: bytes) -> bytes:
    head = framing.HEADER.pack(version, msg_type, flags, seq, plen) + payload
    return head + struct.pack("<I", zlib.crc32(head))


BROKEN_FRAMES = {
    "bad_crc": (Link.HOST, _flip(body(Hello(), 7, Role.CLINICIAN), 20), r"bad CRC \(header claims HELLO seq 7\)"),
    "unknown_type": (Link.HOST, raw_body(0x5F, b""), r"unknown type 0x5F"),
    "pump_type_on_host_link": (Link.HOST, body(TimeRequest()), r"TIME_REQUEST \(0x02\) is a pump-link type"),
    "host_type_on_pump_link": (Link.PUMP, body(Hello()), r"HELLO \(0x40\) is a host-link type"),
    "length_disagrees": (
        Link.HOST,
        _with_header(framing.PROTOCOL_VERSION, Status.TYPE, 0, 3, 5, b""),
        r"bad length \(body of 11 bytes\)",
    ),
    "too_short": (Link.HOST, b"\x01\x41", r"bad length \(body of 2 bytes\)"),
    "unknown_version": (Link.HOST, _with_header(3, Status.TYPE, 0, 3, 0, b""), r"unknown protocol version"),
    "reserved_flag": (
        Link.HOST,
        _with_header(framing.PROTOCOL_VERSION, Status.TYPE, 0x02, 3, 0, b""),
        r"reserved flag bits set",
    ),
    "enum_out_of_range": (
        Link.HOST,
        patched_body(Nak, "reason", 99),
        r"bad payload: NAK\.reason: 99 is not a valid value",
    ),
    "payload_too_short": (Link.PUMP, raw_body(0x22, b"\x01\x02\x03"), r"bad payload: TIME: payload too short"),
    "payload_too_long": (Link.HOST, raw_body(Status.TYPE, b"\x00"), r"bad payload: STATUS: payload has 1 extra bytes"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FRAMES))
def test_a_broken_frame_is_a_record_with_its_reason(tmp_path, case):
    link, bad, reason = BROKEN_FRAMES[case]
    good = body(Hello(), 1, Role.CLINICIAN)
    direction = Direction.HOST_TO_PUMP if link is Link.HOST else Direction.CONTROLLER_TO_PUMP
    path = write_records(
        tmp_path / "broken.pcap",
        [(Link.HOST, Direction.HOST_TO_PUMP, good), (link, direction, bad), (Link.HOST, Direction.HOST_TO_PUMP, good)],
    )
    frames = decode_capture(path)
    assert [fr.ok for fr in frames] == [True, False, True]
    assert frames[0].name == frames[2].name == "HELLO"
    assert re.fullmatch(reason, frames[1].error), frames[1].error
    assert frames[1].message is None
    line = format_text(frames).splitlines()[2]
    assert line.split()[0] == "2" and "ERROR " in line and re.search(reason, line)
    doc = to_json(frames)
    assert doc["errors"] == 1
    assert re.fullmatch(reason, doc["frames"][1]["error"]) and doc["frames"][1]["fields"] is None


def test_a_relay_of_a_broken_host_frame_is_reported_inside_the_relay(tmp_path):
    relay = body(HostRx(time_ms=5, frame=_flip(body(Status(), 9, Role.PATIENT), 9)))
    path = write_records(tmp_path / "relay.pcap", [(Link.PUMP, Direction.PUMP_TO_CONTROLLER, relay)])
    (fr,) = decode_capture(path)
    assert fr.error is None and fr.name == "HOST_RX"
    assert fr.relayed.error.startswith("bad CRC") and not fr.ok
    assert "frame=[ERROR bad CRC (header claims STATUS seq 9)]" in format_text([fr])
    assert to_json([fr])["errors"] == 1


BROKEN_RECORDS = {
    "shorter_than_pseudo_header": (raw_record(b"\x01\x01\x00"), r"record of 3 bytes is shorter than the 16-byte"),
    "pseudo_header_version": (raw_record(pseudo(1, 0, version=9) + body(Hello())), r"pseudo-header version 9"),
    "unknown_link": (raw_record(pseudo(7, 0) + body(Hello())), r"pseudo-header names link 7"),
    "truncated_record": (raw_record(b"\x01" * 10, announced=100), r"truncated record: 100 bytes announced, 10 in"),
    "truncated_record_header": (b"\x00" * 5, r"truncated record header \(5 of 16 bytes\)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RECORDS))
def test_a_broken_record_is_a_record_with_its_reason(tmp_path, case):
    tail, reason = BROKEN_RECORDS[case]
    good = (Link.HOST, Direction.HOST_TO_PUMP, body(Hello(), 1, Role.CLINICIAN))
    frames = decode_capture(write_records(tmp_path / "rec.pcap", [good, good], tail=tail))
    assert [fr.ok for fr in frames] == [True, True, False]
    assert re.search(reason, frames[2].error), frames[2].error
    assert "ERROR" in format_text(frames).splitlines()[3]
    assert to_json(frames)["errors"] == 1


# ============================================================ files that are no capture


def _big_endian(path: Path, out: Path) -> Path:
    """The same capture as a big-endian pcap (what a capture from another machine may be)."""
    data = path.read_bytes()
    fields = PCAP_HEADER.unpack_from(data)
    res = bytearray(struct.pack(">IHHiIII", *fields))
    off = PCAP_HEADER.size
    while off < len(data):
        sec, usec, incl, orig = RECORD_HEADER.unpack_from(data, off)
        res += struct.pack(">IIII", sec, usec, incl, orig)
        res += data[off + RECORD_HEADER.size : off + RECORD_HEADER.size + incl]
        off += RECORD_HEADER.size + incl
    out.write_bytes(bytes(res))
    return out


def test_a_big_endian_pcap_decodes_the_same(capture, frames, tmp_path):
    other = decode_capture(_big_endian(capture, tmp_path / "be.pcap"))
    assert [(f.sim_ms, f.name, f.message) for f in other] == [(f.sim_ms, f.name, f.message) for f in frames]


NOT_CAPTURES = {
    "missing": (None, r"cannot read .*missing\.pcap: No such file"),
    "directory": ("dir", r"cannot read .*directory\.pcap: it is a directory"),
    "empty": (b"", r"empty\.pcap is empty, not a pcap file"),
    "short": (b"\xd4\xc3\xb2\xa1\x02\x00", r"short\.pcap is 6 bytes long, too short for a pcap file header"),
    "text": (b"this is not a capture at all, just text\n", r"text\.pcap is not a pcap file \(magic 0x73696874\)"),
    "pcapng": (b"\x0a\x0d\x0d\x0a" + b"\x00" * 40, r"pcapng\.pcap is a pcapng file.*editcap -F pcap"),
    "ethernet": (pcap_header(linktype=1), r"ethernet\.pcap has link type 1, not USER0 \(147\)"),
}


@pytest.mark.parametrize("case", sorted(NOT_CAPTURES))
def test_a_file_that_is_no_capture_exits_2_naming_the_problem(tmp_path, capsys, case):
    content, message = NOT_CAPTURES[case]
    path = tmp_path / f"{case}.pcap"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        decode_capture(path)
    assert run_decode(str(path), as_json=False) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("thecal decode: ") and re.search(message, err)
    assert run_decode(str(path), as_json=True) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)  # the CLI contract: one object on stdout, errors included
    assert doc["usage_error"] is True and re.search(message, doc["error"])
    assert re.search(message, err)
