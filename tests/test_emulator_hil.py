"""The emulator as its own process over real ptys (issue 3's "done when").

Most tests run two processes: `thecal emulator --split` and the scripted controller
(`python -m emulator.scripted`) on its pump-link pty, with the test as the host on the
host pty. Time is lockstep (free), so models with short watchdog windows and fast
strokes keep every test to a second or two of wall time. tests/harness.py starts and
kills the processes. Tests named test_bug_* are regressions for bugs found here.
"""

from __future__ import annotations

import json
import math
import os
import random
import select
import signal
import stat
import struct
import subprocess
import time
import tty
import zlib
from pathlib import Path

import pytest
from cobs import cobs

from emulator.capture import Direction, Link, read_capture
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import BeepPattern, Fault, MotorState, NakReason, Role
from protocol.codes import Link as WireLink
from protocol.framing import CRC_RESIDUE, PROTOCOL_VERSION, encode_frame, in_version, parse_body, wrap_body
from protocol.messages import (
    HOST_MAX_BODY,
    Nak,
    SimAdvance,
    SimAdvanceAck,
    SimClearFault,
    SimGroundTruth,
    SimGroundTruthAck,
    SimInjectFault,
    SimPowerCycle,
    SimSetSpeed,
    Status,
)
from tests.harness import (
    PYTHON,
    REPO,
    Procs,
    action,
    advance,
    boot_count,
    ground_truth,
    make_deterministic,
    retry_sim,
    run,
    send_frame,
    wait_until,
    write_model,
)
from tools.client import Refused

CONC = 5_000_000  # the default model's drug, ng/mL
FILL_NL = 12_000_000  # the default model's initial fill
WINDOW = 10_000  # watchdog window of the test models, ms


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def model(tmp_path: Path, name: str = "model.toml", **keys) -> Path:
    base = {"stroke_error_sd_ppm": 0, "min_stroke_interval_ms": 100, "watchdog_window_ms": WINDOW}
    return write_model(tmp_path, name, **{**base, **keys})


def fault(f: Fault, link: WireLink = WireLink.NONE, value: int = 0, rate_ppm: int = 0, seed: int = 0):
    return SimInjectFault(fault=f, link=link, value=value, rate_ppm=rate_ppm, seed=seed)


def strokes_over_time(sim, until_ms: int, step_ms: int) -> list[tuple[int, int]]:
    """(time, strokes_total) after each lockstep step up to until_ms."""
    out = []
    now = ground_truth(sim).time_ms
    while now < until_ms:
        now = advance(sim, min(step_ms, until_ms - now))
        out.append((now, ground_truth(sim).strokes_total))
    return out


# ============================================================ delivery matches commands

RUNS = [run(1_000, 10, 100), run(5_000, 64, 100), run(20_000, 7, 250)]
N_STROKES = 81


@pytest.mark.req("SR-009")
def test_strokes_and_volume_exact_without_stroke_error(procs, tmp_path):
    stroke_nl = 250  # not the default: the model file must be what is used
    emu = procs.emulator(model=model(tmp_path, stroke_nl=stroke_nl))
    procs.controller(emu, RUNS)
    sim = emu.sim
    assert advance(sim, 60_000) == 60_000
    gt = ground_truth(sim)
    assert gt.strokes_total == N_STROKES
    # Catheter dead volume primed with the drug: what goes in at the pump comes out.
    assert gt.delivered_nl == N_STROKES * stroke_nl
    assert FILL_NL - gt.reservoir_nl == N_STROKES * stroke_nl
    assert gt.delivered_ng == N_STROKES * stroke_nl * CONC // 10**6
    assert gt.motor is MotorState.IDLE and gt.controller_alive
    assert gt.outlet_pressure_pa == 0 and gt.tones_total == 0


def test_strokes_exact_and_volume_within_tolerance_with_stroke_error(procs, tmp_path):
    sd_ppm, stroke_nl = 20_000, 500
    m = model(tmp_path, stroke_error_sd_ppm=sd_ppm, stroke_nl=stroke_nl)
    emus = [procs.emulator(model=m, seed=s) for s in (11, 11, 12)]
    for emu in emus:
        procs.controller(emu, RUNS)
    truths = []
    for emu in emus:
        advance(emu.sim, 60_000)
        truths.append(ground_truth(emu.sim))
    a, a_again, b = truths
    # Each stroke is floor(stroke_nl * (1 + e)) with e ~ N(0, sd): the sum of N has mean
    # N * (stroke_nl - 1/2) and standard deviation sqrt(N) * stroke_nl * sd. Six sigma
    # (plus the flooring) is a bound no seed should reach.
    exact = N_STROKES * stroke_nl
    sigma = math.sqrt(N_STROKES) * stroke_nl * sd_ppm / 1e6
    for gt in truths:
        assert gt.strokes_total == N_STROKES
        assert abs(gt.delivered_nl - (exact - N_STROKES / 2)) <= 6 * sigma + 1
        assert gt.delivered_nl != exact  # the error is really applied
        assert FILL_NL - gt.reservoir_nl == gt.delivered_nl  # primed catheter
    assert a == a_again
    assert b.delivered_nl != a.delivered_nl


# ============================================================ the watchdog


def check_watchdog_stop(series, tones, quiet_from_ms: int, commanded: int, first_stroke_ms: int, interval_ms: int):
    """The hardware stopped the run within the window after the last kick (<= quiet_from_ms)."""
    final = series[-1][1]
    assert 0 < final < commanded
    alarms = [t.time_ms for t in tones if t.pattern is BeepPattern.HARDWARE_ALARM]
    assert alarms, tones
    assert alarms[0] <= quiet_from_ms + WINDOW
    last_stroke_ms = first_stroke_ms + (final - 1) * interval_ms
    assert last_stroke_ms < alarms[0]  # nothing at or after the expiry
    assert alarms[0] - last_stroke_ms <= interval_ms  # strokes went on until it expired
    # Over time: the count reached its final value by the expiry and never moved again.
    assert all(n == final for t, n in series if t >= alarms[0])
    assert any(n < final for t, n in series if t < alarms[0])


@pytest.mark.req("SR-023")
def test_watchdog_stops_the_motor_when_the_controller_goes_silent(procs, tmp_path):
    silence_at, interval = 6_000, 500
    emu = procs.emulator(model=model(tmp_path, min_stroke_interval_ms=interval))
    procs.controller(emu, [run(1_000, 60, interval), action(silence_at, "silence")])
    sim = emu.sim
    series = strokes_over_time(sim, 40_000, 250)
    gt = ground_truth(sim)
    # The controller kicks at least every half window while woken every stroke, so its
    # last kick is in [silence_at - window/4 - interval, silence_at].
    check_watchdog_stop(series, gt.tones, silence_at, 60, 1_000, interval)
    assert gt.tones[0].time_ms >= silence_at - WINDOW // 4 - interval + WINDOW
    assert gt.motor is MotorState.IDLE
    assert not gt.controller_alive  # the same process, still silent after its reset
    assert gt.delivered_nl == gt.strokes_total * 500


@pytest.mark.req("SR-023")
def test_watchdog_stops_the_motor_when_the_controller_is_killed(procs, tmp_path):
    interval = 500
    emu = procs.emulator("--idle-timeout", "1", model=model(tmp_path, min_stroke_interval_ms=interval))
    ctl = procs.controller(emu, [run(1_000, 60, interval)])
    sim = emu.sim
    killed_at = advance(sim, 8_000)
    assert ground_truth(sim).strokes_total == 15
    os.killpg(ctl.proc.pid, signal.SIGKILL)
    ctl.proc.wait(5)
    series = strokes_over_time(sim, 30_000, 250)
    gt = ground_truth(sim)
    check_watchdog_stop(series, gt.tones, killed_at, 60, 1_000, interval)
    assert gt.motor is MotorState.IDLE and not gt.controller_alive
    assert emu.alive
    # A new controller process is taken on (PROCESS_RESTART) and keeps the watchdog quiet.
    procs.controller(emu, [])
    tones = ground_truth(sim).tones_total
    advance(sim, 5 * WINDOW)
    gt = ground_truth(sim)
    assert gt.controller_alive and gt.tones_total == tones


def test_bug_dead_controller_stalled_long_advances(procs, tmp_path):
    """Bug: with the controller process gone, every watchdog reset wrote POWER_ON into the
    pump pty that nobody read; once its buffer (about 20 kB) was full, each write waited
    a second for room, so a day's advance took hours of wall time. Now a write to a
    port that has stalled drops at once (as on a dead line) until the port drains."""
    emu = procs.emulator("--idle-timeout", "0.5", model=model(tmp_path, watchdog_window_ms=2_000))
    ctl = procs.controller(emu, [])
    sim = emu.sim
    os.killpg(ctl.proc.pid, signal.SIGKILL)
    ctl.proc.wait(5)
    advance(sim, 86_400_000, timeout_s=60)  # 43200 resets, about 1.5 MB of POWER_ON
    gt = ground_truth(sim)
    assert gt.tones_total == 86_400_000 // 2_000
    # And a controller that comes later still gets its link back.
    procs.controller(emu, [])
    advance(sim, 10_000)
    assert ground_truth(sim).controller_alive


# ============================================================ garbage and noise


@pytest.mark.req("SR-032")
def test_host_garbage_never_crashes_and_the_next_frame_is_served(procs, tmp_path):
    emu = procs.emulator(model=model(tmp_path))
    procs.controller(emu, [])
    sim = emu.sim
    rnd = random.Random(3)
    good = codec.encode(SimGroundTruth(tones_from=0), 1)
    junk = [
        rnd.randbytes(20_000),  # random bytes, delimiters included
        good[: len(good) // 2],  # truncated
        bytes([0x42]) * 50_000,  # oversize, no delimiter
        b"\x00",
        b"\x00" * 64,
        bytes(rnd.randrange(1, 256) for _ in range(5_000)) + b"\x00",
        encode_frame(0xAF, 9, b"\x01\x02"),  # unknown sim-range type, unsigned
        encode_frame(Status.TYPE, 10, b"\x00" * 4),  # a relayed type with a bad payload
    ]
    for j in junk:
        sim.send_raw(j)
        gt = ground_truth(sim)  # served right after each piece of junk
        assert isinstance(gt, SimGroundTruthAck)
    assert emu.alive


@pytest.mark.req("SR-032")
def test_bug_oversize_host_frame_killed_the_emulator(procs, tmp_path):
    """Bug: an intact host frame too long for HOST_RX (payload over 1024 bytes, within
    the framing's MAX_PAYLOAD) raised EncodeError in the relay and the emulator process died.
    Now it is answered NAK BAD_LENGTH."""
    emu = procs.emulator(model=model(tmp_path))
    procs.controller(emu, [])
    sim = emu.sim
    nak = send_frame(sim, encode_frame(Status.TYPE, 4242, b"\x00" * HOST_MAX_BODY), 4242)
    assert isinstance(nak, Nak) and nak.reason is NakReason.BAD_LENGTH
    assert isinstance(ground_truth(sim), SimGroundTruthAck)
    assert emu.alive


@pytest.mark.req("SR-032")
def test_pump_link_garbage_never_crashes(procs, tmp_path):
    emu = procs.emulator(model=model(tmp_path))
    rnd = random.Random(4)
    fd = os.open(emu.pump, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, rnd.randbytes(10_000) + bytes([0x17]) * 30_000)  # before any controller
        procs.controller(emu, [run(1_000, 5, 100), run(20_000, 5, 100)])
        sim = emu.sim
        advance(sim, 10_000)
        os.write(fd, rnd.randbytes(10_000))  # between exchanges, beside a live controller
        os.write(fd, b"\x00" + codec.encode(SimAdvance(duration_ms=1), 1)[1:-1])  # a truncated frame
        advance(sim, 20_000)
    finally:
        os.close(fd)
    gt = ground_truth(sim)
    assert gt.strokes_total == 10 and gt.controller_alive
    assert emu.alive


@pytest.mark.parametrize("where", [WireLink.PUMP, WireLink.HOST])
@pytest.mark.parametrize("noise", [Fault.LINK_CORRUPT, Fault.LINK_DROP, Fault.LINK_DUPLICATE])
@pytest.mark.req("SR-038")
def test_link_noise_is_survived(procs, tmp_path, where, noise):
    interval = 500
    emu = procs.emulator("--idle-timeout", "1", model=model(tmp_path, min_stroke_interval_ms=interval))
    procs.controller(emu, [run(1_000, 40, interval), run(100_000, 10, interval)])
    sim = emu.sim
    rate = 20_000 if where is WireLink.PUMP else 4_000
    lost: list[int] = []
    retry_sim(sim, fault(noise, where, rate_ppm=rate, seed=7), timeout_s=0.25)
    for _ in range(8):
        # A lost ACK means the advance may have happened twice: the times below allow it.
        retry_sim(sim, SimAdvance(duration_ms=5_000), timeout_s=0.25, lost=lost)
        retry_sim(sim, SimGroundTruth(tones_from=0), timeout_s=0.25, lost=lost)
    retry_sim(sim, SimClearFault(fault=noise), timeout_s=0.25, lost=lost)
    if where is WireLink.HOST:
        assert sum(lost) > 0  # the noise was really there
    # Clear: the very next request is served, and the pump link works exactly again.
    t = ground_truth(sim).time_ms
    assert t <= 80_000
    advance(sim, 99_000 - t)
    before = ground_truth(sim)
    advance(sim, 40_000)
    gt = ground_truth(sim)
    assert gt.strokes_total - before.strokes_total == 10
    assert gt.controller_alive and gt.tones_total == before.tones_total
    assert emu.alive


# ============================================================ captures


def capture_scenario(emu, keys) -> None:
    sim = emu.sim
    make_deterministic(sim, keys)
    advance(sim, 10_000)
    ground_truth(sim)
    with pytest.raises(Refused):  # relayed to the controller and answered by it
        sim.request(Status())
    sim.sim(fault(Fault.BATTERY_MV, value=3_200))
    advance(sim, 20_000)
    ground_truth(sim)


def test_same_scenario_same_seed_gives_identical_captures(procs, tmp_path):
    keys = {"clinician": "11" * 32, "patient": "22" * 32, "sim": "33" * 32, "pump": "44" * 32}
    m = model(tmp_path, stroke_error_sd_ppm=10_000)
    runs = []
    for i, seed in enumerate((5, 5, 6)):
        sd = tmp_path / f"sd{i}"
        sd.mkdir(mode=0o700)
        (sd / "keys.json").write_text(json.dumps(keys))
        os.chmod(sd / "keys.json", 0o600)
        cap = tmp_path / f"run{i}.pcap"
        emu = procs.emulator("--capture", str(cap), "--no-capture-wall-time", state_dir=sd, model=m, seed=seed)
        runs.append((emu, cap))
    # Connect without a host frame (waiting for pump.json's boot count instead), so no
    # host frame races the controller's start-up exchange.
    ctls = [procs.controller(emu, [run(1_000, 20, 100), action(15_000, "beep")], connect=None) for emu, _ in runs]
    for (emu, _), ctl in zip(runs, ctls, strict=True):
        wait_until(lambda emu=emu: boot_count(emu.state_dir) > 0, "controller to connect", ctl)
    for emu, _ in runs:
        capture_scenario(emu, emu.keys())
        assert emu.stop() == 0
    a, a_again, other = (cap.read_bytes() for _, cap in runs)
    assert a == a_again
    assert a != other  # the seed matters (the check can fail)
    recs = read_capture(runs[0][1])
    seen = {(r["link"], r["direction"]) for r in recs}
    assert seen == {
        (Link.HOST, Direction.HOST_TO_PUMP),
        (Link.HOST, Direction.PUMP_TO_HOST),
        (Link.PUMP, Direction.CONTROLLER_TO_PUMP),
        (Link.PUMP, Direction.PUMP_TO_CONTROLLER),
    }
    assert all(r["wall_us"] == 0 for r in recs)
    assert [r["sim_ms"] for r in recs] == sorted(r["sim_ms"] for r in recs)
    assert max(r["sim_ms"] for r in recs) == 30_000
    # Every record is a whole frame body the codec reads back.
    dec = codec.MessageDecoder()
    from cobs import cobs

    for r in recs:
        (item,) = dec.feed(b"\x00" + cobs.encode(r["body"]) + b"\x00")
        assert isinstance(item, codec.Received), r


# ============================================================ the state directory


@pytest.mark.parametrize("how", ["stdin", "sigterm", "sigint"])
@pytest.mark.req("SR-037")
def test_state_directory_survives_a_restart(procs, tmp_path, how):
    sd = tmp_path / "state"
    script = [run(1_000, 20, 200), action(2_000, "beep"), action(9_000, "beep")]
    m = model(tmp_path)
    emu = procs.emulator(state_dir=sd, split=False, model=m, script=script)
    sim = emu.sim
    advance(sim, 10_000)
    advance(sim, 1)  # just before the stop: only the save on exit can have this
    before = ground_truth(sim)
    assert (before.strokes_total, before.tones_total, before.time_ms) == (20, 2, 10_001)
    keys_file = sd / "keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    keys = keys_file.read_bytes()
    assert emu.stop(how) == 0
    (sd / "port").write_text("stale\n")

    emu2 = procs.emulator(state_dir=sd, split=False, model=m, script=script)
    assert keys_file.read_bytes() == keys and stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert (sd / "port").read_text() == emu2.host + "\n"
    sim2 = emu2.sim
    after = ground_truth(sim2)  # the old keys still work
    fields = ("time_ms", "reservoir_nl", "delivered_nl", "delivered_ng", "strokes_total", "tones_total")
    assert {f: getattr(after, f) for f in fields} == {f: getattr(before, f) for f in fields}
    assert advance(sim2, 5_000) == 15_001  # and time goes on from there
    assert emu2.stop() == 0


def start_emulator(sd: Path, m: Path) -> subprocess.CompletedProcess:
    """`thecal emulator` on sd, expected to refuse at once (30 s bound: it would serve
    forever otherwise)."""
    return subprocess.run(
        [PYTHON, "-m", "tools.cli", "emulator", "--state-dir", str(sd), "--pump-model", str(m)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_a_second_emulator_on_a_state_directory_in_use_exits_at_once_naming_it_and_the_holder(procs, tmp_path):
    """Two emulators on one directory raced on its files and overwrote each other's port
    file; now the second is refused at once, and the first goes on unharmed. A killed
    emulator leaves nothing locked."""
    sd = tmp_path / "state"
    m = model(tmp_path)
    emu = procs.emulator(state_dir=sd, split=False, model=m)
    port = (sd / "port").read_text()
    second = start_emulator(sd, m)
    assert second.returncode != 0 and second.stdout == ""
    assert f"state directory {sd} is in use by another emulator (pid {emu.proc.pid})" in second.stderr
    assert (sd / "port").read_text() == port
    assert advance(emu.sim, 1_000) == 1_000  # the first one is still serving
    emu.signal(signal.SIGKILL)
    emu.wait()
    emu2 = procs.emulator(state_dir=sd, split=False, model=m)
    assert (sd / "port").read_text() == emu2.host + "\n"
    assert emu2.stop() == 0


def test_an_emulator_whose_keys_json_was_deleted_is_refused_not_given_new_keys(procs, tmp_path):
    """The firmware keeps the keys it was provisioned with in its NVM: new ones in
    keys.json would make every command fail authentication. The emulator refuses to
    start and says how to re-provision; moving the NVM away does so."""
    sd = tmp_path / "state"
    m = model(tmp_path)
    emu = procs.emulator(state_dir=sd, split=False, model=m, firmware=True)
    ground_truth(emu.sim)
    assert emu.stop() == 0
    (sd / "keys.json").unlink()
    again = start_emulator(sd, m)
    assert again.returncode != 0 and again.stdout == "" and "Traceback" not in again.stderr
    assert "keys.json is missing" in again.stderr and "firmware-nvm.bin" in again.stderr
    assert not (sd / "keys.json").exists()
    (sd / "firmware-nvm.bin").rename(tmp_path / "old-nvm.bin")
    emu2 = procs.emulator(state_dir=sd, split=False, model=m, firmware=True)
    assert ground_truth(emu2.sim).time_ms >= 0  # the new keys work
    assert emu2.stop() == 0


# ============================================================ sim-control


@pytest.mark.req("SR-029")
def test_sim_control_auth_and_replay(procs, tmp_path):
    emu = procs.emulator(model=model(tmp_path))
    procs.controller(emu, [])
    sim = emu.sim
    for role in (Role.CLINICIAN, Role.PATIENT):
        with pytest.raises(Refused) as e:
            sim.request(SimGroundTruth(tones_from=0), role=role)
        assert e.value.reason is NakReason.NOT_PERMITTED
    seq = 999
    wire = codec.encode(SimAdvance(duration_ms=1_000), seq, sim._signers[Role.SIM])
    first = send_frame(sim, wire, seq)
    assert isinstance(first, SimAdvanceAck)
    again = send_frame(sim, wire, seq)  # the very same bytes
    assert isinstance(again, Nak) and again.reason is NakReason.REPLAYED
    assert ground_truth(sim).time_ms == first.time_ms  # the replay did nothing


def test_sim_control_out_of_range_names_the_field(procs, tmp_path):
    emu = procs.emulator(model=model(tmp_path))
    procs.controller(emu, [])
    sim = emu.sim
    cases = [
        (fault(Fault.BATTERY_MV, value=70_000), "value"),
        (fault(Fault.CATHETER_LEAK, value=-5), "value"),
        (fault(Fault.LINK_DROP, WireLink.NONE, rate_ppm=10), "link"),
        (fault(Fault.LINK_CORRUPT, WireLink.HOST, rate_ppm=0), "rate_ppm"),
        (SimPowerCycle(off_ms=86_400_001), "off_ms"),
    ]
    for msg, field in cases:
        with pytest.raises(Refused) as e:
            sim.sim(msg)
        assert (e.value.reason, e.value.field) == (NakReason.OUT_OF_RANGE, field), msg
    assert ground_truth(sim).battery_mv == 3_600  # nothing was applied


def test_sim_advance_is_refused_in_realtime(procs, tmp_path):
    emu = procs.emulator("--clock", "realtime", "--speed", "10", split=False, model=model(tmp_path))
    sim = emu.sim
    with pytest.raises(Refused) as e:
        sim.sim(SimAdvance(duration_ms=1_000))
    assert e.value.reason is NakReason.WRONG_STATE
    t0 = ground_truth(sim).time_ms
    time.sleep(0.3)
    assert ground_truth(sim).time_ms > t0  # time moves by itself
    sim.sim(SimSetSpeed(speed_milli=0))
    t1 = ground_truth(sim).time_ms
    assert advance(sim, 1_000) == t1 + 1_000


def test_link_option_makes_a_symlink_to_the_host_port(procs, tmp_path):
    link = tmp_path / "pump-port"
    link.symlink_to("/nonexistent")  # a stale link from an earlier run is replaced
    emu = procs.emulator("--link", str(link), model=model(tmp_path))
    assert os.readlink(link) == emu.host
    assert (emu.state_dir / "port").read_text() == str(link) + "\n"
    sim = emu.client(port=str(link))  # the host client, through the link
    procs.controller(emu, [])
    assert isinstance(ground_truth(sim), SimGroundTruthAck)


def emulator_exit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "tools.cli", "emulator", "--state-dir", str(tmp_path / "sd"), "--exit-on-stdin-eof", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("stroke_nll = 500\n", "stroke_nll"),
        ('stroke_nl = "500"\n', "stroke_nl"),
        ("watchdog_window_ms = 0\n", "watchdog_window_ms"),
        ("battery_eri_mv = 70000\n", "battery_"),
        ("stroke_nl = = 1\n", "model.toml"),
    ],
)
def test_invalid_pump_model_exits_2_naming_the_key(tmp_path, content, named):
    m = tmp_path / "model.toml"
    m.write_text(content)
    r = emulator_exit(tmp_path, "--pump-model", str(m))
    assert r.returncode == 2, r.stderr
    assert named in r.stderr
    assert "READY" not in r.stdout


def test_link_over_a_regular_file_is_refused(tmp_path):
    f = tmp_path / "precious"
    f.write_text("keep me")
    r = emulator_exit(tmp_path, "--link", str(f))
    assert r.returncode == 2 and "not a symlink" in r.stderr
    assert f.read_text() == "keep me"


# ============================================================ occlusion


@pytest.mark.req("SR-026")
def test_occlusion_builds_pressure_stalls_and_vents_after_clear(procs, tmp_path):
    interval, stroke_nl, pa_per_nl, stall_pa, vent = 500, 500, 40, 200_000, 50
    m = model(
        tmp_path,
        min_stroke_interval_ms=interval,
        stroke_nl=stroke_nl,
        occlusion_pa_per_nl=pa_per_nl,
        stall_pressure_pa=stall_pa,
        vent_nl_per_s=vent,
        watchdog_window_ms=60_000,
    )
    emu = procs.emulator(model=m)
    procs.controller(emu, [run(1_000, 4, interval), run(20_000, 30, interval)])
    sim = emu.sim
    advance(sim, 10_000)
    assert ground_truth(sim).delivered_nl == 4 * stroke_nl
    sim.sim(fault(Fault.OCCLUSION))
    advance(sim, 20_000 - 10_000 - 1)
    fits = stall_pa // (stroke_nl * pa_per_nl)  # strokes the blocked catheter takes
    for k in range(1, fits + 3):
        advance(sim, interval if k > 1 else 1)
        gt = ground_truth(sim)
        made = min(k, fits)
        assert gt.strokes_total == 4 + made
        assert gt.outlet_pressure_pa == made * stroke_nl * pa_per_nl
        assert gt.delivered_nl == 4 * stroke_nl  # nothing gets past the occlusion
    assert gt.outlet_pressure_pa == stall_pa
    assert gt.motor is MotorState.STALLED
    advance(sim, 30_000)
    assert ground_truth(sim).strokes_total == 4 + fits  # stalled for good
    sim.sim(SimClearFault(fault=Fault.OCCLUSION))
    held = fits * stroke_nl
    vent_ms = held * 1000 // vent  # 5000 nL at 50 nL/s: 100 s
    advance(sim, vent_ms // 2)
    gt = ground_truth(sim)
    assert gt.delivered_nl == 4 * stroke_nl + held // 2
    advance(sim, vent_ms // 2 - 1)
    gt = ground_truth(sim)
    assert gt.delivered_nl < 4 * stroke_nl + held and gt.outlet_pressure_pa > 0
    advance(sim, 1)
    gt = ground_truth(sim)
    assert gt.delivered_nl == 4 * stroke_nl + held
    assert (gt.outlet_pressure_pa, gt.motor) == (0, MotorState.IDLE)
    assert FILL_NL - gt.reservoir_nl == gt.delivered_nl


# ============================================================ bench


def test_bench_emulator_prints_one_json_object():
    r = subprocess.run(
        [PYTHON, "-m", "tools.cli", "bench", "emulator", "--days", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # the whole of stdout is one JSON document
    assert isinstance(doc, dict)
    assert isinstance(doc["sim_per_wall"], int) and doc["sim_per_wall"] > 0
    assert isinstance(doc["events_handled"], int) and doc["events_handled"] > 0
    assert isinstance(doc["wall_s"], float | int)
    assert doc["strokes"] > 0 and doc["simulated_s"] == 2 * 86_400


def test_power_cycle_restarts_the_split_controller(procs, tmp_path):
    emu = procs.emulator(model=model(tmp_path))
    procs.controller(emu, [run(1_000, 5, 100), run(20_000, 5, 100)])
    sim = emu.sim
    advance(sim, 10_000)
    assert sim.sim(SimPowerCycle(off_ms=5_000)).boot_count == 2
    gt = ground_truth(sim)
    assert gt.time_ms == 15_000 and gt.controller_alive
    advance(sim, 20_000)
    gt = ground_truth(sim)
    assert gt.strokes_total == 10 and gt.tones_total == 0


def test_bug_client_sat_out_its_read_timeout_on_every_request(procs, tmp_path):
    """Bug: Client read the port with read(65536), which returns only when 64 KiB have
    come or the 50 ms port timeout has passed, so every request took at least 50 ms
    however fast the answer was (a stepped HIL test spent most of its time there). Now
    it waits for the first byte and takes what has arrived."""
    emu = procs.emulator(split=False, model=model(tmp_path))
    sim = emu.sim
    ground_truth(sim)
    t0 = time.monotonic()
    for _ in range(20):
        ground_truth(sim)
    assert time.monotonic() - t0 < 0.6  # was at least 20 x 50 ms


def test_bug_a_stopped_emulator_left_its_port_file_behind(procs, tmp_path):
    """Bug: the port file outlived the emulator. Pty numbers are reused, so a client
    reading the stale file could reach another emulator (a confusing AUTH_FAILED, and it
    would steal that emulator's bytes). Now the emulator removes its port files on exit;
    the CLI then says no emulator is there (exit 4)."""
    emu = procs.emulator(model=model(tmp_path))
    assert (emu.state_dir / "port").exists() and (emu.state_dir / "pump_port").exists()
    assert emu.stop() == 0
    assert not (emu.state_dir / "port").exists() and not (emu.state_dir / "pump_port").exists()
    got = subprocess.run(
        [PYTHON, "-m", "tools.cli", "--json", "status", "--state-dir", str(emu.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert got.returncode == 4, got.stderr


def test_a_version_1_frame_is_refused_by_a_nak_in_version_1_naming_the_version_spoken(procs, tmp_path):
    """Protocol version 2: an old host's frame is not silently dropped (it would time out
    with no hint why) but refused by a NAK it can read, naming the version spoken."""
    emu = procs.emulator(split=False, firmware=True, model=model(tmp_path))
    keys = emu.keys()
    signer = FrameSigner(Role.CLINICIAN, keys[Role.CLINICIAN], counter=time.time_ns() // 1000)
    body = bytearray(codec.encode_to_body(Status(), 0x1234, signer))
    body[0] = 1  # as a version-1 host would send it (the same header)
    body[-4:] = struct.pack("<I", zlib.crc32(bytes(body[:-4])))
    fd = os.open(emu.host, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        os.write(fd, wrap_body(bytes(body)))
        got = b""
        naks: list[bytes] = []  # (the pty also holds the boot's events, from before it was opened)
        deadline = time.monotonic() + 10
        while not naks and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                got += os.read(fd, 4096)
                naks = [b for b in (cobs.decode(x) for x in got.split(b"\x00")[:-1] if x) if b[1] == Nak.TYPE]
    finally:
        os.close(fd)
    (answer,) = naks
    assert answer[0] == 1  # in the sender's version
    assert zlib.crc32(answer) == CRC_RESIDUE
    frame = parse_body(in_version(answer, PROTOCOL_VERSION))  # read as this version would
    reply = codec.decode(frame)
    assert frame.seq == 0x1234 and isinstance(reply, Nak) and reply.reason is NakReason.UNSUPPORTED_VERSION
    assert reply.request_type == Status.TYPE and "speaks 2" in reply.detail
