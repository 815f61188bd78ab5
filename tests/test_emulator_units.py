"""Fast in-process tests of the emulator's parts: fluid path, pump hardware, scheduler,
link noise, pump model, state directory, capture, and the Rig with the scripted
controller in-process (every frame still through the codec).

Tests named test_bug_* are regressions for bugs these tests found (see the report of
issue 3); each failed before its fix.
"""

from __future__ import annotations

import json
import os
import random
import stat
import termios
import time
import tty

import pytest

from emulator.capture import Capture, Direction, Link, read_capture
from emulator.clock import RealtimeClock, Scheduler
from emulator.fluid import FluidPath, fg_for
from emulator.model import ModelError, PumpModel, load_model
from emulator.noise import NoisyChannel
from emulator.pump import PumpHardware, StrokeEvent
from emulator.rig import InProcessPort, PtyPort
from emulator.scripted import ScriptedController
from emulator.state import FIRMWARE_NVM, StateDir, StateError
from firmware.board.filenvm import NVM_FILE
from protocol import codec
from protocol.codes import BeepPattern, Fault, MotorState, NakReason, ResetCause, Role, RunOutcome, WakeReason
from protocol.codes import Link as WireLink
from protocol.framing import encode_frame
from protocol.messages import (
    HOST_MAX_BODY,
    Beep,
    HwInfo,
    HwInfoRequest,
    MotorRun,
    MotorStop,
    Nak,
    PowerOn,
    RunProgress,
    Sensors,
    SimAdvance,
    SimClearFault,
    SimGroundTruth,
    SimGroundTruthAck,
    SimInjectFault,
    SimPowerCycle,
    SimRefill,
    SimSetSpeed,
    Status,
    Time,
    WatchdogKick,
)
from tests.harness import RigHost, action, run, write_model

CONC = 5_000_000  # ng/mL, the default model's drug


def small_model(**kw) -> PumpModel:
    base = {
        "stroke_error_sd_ppm": 0,
        "min_stroke_interval_ms": 100,
        "watchdog_window_ms": 10_000,
    }
    return PumpModel(**{**base, **kw})


# ============================================================ fluid path


def fluid(**kw) -> FluidPath:
    args = {
        "capacity_nl": 20_000_000,
        "reservoir_nl": 1_000_000,
        "reservoir_fg": fg_for(1_000_000, CONC),
        "dead_volume_nl": 2_000,
        "catheter_fg": fg_for(2_000, CONC),
        "pa_per_nl": 40,
        "stall_pa": 200_000,
        "vent_nl_per_s": 50,
    }
    return FluidPath(**{**args, **kw})


def test_fluid_primed_catheter_delivers_what_leaves_the_reservoir():
    f = fluid()
    for _ in range(7):
        r = f.stroke(500)
        assert (r.moved_nl, r.delivered_nl, r.stalled) == (500, 500, False)
    assert f.delivered_nl == 3_500
    assert f.delivered_fg == fg_for(3_500, CONC)
    assert f.reservoir_nl == 1_000_000 - 3_500
    assert f.concentration_ng_per_ml == CONC


def test_fluid_old_drug_in_the_catheter_comes_out_first_after_a_refill():
    f = fluid()
    f.refill(withdraw_nl=1_000_000, add_nl=1_000_000, concentration_ng_per_ml=1_000_000, into_pocket=False)
    assert f.concentration_ng_per_ml == 1_000_000
    f.stroke(1_000)  # pushes half the old 2000 nL catheter content out
    assert f.delivered_fg == fg_for(1_000, CONC)
    f.stroke(2_000)  # the other old half, then 1000 nL of the new drug
    assert f.delivered_fg == fg_for(2_000, CONC) + fg_for(1_000, 1_000_000)
    assert f.delivered_nl == 3_000


def test_fluid_unprimed_catheter_delivers_nothing_until_filled():
    f = fluid(catheter_fg=0)
    f.stroke(1_000)
    assert f.delivered_nl == 1_000 and f.delivered_fg == 0  # saline/air pushed out, no drug
    f.stroke(1_500)
    assert f.delivered_fg == fg_for(500, CONC)


def test_fluid_occlusion_holds_volume_raises_pressure_and_stalls():
    f = fluid()
    f.occluded = True
    for k in range(1, 11):
        r = f.stroke(500)
        assert r.moved_nl == 500 and r.delivered_nl == 0 and not r.stalled
        assert f.pressure_pa == k * 500 * 40
    assert f.pressure_pa == 200_000
    r = f.stroke(500)  # would exceed the stall pressure: the motor cannot move
    assert r.stalled and r.moved_nl == 0
    assert f.reservoir_nl == 1_000_000 - 5_000 and f.delivered_nl == 0


def test_fluid_vents_linearly_and_exactly_after_clear():
    f = fluid()
    f.occluded = True
    for _ in range(10):
        f.stroke(500)
    f.settle(1_000)
    f.occluded = False
    f._settled_ms = 1_000
    assert f.vent_done_at(1_000) == 1_000 + 100_000  # 5000 nL at 50 nL/s
    f.settle(1_000 + 33_333)
    f.settle(1_000 + 40_000)  # in uneven steps: no nL lost to rounding
    assert f.delivered_nl == 2_000
    f.settle(1_000 + 99_999)
    assert f.delivered_nl == 4_999
    f.settle(1_000 + 100_000)
    assert f.delivered_nl == 5_000 and f.pending_nl == 0 and f.pressure_pa == 0
    assert f.delivered_fg == fg_for(5_000, CONC)


def test_fluid_leak_and_refill_limits():
    f = fluid()
    f.leak_ppm = 100_000
    f.stroke(1_000)
    assert f.leaked_nl == 100 and f.delivered_nl == 900
    f.leak_ppm = 0
    w = f.refill(withdraw_nl=10_000_000, add_nl=25_000_000, concentration_ng_per_ml=CONC, into_pocket=False)
    assert w == 999_000  # limited by what was there
    assert f.reservoir_nl == 20_000_000 and f.pocket_nl == 5_000_000  # overfill spills
    f.refill(withdraw_nl=0, add_nl=1_000, concentration_ng_per_ml=CONC, into_pocket=True)
    assert f.reservoir_nl == 20_000_000 and f.pocket_nl == 5_001_000


def test_fluid_empty_reservoir_moves_nothing():
    f = fluid(reservoir_nl=300, reservoir_fg=fg_for(300, CONC))
    assert f.stroke(500).moved_nl == 300
    assert f.stroke(500).moved_nl == 0
    assert f.reservoir_nl == 0 and f.concentration_ng_per_ml == 0


# ============================================================ scheduler


def test_scheduler_runs_in_time_order_ties_in_scheduling_order_and_skips_cancelled():
    s = Scheduler(100)
    seen = []
    s.at(300, lambda: seen.append("c"))
    s.at(200, lambda: seen.append("a"))
    s.at(200, lambda: seen.append("b"))
    s.at(250, lambda: seen.append("x")).cancel()
    s.at(50, lambda: seen.append("past"))  # clamped to now
    assert s.pending() == 4
    while s.run_next(1_000):
        pass
    assert seen == ["past", "a", "b", "c"]
    assert s.now_ms == 300 and s.events_run == 4
    assert s.next_due_ms() is None


def test_scheduler_does_not_run_past_the_limit():
    s = Scheduler()
    s.at(10, lambda: None)
    assert not s.run_next(9)
    assert s.now_ms == 0 and s.next_due_ms() == 10


def test_realtime_clock_maps_wall_to_sim_at_speed():
    c = RealtimeClock(sim_ms=5_000, wall_s=100.0, speed_milli=2_000)
    assert c.sim_at(101.5) == 8_000
    assert c.wall_at(8_000) == pytest.approx(101.5)


# ============================================================ link noise


def test_noise_off_passes_bytes_untouched():
    ch = NoisyChannel()
    data = bytes(range(256))
    assert ch.apply(data, 0) == data
    assert not ch.active


@pytest.mark.parametrize("fault", [Fault.LINK_DROP, Fault.LINK_CORRUPT, Fault.LINK_DUPLICATE])
def test_noise_is_seeded_and_at_its_rate(fault):
    data = bytes(random.Random(1).randbytes(20_000))

    def noisy(seed):
        ch = NoisyChannel()
        ch.set(fault, 100_000, 0, seed)
        return ch.apply(data, 0), ch.counts[fault.name.lower()]

    a, n = noisy(7)
    assert noisy(7) == (a, n)
    assert noisy(8)[0] != a
    assert 1_500 < n < 2_500  # 10 % of 20000 bytes
    if fault is Fault.LINK_DROP:
        assert len(a) == len(data) - n
    elif fault is Fault.LINK_DUPLICATE:
        assert len(a) == len(data) + n
    else:
        assert len(a) == len(data)
        assert sum(bin(x ^ y).count("1") for x, y in zip(a, data, strict=True)) == n  # one bit each


def test_noise_delay_holds_bytes_in_order_until_due():
    ch = NoisyChannel()
    ch.set(Fault.LINK_DELAY, 1_000_000, 50, seed=1)
    assert ch.apply(b"abc", 100) == b""
    ch.clear(Fault.LINK_DELAY)
    assert ch.apply(b"def", 120) == b"def"  # not due: the held bytes stay held
    assert ch.next_release_ms() == 150
    assert ch.release(149) == b""
    assert ch.release(150) == b"abc"
    assert not ch.active


# ============================================================ pump model


def test_model_defaults_are_valid_and_files_override(tmp_path):
    assert load_model(None) == PumpModel()
    m = load_model(write_model(tmp_path, stroke_nl=250, serial="X-1"))
    assert (m.stroke_nl, m.serial, m.watchdog_window_ms) == (250, "X-1", PumpModel().watchdog_window_ms)
    p = tmp_path / "table.toml"
    p.write_text("[pump]\nwatchdog_window_ms = 5000\n")
    assert load_model(p).watchdog_window_ms == 5_000


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"stroke_nll": 5}, "stroke_nll"),
        ({"stroke_nl": "500"}, "stroke_nl"),
        ({"stroke_nl": True}, "stroke_nl"),
        ({"stroke_nl": 1.5}, "stroke_nl"),
        ({"watchdog_window_ms": 0}, "watchdog_window_ms"),
        ({"catheter_dead_volume_nl": -1}, "catheter_dead_volume_nl"),
        ({"initial_fill_ul": 30_000}, "initial_fill_ul"),
        ({"max_strokes_per_run": 70_000}, "max_strokes_per_run"),
        ({"serial": "X" * 17}, "serial"),
        ({"battery_eri_mv": 3_700}, "battery_"),
    ],
)
def test_model_refuses_bad_keys_naming_them(tmp_path, keys, named):
    with pytest.raises(ModelError, match=named):
        load_model(write_model(tmp_path, **keys))


def test_model_file_errors_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        load_model(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("stroke_nl = = 3\n")
    with pytest.raises(ModelError, match=r"bad\.toml"):
        load_model(bad)


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"battery_full_mv": 90_000, "battery_eri_mv": 80_000, "battery_eos_mv": 70_000}, "battery_full_mv"),
        ({"watchdog_window_ms": 5_000_000_000}, "watchdog_window_ms"),
        ({"stroke_nl": 5_000_000_000}, "stroke_nl"),
        ({"reservoir_capacity_ul": 5_000_000, "initial_fill_ul": 0}, "reservoir_capacity_ul"),
        ({"battery_nv_per_stroke": -1}, "battery_nv_per_stroke"),
    ],
)
def test_bug_model_accepted_values_the_protocol_cannot_carry(keys, named):
    """Bug: the model took figures that do not fit their wire fields (HW_INFO's u16/u32,
    ground truth's u32 reservoir), so the emulator crashed with EncodeError when the
    controller asked for HW_INFO or the host for ground truth; a negative drain charged
    the battery. Now refused at load, naming the key."""
    with pytest.raises(ModelError, match=named):
        PumpModel(**keys)


# ============================================================ state directory


def test_state_dir_keys_are_owner_only_and_reused(tmp_path):
    sd = StateDir(tmp_path / "sd")
    k1 = sd.keys()
    assert set(k1) == {Role.CLINICIAN, Role.PATIENT, Role.SIM, Role.PUMP}
    assert stat.S_IMODE(os.stat(sd.keys_file).st_mode) == 0o600
    assert StateDir(tmp_path / "sd").keys() == k1


def test_state_dir_refuses_keys_readable_by_others(tmp_path):
    sd = StateDir(tmp_path / "sd")
    sd.keys()
    sd.keys_file.chmod(0o644)
    with pytest.raises(StateError, match="readable by others"):
        sd.keys()
    sd.keys_file.chmod(0o600)
    assert set(sd.keys()) == {Role.CLINICIAN, Role.PATIENT, Role.SIM, Role.PUMP}


def test_state_dir_never_regenerates_keys_the_firmware_already_holds(tmp_path):
    """A deleted keys.json was silently regenerated while the firmware kept the old keys
    in its NVM: every command then failed authentication (and, then, counted toward a
    lockout), with no hint why. Now it is refused, saying how to re-provision."""
    sd = StateDir(tmp_path / "sd")
    sd.keys()
    (sd.path / FIRMWARE_NVM).write_bytes(b"\x00" * 64)
    sd.keys_file.unlink()
    with pytest.raises(StateError) as e:
        sd.keys()
    assert "keys.json is missing" in str(e.value) and f"moving {FIRMWARE_NVM} away" in str(e.value)
    assert not sd.keys_file.exists()  # nothing regenerated
    (sd.path / FIRMWARE_NVM).unlink()  # re-provisioned: a new pump
    assert set(sd.keys()) == {Role.CLINICIAN, Role.PATIENT, Role.SIM, Role.PUMP}


def test_the_emulator_and_the_firmware_name_the_same_nvm_file():
    assert FIRMWARE_NVM == NVM_FILE


def a_pump_state(tmp_path) -> dict:
    """A real pump's state (emulator/pump.py to_state, rig.state) after some delivery."""
    from tools.inprocess import LocalPump

    pump = LocalPump(PumpModel(stroke_error_sd_ppm=0))
    try:
        return json.loads(json.dumps(pump.rig.state()))
    finally:
        pump.close()


def test_state_dir_pump_round_trip_and_refusals(tmp_path):
    sd = StateDir(tmp_path / "sd")
    assert sd.load_pump() is None
    state = a_pump_state(tmp_path)
    sd.save_pump(state)
    assert sd.load_pump() == state
    doc = json.loads(sd.pump_file.read_text())
    assert doc["format"] == 2 and len(doc["checksum"]) == 64
    sd.pump_file.write_text("{not json")
    with pytest.raises(StateError, match="unreadable"):
        sd.load_pump()
    sd.pump_file.write_text(json.dumps({**state, "format": 1}))
    with pytest.raises(StateError, match="format 2"):
        sd.load_pump()


def resave(sd: StateDir, **changes) -> None:
    """pump.json with changes and a checksum that matches them (a bad writer, not damage)."""
    doc = json.loads(sd.pump_file.read_text())
    body = {k: v for k, v in doc.items() if k not in ("format", "checksum")}
    body.update(changes)
    for k in [k for k, v in changes.items() if v is ...]:
        del body[k]
    sd.save_pump(body)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"reservoir_nl": -1}, "reservoir_nl = -1 is outside 0.."),
        ({"boot_count": "3"}, "boot_count must be a whole number"),
        ({"time_ms": 1 << 64}, "time_ms = 18446744073709551616 is outside"),
        ({"occluded": 1}, "occluded must be true or false"),
        ({"catheter": [[0, 5]]}, "catheter[0] must be [nL > 0, fg >= 0]"),
        ({"forced_mv": 70_000}, "forced_mv must be null or 0..65535"),
        ({"colour": 1}, "unknown field 'colour'"),
        ({"odometer_strokes": ...}, "field 'odometer_strokes' is missing"),
    ],
)
def test_state_dir_refuses_a_pump_json_field_out_of_range_naming_it(tmp_path, changes, says):
    """pump.json was partly validated: a negative reservoir loaded and killed the emulator
    later, a string boot count gave a TypeError, a huge time overflowed POWER_ON."""
    sd = StateDir(tmp_path / "sd")
    sd.save_pump(a_pump_state(tmp_path))
    resave(sd, **changes)
    with pytest.raises(StateError) as e:
        sd.load_pump()
    assert says in str(e.value) and "pump.json" in str(e.value)


def test_state_dir_refuses_a_damaged_pump_json_and_a_missing_one_beside_a_used_firmware(tmp_path):
    """A flipped digit changed physical state silently; a deleted pump.json gave a
    factory-fresh pump under a firmware that still said running."""
    sd = StateDir(tmp_path / "sd")
    sd.save_pump(a_pump_state(tmp_path))
    text = sd.pump_file.read_text()
    sd.pump_file.write_text(text.replace('"boot_count": 1', '"boot_count": 7'))
    with pytest.raises(StateError, match="damaged"):
        sd.load_pump()
    sd.pump_file.unlink()
    assert sd.load_pump() is None  # no firmware has run here: a new pump
    (sd.path / FIRMWARE_NVM).write_bytes(b"\x00" * 64)
    with pytest.raises(StateError, match=r"pump\.json is missing, but the firmware has run"):
        sd.load_pump()


def test_state_dir_malformed_keys_and_port_files(tmp_path):
    sd = StateDir(tmp_path / "sd")
    sd.keys_file.write_text(json.dumps({"clinician": "00"}))
    sd.keys_file.chmod(0o600)
    with pytest.raises(StateError, match="malformed"):
        sd.keys()
    sd.write_ports("/dev/pts/98", "/dev/pts/99")
    assert (sd.path / "pump_port").read_text() == "/dev/pts/99\n"
    sd.write_ports("/dev/pts/97", None)
    assert sd.host_port() == "/dev/pts/97" and not (sd.path / "pump_port").exists()
    assert not list(sd.path.glob(".*.tmp"))


# ============================================================ capture


def test_capture_round_trip_with_sim_time_beyond_32_bits(tmp_path):
    path = tmp_path / "c.pcap"
    cap = Capture(path, wall_time=False)
    late = 50 * 86_400_000  # 50 days: more than 2**32 ms
    cap.frame(Link.HOST, Direction.HOST_TO_PUMP, 1_234, b"\x01\x02")
    cap.frame(Link.PUMP, Direction.PUMP_TO_CONTROLLER, late, b"\x03")
    cap.close()
    recs = read_capture(path)
    assert [(r["link"], r["direction"], r["sim_ms"], r["body"], r["wall_us"]) for r in recs] == [
        (Link.HOST, Direction.HOST_TO_PUMP, 1_234, b"\x01\x02", 0),
        (Link.PUMP, Direction.PUMP_TO_CONTROLLER, late, b"\x03", 0),
    ]
    (tmp_path / "not.pcap").write_bytes(b"\x00" * 24)
    with pytest.raises(ValueError, match="not a Thecal capture"):
        read_capture(tmp_path / "not.pcap")


# ============================================================ pump hardware


class Bench:
    """PumpHardware with a hand-driven controller: messages in, the outbox read back."""

    def __init__(self, model: PumpModel, seed: int = 0) -> None:
        self.hw = PumpHardware(model, seed=seed)
        self.hw.power_on_controller(ResetCause.POWER_UP)
        self.sent = []
        self.take()

    def take(self):
        out, self.hw.outbox = self.hw.outbox, []
        self.sent += out
        return out

    def until(self, t_ms: int) -> None:
        while self.hw.run_due(t_ms):
            self.take()
        self.hw.advance_idle(t_ms)
        self.take()


def test_pump_refuses_runs_beyond_hardware_limits():
    b = Bench(small_model(max_strokes_per_run=64, min_stroke_interval_ms=1_800))
    for strokes, interval in ((0, 2_000), (65, 2_000), (10, 1_799)):
        b.hw.handle(MotorRun(run_id=9, strokes=strokes, interval_ms=interval))
        (p,) = b.take()
        assert isinstance(p, RunProgress) and p.outcome is RunOutcome.REFUSED and p.strokes_made == 0
    b.until(100_000)
    assert b.hw.odometer == 0


def test_pump_run_is_bounded_and_reports_each_stroke():
    b = Bench(small_model(watchdog_window_ms=1_000_000))
    b.hw.handle(MotorRun(run_id=3, strokes=5, interval_ms=1_000))
    assert b.hw.motor_state is MotorState.RUNNING
    b.until(60_000)
    prog = [m for m in b.sent if isinstance(m, RunProgress)]
    assert [(p.strokes_made, p.outcome, p.time_ms) for p in prog] == [
        (1, RunOutcome.IN_PROGRESS, 0),
        (2, RunOutcome.IN_PROGRESS, 1_000),
        (3, RunOutcome.IN_PROGRESS, 2_000),
        (4, RunOutcome.IN_PROGRESS, 3_000),
        (5, RunOutcome.COMPLETED, 4_000),
    ]
    assert b.hw.odometer == 5 and b.hw.fluid.delivered_nl == 2_500
    assert b.hw.motor_state is MotorState.IDLE


def test_pump_stop_and_replacing_run():
    b = Bench(small_model(watchdog_window_ms=1_000_000))
    b.hw.handle(MotorRun(run_id=1, strokes=10, interval_ms=1_000))
    b.until(2_500)
    b.hw.handle(MotorRun(run_id=2, strokes=2, interval_ms=1_000))
    b.until(10_000)
    b.hw.handle(MotorRun(run_id=3, strokes=10, interval_ms=1_000))
    b.until(10_500)
    b.hw.handle(MotorStop(run_id=0xFFFF))
    b.until(20_000)
    ends = [(p.run_id, p.strokes_made, p.outcome) for p in b.sent if isinstance(p, RunProgress) and p.outcome]
    assert ends == [(1, 3, RunOutcome.STOPPED), (2, 2, RunOutcome.COMPLETED), (3, 1, RunOutcome.STOPPED)]
    assert b.hw.odometer == 6


def test_watchdog_stops_the_run_no_stroke_at_or_after_the_window():
    # Kicked at 0, then silent. Strokes every 2000 ms from 0: the one due at the very
    # instant the window ends (60000) must not happen.
    b = Bench(small_model(watchdog_window_ms=60_000, max_strokes_per_run=64))
    b.hw.handle(WatchdogKick())
    b.hw.handle(MotorRun(run_id=1, strokes=64, interval_ms=2_000))
    b.until(200_000)
    assert b.hw.odometer == 30  # strokes at 0, 2000, ..., 58000
    assert b.hw.motor_state is MotorState.IDLE and b.hw.run is None
    tones = [(t.time_ms, t.pattern) for t in b.hw.beeper.history]
    assert tones[0] == (60_000, BeepPattern.HARDWARE_ALARM)
    # The watchdog resets the controller (POWER_ON, cause WATCHDOG) and keeps guarding it.
    boots = [m.reset_cause for m in b.sent if isinstance(m, PowerOn)]
    assert boots[:2] == [ResetCause.POWER_UP, ResetCause.WATCHDOG]
    assert [t for t, _ in tones] == [60_000, 120_000, 180_000]
    assert not b.hw.controller_alive


def test_watchdog_kicks_keep_it_quiet():
    b = Bench(small_model(watchdog_window_ms=10_000))
    for t in range(0, 100_000, 9_000):
        b.until(t)
        b.hw.handle(WatchdogKick())
        assert b.hw.controller_alive
    assert b.hw.beeper.total == 0


def test_pump_stall_fault_and_beeps():
    b = Bench(small_model(watchdog_window_ms=1_000_000))
    b.hw.inject(Fault.MOTOR_STALL, 0)
    b.hw.handle(MotorRun(run_id=1, strokes=3, interval_ms=1_000))
    b.until(5_000)
    assert b.hw.odometer == 0 and b.hw.motor_state is MotorState.STALLED
    assert any(isinstance(m, Sensors) and m.motor_stalled for m in b.sent)
    b.hw.clear(Fault.MOTOR_STALL)
    assert b.hw.motor_state is MotorState.IDLE
    b.hw.handle(Beep(pattern=BeepPattern.TWO_TONE, repeat=3, repeat_interval_ms=500))
    b.until(10_000)
    assert [(t.time_ms, t.pattern) for t in b.hw.beeper.history] == [
        (5_000, BeepPattern.TWO_TONE),
        (5_500, BeepPattern.TWO_TONE),
        (6_000, BeepPattern.TWO_TONE),
    ]


def test_stroke_error_is_seeded_and_near_nominal():
    def volumes(seed):
        hw = PumpHardware(PumpModel(stroke_error_sd_ppm=20_000), seed=seed)
        return [hw.stroke_volume_nl() for _ in range(2_000)]

    a = volumes(1)
    assert volumes(1) == a and volumes(2) != a
    mean = sum(a) / len(a)
    sd = (sum((v - mean) ** 2 for v in a) / len(a)) ** 0.5
    assert 499 < mean < 501
    assert 8 < sd < 12  # 2 % of 500 nL
    assert PumpHardware(PumpModel(stroke_error_sd_ppm=0, stroke_bias_ppm=-10_000)).stroke_volume_nl() == 495


def test_battery_drains_with_strokes_and_time():
    b = Bench(small_model(battery_nv_per_stroke=1_000_000, battery_nv_per_hour=2_000_000, watchdog_window_ms=10**8))
    b.hw.handle(MotorRun(run_id=1, strokes=10, interval_ms=1_000))
    b.until(3_600_000)
    assert b.hw.battery.mv == 3_600 - 10 - 2


# ============================================================ the rig, in-process


def test_rig_scripted_runs_deliver_exactly_what_was_commanded():
    h = RigHost(small_model(stroke_nl=250), [run(1_000, 10, 100), run(5_000, 64, 100), run(20_000, 7, 250)])
    assert h.advance(60_000) == 60_000
    gt = h.truth()
    assert gt.strokes_total == 81
    assert gt.delivered_nl == 81 * 250
    assert gt.delivered_ng == 81 * 250 * CONC // 10**6
    assert gt.reservoir_nl == PumpModel().initial_fill_ul * 1_000 - 81 * 250
    assert gt.motor is MotorState.IDLE and gt.controller_alive
    assert h.controller.strokes_made == 81
    assert all(r.outcome is RunOutcome.COMPLETED for r in h.controller.runs.values())


def test_rig_same_seed_same_truth_different_seed_different():
    def truth(seed):
        h = RigHost(PumpModel(min_stroke_interval_ms=100), [run(0, 60, 100)], seed=seed)
        h.advance(60_000)
        return h.truth()

    a = truth(4)
    assert truth(4) == a
    assert truth(5).delivered_nl != a.delivered_nl


def test_bug_controller_reset_by_the_watchdog_was_reset_again_and_again():
    """Bug: exchange() took a SLEEP_UNTIL handled *before* the pump's answers in the same
    batch were written (HW_INFO after the controller's HW_INFO_REQUEST, KICK, SLEEP_UNTIL)
    as the idle report for them, so the controller's reply to HW_INFO was read one event
    late. A controller restarted by the watchdog then kicked on its default 20 s rhythm
    and a 10 s watchdog reset it every window, for ever. Now busy is set when bytes are
    written: the in-process controller (fresh after the reset, so no longer silenced)
    keeps the watchdog quiet after the one expiry."""
    h = RigHost(small_model(min_stroke_interval_ms=500), [run(1_000, 60, 500), action(6_000, "silence")])
    h.advance(60_000)
    gt = h.truth()
    assert 20 <= gt.strokes_total < 60
    assert gt.motor is MotorState.IDLE
    assert [t.pattern for t in gt.tones] == [BeepPattern.HARDWARE_ALARM]
    assert 6_000 - 3_000 + 10_000 <= gt.tones[0].time_ms <= 6_000 + 10_000
    assert gt.controller_alive and h.controller.boots == [int(ResetCause.WATCHDOG)]


def test_rig_state_round_trip_continues():
    h = RigHost(small_model(), [run(1_000, 20, 200), action(3_000, "beep")])
    h.advance(30_000)
    before = h.truth()
    used, seq = h.frame(SimGroundTruth(tones_from=0))
    assert isinstance(h.send(used, seq), SimGroundTruthAck)
    state = json.loads(json.dumps(h.rig.state()))  # as the state directory stores it
    h2 = RigHost(small_model(), [], state=state, keys=h.keys)
    after = h2.truth()
    fields = ("time_ms", "delivered_nl", "delivered_ng", "reservoir_nl", "strokes_total", "tones_total")
    assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
    assert (after.strokes_total, after.tones_total) == (20, 1)
    assert h2.hw.boot_count == h.hw.boot_count + 1
    # The replay window survives the restart: a frame the old rig accepted is refused.
    assert h2.send(used, seq).reason is NakReason.REPLAYED
    assert h2.advance(1_000) == 31_000


def test_bug_occlusion_was_lost_on_restart_but_its_pressure_kept():
    """Bug: pump.json kept the volume held behind an occlusion (and its pressure) but not
    the occlusion itself, nor the stalled motor or the other injected hardware faults:
    after an emulator restart the still-blocked catheter vented into the patient. The
    conditions are physical and now persist; link noise (the line's) does not."""
    m = small_model(min_stroke_interval_ms=500)
    h = RigHost(m, [run(1_000, 20, 500)])
    h.sim(SimInjectFault(fault=Fault.OCCLUSION, link=WireLink.NONE, value=0, rate_ppm=0, seed=0))
    h.sim(SimInjectFault(fault=Fault.CATHETER_LEAK, link=WireLink.NONE, value=1_000, rate_ppm=0, seed=0))
    h.sim(SimInjectFault(fault=Fault.BATTERY_MV, link=WireLink.NONE, value=3_000, rate_ppm=0, seed=0))
    h.sim(SimInjectFault(fault=Fault.LINK_DROP, link=WireLink.BOTH, value=0, rate_ppm=1, seed=0))
    h.advance(30_000)
    before = h.truth()
    assert (before.motor, before.outlet_pressure_pa, before.strokes_total) == (MotorState.STALLED, 200_000, 10)
    h2 = RigHost(m, [], state=json.loads(json.dumps(h.rig.state())), keys=h.keys)
    after = h2.truth()
    fields = ("time_ms", "delivered_nl", "reservoir_nl", "outlet_pressure_pa", "motor", "strokes_total", "battery_mv")
    assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
    assert not any(ch.settings for ch in h2.rig.noise.values())
    h2.advance(300_000)
    assert h2.truth().delivered_nl == before.delivered_nl  # still blocked: nothing vents
    h2.sim(SimClearFault(fault=Fault.OCCLUSION))
    h2.advance(100_000)  # 5000 nL at 50 nL/s
    gt = h2.truth()
    assert gt.delivered_nl == before.delivered_nl + 5_000 and gt.motor is MotorState.IDLE
    assert gt.battery_mv == 3_000


def test_rig_sim_auth():
    h = RigHost(small_model())
    for role in (Role.CLINICIAN, Role.PATIENT):
        nak = h.request(SimGroundTruth(tones_from=0), role)
        assert isinstance(nak, Nak) and nak.reason is NakReason.NOT_PERMITTED
    assert h.request(SimGroundTruth(tones_from=0), None).reason is NakReason.AUTH_FAILED
    wire, seq = h.frame(SimAdvance(duration_ms=1_000))
    assert h.send(wire, seq).time_ms == 1_000
    nak = h.send(wire, seq)
    assert nak.reason is NakReason.REPLAYED
    assert h.truth().time_ms == 1_000  # the replay did nothing
    assert h.rig.host_naks == 4


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (SimInjectFault(fault=Fault.BATTERY_MV, link=WireLink.NONE, value=70_000, rate_ppm=0, seed=0), "value"),
        (SimInjectFault(fault=Fault.BATTERY_MV, link=WireLink.NONE, value=-1, rate_ppm=0, seed=0), "value"),
        (SimInjectFault(fault=Fault.STROKE_ERROR, link=WireLink.NONE, value=-600_000, rate_ppm=0, seed=0), "value"),
        (SimInjectFault(fault=Fault.CATHETER_LEAK, link=WireLink.NONE, value=-1, rate_ppm=0, seed=0), "value"),
        (SimInjectFault(fault=Fault.LINK_DROP, link=WireLink.NONE, value=0, rate_ppm=10, seed=0), "link"),
        (SimInjectFault(fault=Fault.LINK_DROP, link=WireLink.HOST, value=0, rate_ppm=0, seed=0), "rate_ppm"),
        (SimInjectFault(fault=Fault.LINK_DROP, link=WireLink.HOST, value=0, rate_ppm=1_000_001, seed=0), "rate_ppm"),
        (SimInjectFault(fault=Fault.LINK_DELAY, link=WireLink.PUMP, value=0, rate_ppm=10, seed=0), "value"),
        (SimAdvance(duration_ms=401 * 86_400_000), "duration_ms"),
        (SimSetSpeed(speed_milli=1_000_000_001), "speed_milli"),
        (SimPowerCycle(off_ms=86_400_001), "off_ms"),
        (SimRefill(withdraw_nl=0, add_nl=40_000_001, concentration_ng_per_ml=1, into_pocket=False), "add_nl"),
    ],
)
def test_rig_sim_out_of_range_names_the_field(msg, field):
    h = RigHost(small_model())
    nak = h.request(msg)
    assert isinstance(nak, Nak), nak
    assert (nak.reason, nak.field) == (NakReason.OUT_OF_RANGE, field)
    assert h.hw.battery.forced_mv is None and h.hw.stroke_fault_ppm == 0 and h.hw.fluid.leak_ppm == 0


def test_rig_advance_refused_in_realtime():
    h = RigHost(small_model())
    h.sim(SimSetSpeed(speed_milli=1_000))
    assert h.request(SimAdvance(duration_ms=1)).reason is NakReason.WRONG_STATE
    h.sim(SimSetSpeed(speed_milli=0))
    assert h.advance(5) == 5


def test_rig_relays_host_requests_to_the_controller():
    h = RigHost(small_model())
    nak = h.request(Status(), Role.CLINICIAN)
    assert isinstance(nak, Nak) and nak.reason is NakReason.BUSY  # the scripted controller's answer


def test_rig_occlusion_stall_and_vent():
    h = RigHost(small_model(min_stroke_interval_ms=500), [run(1_000, 4, 500), run(20_000, 30, 500)])
    h.advance(10_000)
    assert h.truth().delivered_nl == 2_000
    h.sim(SimInjectFault(fault=Fault.OCCLUSION, link=WireLink.NONE, value=0, rate_ppm=0, seed=0))
    for k in range(1, 11):
        h.advance(20_000 + (k - 1) * 500 - h.hw.now_ms)
        gt = h.truth()
        assert (gt.strokes_total, gt.outlet_pressure_pa, gt.delivered_nl) == (4 + k, k * 20_000, 2_000)
    h.advance(30_000)
    gt = h.truth()
    assert (gt.strokes_total, gt.outlet_pressure_pa, gt.motor) == (14, 200_000, MotorState.STALLED)
    assert gt.delivered_nl == 2_000
    assert any(isinstance(s, Sensors) and s.motor_stalled for s in h.controller.sensors)
    h.sim(SimClearFault(fault=Fault.OCCLUSION))
    h.advance(40_000)
    assert h.truth().delivered_nl == 2_000 + 2_000
    h.advance(59_999)
    assert h.truth().delivered_nl == 2_000 + 4_999
    h.advance(1)
    gt = h.truth()
    assert (gt.delivered_nl, gt.outlet_pressure_pa, gt.motor) == (7_000, 0, MotorState.IDLE)


def test_stroke_tap_sees_every_stroke_with_its_volumes_and_drug():
    """The supported way to watch the mechanism: each stroke once, with what left the
    reservoir and the tip (old drug first after a refill at another concentration, held
    behind an occlusion), a stall flagged; a removed tap is called no more."""
    new_conc = 1_000_000
    m = small_model(min_stroke_interval_ms=500, catheter_dead_volume_nl=1_000, watchdog_window_ms=100_000)
    runs = [run(1_000, 3, 500), run(10_000, 4, 500), run(20_000, 2, 500), run(25_000, 2, 500), run(40_000, 3, 500)]
    h = RigHost(m, runs)
    seen: list[StrokeEvent] = []
    h.hw.add_stroke_tap(seen.append)
    h.advance(5_000)
    assert [(e.time_ms, e.moved_nl, e.delivered_nl, e.delivered_fg, e.odometer_strokes) for e in seen] == [
        (1_000, 500, 500, fg_for(500, CONC), 1),
        (1_500, 500, 500, fg_for(500, CONC), 2),
        (2_000, 500, 500, fg_for(500, CONC), 3),
    ]
    assert all(e.made and not e.stalled and e.reservoir_fg_per_nl == CONC for e in seen)
    assert len({e.run_id for e in seen}) == 1
    gt = h.truth()
    assert (seen[-1].total_delivered_nl, seen[-1].total_delivered_fg // 10**6) == (gt.delivered_nl, gt.delivered_ng)

    # A new concentration: the 1000 nL of old drug in the catheter leave the tip first.
    h.sim(SimRefill(withdraw_nl=20_000_000, add_nl=2_000_000, concentration_ng_per_ml=new_conc, into_pocket=False))
    h.advance(10_000)
    bridged = seen[3:]
    assert [e.delivered_fg for e in bridged] == [fg_for(500, CONC)] * 2 + [fg_for(500, new_conc)] * 2
    assert all(e.reservoir_fg_per_nl == new_conc and e.delivered_nl == 500 for e in bridged)
    assert bridged[-1].total_delivered_fg == fg_for(2_500, CONC) + fg_for(1_000, new_conc)

    # Blocked: nothing leaves the tip, the stroke's volume and drug are held.
    h.sim(SimInjectFault(fault=Fault.OCCLUSION, link=WireLink.NONE, value=0, rate_ppm=0, seed=0))
    h.advance(7_000)
    held = seen[7:]
    assert [(e.moved_nl, e.delivered_nl, e.held_nl, e.held_fg, e.pending_nl) for e in held] == [
        (500, 0, 500, fg_for(500, new_conc), 500),
        (500, 0, 500, fg_for(500, new_conc), 1_000),
    ]
    assert held[-1].total_delivered_nl == 3_500

    # A stalled motor: the attempt is seen, flagged, and moves nothing.
    h.sim(SimInjectFault(fault=Fault.MOTOR_STALL, link=WireLink.NONE, value=0, rate_ppm=0, seed=0))
    h.advance(8_000)
    (stall,) = seen[9:]
    assert stall.stalled and not stall.made and stall.moved_nl == stall.held_nl == 0
    assert stall.odometer_strokes == 9 == h.truth().strokes_total

    h.hw.remove_stroke_tap(seen.append)
    h.sim(SimClearFault(fault=Fault.MOTOR_STALL))
    h.sim(SimClearFault(fault=Fault.OCCLUSION))
    h.advance(20_000)
    assert h.truth().strokes_total == 12
    assert len(seen) == 10
    with pytest.raises(ValueError):
        h.hw.remove_stroke_tap(seen.append)


def test_rig_power_cycle_restarts_the_controller():
    h = RigHost(small_model())
    boots = h.hw.boot_count
    ack = h.sim(SimPowerCycle(off_ms=5_000))
    assert ack.boot_count == boots + 1
    assert h.controller.boots == [int(ResetCause.POWER_CYCLE)]
    assert h.truth().time_ms == 5_000 and h.truth().controller_alive


NOISE = (Fault.LINK_CORRUPT, Fault.LINK_DROP, Fault.LINK_DUPLICATE, Fault.LINK_DELAY)


@pytest.mark.parametrize("seed", range(4))
def test_rig_noise_on_the_pump_link_is_survived(seed):
    # Whatever the noise did to the first run, the one scheduled after the clear (and
    # after anything the first could still be doing) is made exactly, with no resets.
    h = RigHost(small_model(min_stroke_interval_ms=500), [run(1_000, 40, 500), run(100_000, 10, 500)], seed=seed)
    for fault in NOISE:
        h.sim(SimInjectFault(fault=fault, link=WireLink.PUMP, value=300, rate_ppm=20_000, seed=seed))
    h.advance(50_000)
    assert sum(sum(ch.counts.values()) for ch in h.rig.noise.values()) > 0
    for fault in NOISE:
        h.sim(SimClearFault(fault=fault))
    h.advance(49_000)
    before = h.truth()
    h.advance(40_000)
    gt = h.truth()
    assert gt.strokes_total - before.strokes_total == 10
    assert gt.controller_alive and gt.tones_total == before.tones_total


def test_bug_delayed_bytes_went_through_the_noise_again():
    """Bug: bytes held back by LINK_DELAY were fed through the noise channel a second
    time when released (pump link and host link), so they could be delayed, dropped or
    corrupted again, and a 100 % delay held them for ever."""
    h = RigHost(small_model())
    wall = [0]
    h.rig.wall_ms = lambda: wall[0]  # the host link's noise runs on wall time

    def at(ms):
        wall[0] = ms
        h.rig.release_host_noise()

    inject, seq = h.frame(SimInjectFault(fault=Fault.LINK_DELAY, link=WireLink.BOTH, value=200, rate_ppm=10**6, seed=1))
    assert h.send(inject, seq) is None  # its answer is held on the way out
    at(200)
    assert h.responses.pop(seq).fault is Fault.LINK_DELAY
    wire, seq = h.frame(SimGroundTruth(tones_from=0))
    assert h.send(wire, seq) is None  # held on the way in
    at(400)  # released: served, and its answer held on the way out
    assert seq not in h.responses
    at(600)
    assert isinstance(h.responses.pop(seq), SimGroundTruthAck)
    h.rig.noise[(WireLink.HOST, "in")].clear(Fault.LINK_DELAY)
    h.rig.noise[(WireLink.HOST, "out")].clear(Fault.LINK_DELAY)
    # On the pump link every write is held, released 200 ms later, and must then arrive.
    kicks = h.controller.last_kick_ms
    h.advance(30_000)
    assert h.controller.last_kick_ms > kicks
    assert h.truth().controller_alive


# ------------------------------------------------------------ garbage on the host link


def test_rig_survives_host_garbage_and_serves_the_next_frame():
    h = RigHost(small_model())
    rnd = random.Random(5)
    good, _ = h.frame(SimGroundTruth(tones_from=0))
    junk = [
        rnd.randbytes(5_000),
        good[: len(good) // 2],  # truncated
        b"\x00" + good[1:-3] + b"\x00",  # truncated at the end
        bytes([0x55]) * 30_000 + b"\x00",  # oversize, no delimiter for long
        b"\x00" * 100,
    ]
    for _ in range(200):
        i = rnd.randrange(1, len(good) - 1)
        junk.append(good[:i] + bytes([good[i] ^ (1 << rnd.randrange(8))]) + good[i + 1 :])  # one bit flipped
    for j in junk:
        h.send(j)
    assert h.truth().time_ms == 0


def test_bug_oversize_host_frame_crashed_the_relay():
    """Bug: an intact host frame longer than a relay can carry (payload over 1024 bytes,
    up to the framing's MAX_PAYLOAD) went into HOST_RX and the emulator died with EncodeError.
    Now it is answered NAK BAD_LENGTH and the next frame is served."""
    h = RigHost(small_model())
    big = encode_frame(Status.TYPE, 77, b"\x00" * (HOST_MAX_BODY - 10))
    h.send(big)
    nak = h.responses.pop(77)
    assert isinstance(nak, Nak) and nak.reason is NakReason.BAD_LENGTH
    assert h.truth().controller_alive


@pytest.mark.parametrize("cls", [SimAdvance, SimInjectFault, SimClearFault, SimGroundTruth, SimRefill, SimPowerCycle])
def test_rig_signed_sim_frames_with_random_payloads_never_crash(cls):
    h = RigHost(small_model())
    rnd = random.Random(cls.TYPE)
    for n in range(300):
        payload = rnd.randbytes(rnd.randrange(0, 40))
        wire = encode_frame(cls.TYPE, n, payload, h.signers[Role.SIM])
        h.send(wire)
        reply = h.responses.pop(n, None)
        assert reply is not None, payload
    assert h.truth()


def test_hw_info_matches_the_model():
    h = RigHost(small_model(stroke_nl=321, serial="THC-T1"))
    assert isinstance(h.controller.hw, HwInfo)
    assert (h.controller.hw.stroke_nl, h.controller.hw.serial) == (321, "THC-T1")
    h.hw.handle(HwInfoRequest())
    assert h.hw.outbox[-1].watchdog_window_ms == 10_000


def test_pty_port_read_and_write(tmp_path):
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    try:
        port = PtyPort(master)
        assert port.read(0.01) == b""
        os.write(slave, b"hello")
        assert port.read(1.0) == b"hello"
        port.write(b"abc")
        assert os.read(slave, 10) == b"abc"
    finally:
        os.close(master)
        os.close(slave)


class LossyPort(InProcessPort):
    """An in-process port that loses the controller's next reply (as noise would)."""

    lose_next = False

    def read(self, timeout_s: float) -> bytes | None:
        data = super().read(timeout_s)
        if data and self.lose_next:
            self.lose_next = False
            return b""
        return data


def test_bug_controller_once_late_was_never_heard_again():
    """Bug: once the controller missed one idle report, exchange() stopped reading from
    it altogether; in-process nothing else reads the port, so its kicks were never seen
    again and the watchdog reset it every window for ever (in split mode its replies
    piled up and were acted on late). Now a lost controller is still listened to,
    without waiting, and is responsive again as soon as a frame arrives."""
    h = RigHost(small_model(watchdog_window_ms=60_000), [run(3_000, 10, 100)], boot=False)
    h.port = h.rig.port = LossyPort(h.port.factory)
    h.rig.idle_timeout_s = 0.01
    h.rig.boot()
    h.advance(3_000)  # the run's first stroke
    h.port.lose_next = True  # the SLEEP_UNTIL answering the second stroke's progress
    h.advance(200_000)
    assert any(e.what == "controller_silent" for e in h.hw.events)  # it was counted lost
    gt = h.truth()
    assert gt.tones_total == 0 and gt.controller_alive
    assert gt.strokes_total == 10


def test_bug_scripted_controller_without_hw_info_kicked_too_slowly():
    """Bug: the scripted controller asked for HW_INFO only on POWER_ON; if that answer
    was lost it kicked on its 20 s default for ever, and a shorter watchdog window reset
    it again and again. Now it asks on every wake until HW_INFO comes."""
    ctl = ScriptedController([])
    dec = codec.MessageDecoder()

    def answers(msg):
        return [type(i.message) for i in dec.feed(ctl.feed(codec.encode(msg, 1)))]

    assert HwInfoRequest in answers(Time(time_ms=5, reason=WakeReason.TIMER))
    assert (
        answers(PowerOn(reset_cause=ResetCause.POWER_UP, time_ms=6, rtc_s=0, boot_count=1, odometer_strokes=0)).count(
            HwInfoRequest
        )
        == 1
    )
    ctl.feed(
        codec.encode(
            HwInfo(
                serial="x",
                reservoir_capacity_ul=1,
                stroke_nl=1,
                min_stroke_interval_ms=1,
                min_flow_nl_per_day=48_000,
                max_strokes_per_run=1,
                watchdog_window_ms=10_000,
                battery_eri_mv=2,
                battery_eos_mv=1,
                odometer_strokes=0,
            ),
            2,
        )
    )
    assert ctl.kick_every_ms == 5_000
    assert HwInfoRequest not in answers(Time(time_ms=7, reason=WakeReason.TIMER))


def test_bug_noise_release_could_move_time_backwards():
    """Bug: advance() compared a held noise byte's release time with the next hardware
    event as `due <= (next_due_ms() or target + 1)`: an event due at time 0 read as
    "none", so bytes due later were released first and time then went back to 0."""
    h = RigHost(small_model(), boot=False)
    h.rig.noise[(WireLink.PUMP, "out")].set(Fault.LINK_DELAY, 1_000_000, 5, seed=1)
    h.rig.boot()  # POWER_ON held back until 5 ms
    h.rig.noise[(WireLink.PUMP, "out")].clear(Fault.LINK_DELAY)
    seen = []
    h.hw.sched.at(0, lambda: seen.append(h.hw.now_ms))
    idle = h.hw.advance_idle
    h.hw.advance_idle = lambda to: (seen.append(to), idle(to))
    h.rig.advance(10)
    assert seen == sorted(seen) and seen[0] == 0


def test_bug_pty_port_waited_on_every_write_to_a_dead_controller():
    """Bug (see also the HIL test): PtyPort waited a second for room on every write to a
    full port; now it waits once, then drops at once until a write goes through."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    try:
        port = PtyPort(master)
        port.WRITE_WAIT_S = 0.2
        chunk = b"\x55" * 1_000
        for _ in range(100):  # fill it: nobody reads the slave
            port.write(chunk)
        assert port.stalled and port.dropped > 0
        t0 = time.monotonic()
        for _ in range(50):
            port.write(chunk)
        assert time.monotonic() - t0 < 0.2  # was 50 x 0.2 s
        termios.tcflush(slave, termios.TCIFLUSH)  # a new controller opens the port
        port.write(b"ok")
        assert not port.stalled
    finally:
        os.close(master)
        os.close(slave)


def test_codec_bytes_of_a_rig_capture_decode(tmp_path):
    cap = Capture(tmp_path / "c.pcap", wall_time=False)
    h = RigHost(small_model(), [run(0, 2, 100)], capture=cap)
    h.advance(1_000)
    h.truth()
    cap.close()
    recs = read_capture(tmp_path / "c.pcap")
    seen = {(r["link"], r["direction"]) for r in recs}
    assert seen == {
        (Link.HOST, Direction.HOST_TO_PUMP),
        (Link.HOST, Direction.PUMP_TO_HOST),
        (Link.PUMP, Direction.CONTROLLER_TO_PUMP),
        (Link.PUMP, Direction.PUMP_TO_CONTROLLER),
    }
    for r in recs:
        item = codec.MessageDecoder().feed(b"\x00" + cobs_encode(r["body"]) + b"\x00")
        assert item and isinstance(item[0], codec.Received), r
    times = [r["sim_ms"] for r in recs]
    assert times == sorted(times)


def cobs_encode(body: bytes) -> bytes:
    from cobs import cobs

    return cobs.encode(body)


def test_bug_stroke_volumes_were_rounded_down_every_stroke():
    """Bug: each stroke's volume was rounded down to whole nL, so the pump delivered about
    0.1 % less than its error model (half an nL a stroke with a symmetric error). The
    remainder is now carried to the next stroke: the total is exact to under 1 nL."""
    hw = PumpHardware(PumpModel(stroke_error_sd_ppm=0, stroke_bias_ppm=-1))  # 499.9995 nL a stroke
    assert sum(hw.stroke_volume_nl() for _ in range(10_000)) == 4_999_995
    hw = PumpHardware(PumpModel(stroke_error_sd_ppm=10_000), seed=3)
    vols = [hw.stroke_volume_nl() for _ in range(40_000)]
    assert abs(sum(vols) / len(vols) - 500) < 0.1  # unbiased (the rounding alone cost 0.5)
