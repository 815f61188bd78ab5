"""The physical state's checkpoint (emulator/journal.py, pump.ckpt) and how the rig and
the state directory use it (issue 13, item 1). The SIGKILL campaign against the emulator
process is tests/test_emulator_kill.py."""

from __future__ import annotations

import json
import os

import pytest

from emulator.journal import CHECKPOINT_FILE, FILE_SIZE, MAX_SEGMENTS, SLOT_SIZE, Journal, load_state, pack
from emulator.journal import pack_hardware as pack_hw
from emulator.model import PumpModel
from emulator.rig import InProcessPort
from emulator.state import FIRMWARE_NVM, StateDir, StateError
from protocol.codes import Fault
from protocol.codes import Link as WireLink
from protocol.messages import SimInjectFault, SimRefill
from tests.harness import RigHost, action, run


def model(**kw) -> PumpModel:
    return PumpModel(stroke_error_sd_ppm=0, min_stroke_interval_ms=100, watchdog_window_ms=10_000, **kw)


def journal_at(tmp_path, sd: StateDir | None = None) -> Journal:
    sd = sd or StateDir(tmp_path / "sd")
    return Journal(sd.path / CHECKPOINT_FILE, fallback=sd.save_pump)


def a_host(actions=None, **kw) -> RigHost:
    actions = actions if actions is not None else [run(1_000, 30, 200), action(2_000, "beep")]
    return RigHost(model(**kw), actions, boot=False)


def inject(h: RigHost, fault: Fault, value: int) -> None:
    h.sim(SimInjectFault(fault=fault, link=WireLink.NONE, value=value, rate_ppm=0, seed=0))


def pumps():
    """Rigs with every kind of field set: fresh, after strokes and a tone, occluded with
    volume held, a forced battery, a stalled motor, a catheter holding two drugs (each
    yielded as it is then: use it before asking for the next)."""
    h = a_host()
    h.rig.boot()
    yield h.rig
    h.advance(5_000)
    yield h.rig
    inject(h, Fault.OCCLUSION, 0)
    inject(h, Fault.BATTERY_MV, 3_000)
    inject(h, Fault.STROKE_ERROR, -20_000)
    inject(h, Fault.CATHETER_LEAK, 5_000)
    h.advance(5_000)
    yield h.rig
    inject(h, Fault.MOTOR_STALL, 0)
    h.sim(SimRefill(withdraw_nl=10**9, add_nl=1_000_000, concentration_ng_per_ml=1_000_000, into_pocket=False))
    h.advance(3_000)
    yield h.rig
    h2 = a_host([run(0, 64, 100), action(8_000, "resume"), run(10_000, 64, 100)], catheter_dead_volume_nl=50_000)
    h2.rig.boot()
    h2.advance(7_000)
    h2.sim(SimRefill(withdraw_nl=10**9, add_nl=100_000, concentration_ng_per_ml=2_000_000, into_pocket=False))
    h2.advance(20_000)
    assert len(h2.rig.state()["catheter"]) == 2  # (the test covers what it says)
    yield h2.rig


def states_of_a_pump() -> list[dict]:
    return [json.loads(json.dumps(rig.state())) for rig in pumps()]  # as pump.json holds them


def test_a_checkpoint_holds_exactly_the_rig_state(tmp_path):
    j = journal_at(tmp_path)
    seen = []
    for state in states_of_a_pump():
        seq = j.commit(state)
        assert j.newest() == (seq, state)
        seen.append(state)
    assert len({json.dumps(s, sort_keys=True) for s in seen}) == len(seen)
    # Opened again (a new process): the newest slot, and numbering going on from it.
    j2 = journal_at(tmp_path)
    assert j2.newest() == (seq, seen[-1]) and j2.seq == seq


def test_the_rig_fast_path_packs_the_same_bytes_as_the_state():
    """Rig.checkpoint packs from the hardware without building Rig.state(): the two must
    never drift apart (a field added to to_state() and not to the fast path fails here)."""
    for rig in pumps():
        state = rig.state()
        assert pack(state) is not None
        assert pack_hw(rig.hw, state["sim_counter"]) == pack(state)


def test_the_file_is_preallocated_and_of_fixed_size(tmp_path):
    j = journal_at(tmp_path)
    st = os.stat(j.path)
    # Every block allocated: a write through the mapping can never meet a full disk.
    assert st.st_size == FILE_SIZE and st.st_blocks * 512 >= FILE_SIZE


def torn(j: Journal, slot: int, how: str) -> None:
    off = slot * SLOT_SIZE
    if how == "crc":
        j._mm[off + 40] ^= 0xFF  # a byte of the payload: the CRC no longer holds
    elif how == "blank":
        j._mm[off : off + SLOT_SIZE] = bytes(SLOT_SIZE)
    else:  # part-way: the head of a new image over the old one
        j._mm[off + 20 : off + 60] = os.urandom(40)


@pytest.mark.parametrize("how", ["crc", "blank", "partway"])
def test_a_damaged_slot_falls_back_to_the_other(tmp_path, how):
    j = journal_at(tmp_path)
    states = states_of_a_pump()[:2]
    j.commit(states[0])
    seq = j.commit(states[1])
    torn(j, seq & 1, how)
    assert j.newest() == (seq - 1, states[0])
    torn(j, (seq - 1) & 1, "crc")
    assert j.newest() is None


def test_a_slot_whose_fields_are_out_of_range_is_not_used(tmp_path):
    """Checked with pump.json's own ranges (emulator/state.py validate_pump)."""
    j = journal_at(tmp_path)
    states = states_of_a_pump()[:2]
    j.commit(states[0])
    seq = j.commit({**states[1], "leak_ppm": 2_000_000})  # packs (an i32), but no pump leaks 200 %
    assert j.newest() == (seq - 1, states[0])


def test_load_takes_the_newest_of_pump_json_and_the_slots(tmp_path):
    sd = StateDir(tmp_path / "sd")
    j = journal_at(tmp_path, sd)
    a, b, c = states_of_a_pump()[:3]
    assert load_state(sd, j) is None  # a new pump
    sd.save_pump(a, j.seq + 1)
    j.commit(a)
    j.commit(b)  # newer than pump.json: the slot wins
    assert load_state(sd, j) == b
    sd.save_pump(c, j.seq + 1)  # pump.json newer than both slots
    assert load_state(sd, j) == c
    j.commit(c)  # a tie: pump.json
    assert load_state(sd, j) == c
    # pump.json from before the checkpoint existed (names no number): any valid slot is newer.
    sd.save_pump(a)
    assert json.loads(sd.pump_file.read_text()).get("checkpoint_seq") is None
    assert load_state(sd, j) == c


def test_numbering_goes_on_above_pump_json_after_the_slots_were_cleared(tmp_path):
    """A clean exit blanks the slots: the next commits must still be newer than pump.json."""
    sd = StateDir(tmp_path / "sd")
    j = journal_at(tmp_path, sd)
    a, b = states_of_a_pump()[:2]
    for _ in range(5):
        j.commit(a)
    sd.save_pump(a, j.seq)
    j.clear()
    j2 = journal_at(tmp_path, sd)
    assert j2.seq == 0 and load_state(sd, j2) == a and j2.seq == 5
    j2.commit(b)
    assert load_state(sd, j2) == b


def test_a_checkpoint_without_pump_json_is_refused_like_a_missing_pump_json(tmp_path):
    sd = StateDir(tmp_path / "sd")
    j = journal_at(tmp_path, sd)
    assert load_state(sd, j) is None  # a blank checkpoint file is no pump
    j.commit(states_of_a_pump()[0])
    with pytest.raises(StateError, match=r"pump\.json is missing, but pump\.ckpt holds a pump's state"):
        load_state(sd, j)
    (sd.path / FIRMWARE_NVM).write_bytes(b"\x01")
    with pytest.raises(StateError, match=r"pump\.json is missing"):
        load_state(sd, j)


def test_a_state_too_large_for_a_slot_goes_to_pump_json(tmp_path):
    sd = StateDir(tmp_path / "sd")
    j = journal_at(tmp_path, sd)
    small = states_of_a_pump()[0]
    j.commit(small)
    big = {**small, "catheter": [[1, i] for i in range(MAX_SEGMENTS + 1)]}
    assert pack(big) is None
    seq = j.commit(big)
    assert j.error is None
    assert load_state(sd, j) == big and json.loads(sd.pump_file.read_text())["checkpoint_seq"] == seq
    j.commit(small)  # fits again: the slot, newer than pump.json
    assert load_state(sd, j) == small


class WatchedPort(InProcessPort):
    """Checks, at every write to the controller, that the checkpoint already holds the
    hardware's state: what the controller is about to learn is what a kill would keep."""

    def __init__(self, factory, journal: Journal, writes: list) -> None:
        super().__init__(factory)
        self.journal = journal
        self.writes = writes
        self.rig = None

    def write(self, data: bytes) -> None:
        if self.rig is not None:
            newest = self.journal.newest()
            assert newest is not None and newest[1] == self.rig.state(), "written before its checkpoint"
            self.writes.append(newest[0])
        super().write(data)


def test_the_rig_checkpoints_before_anything_leaves_the_hardware(tmp_path):
    """Without the checkpoint before each write (and before each host answer), this fails
    at the first stroke report: the controller would learn of strokes, tones and times a
    kill of the emulator could take back."""
    j = journal_at(tmp_path)
    h = a_host([run(1_000, 30, 200), action(2_000, "beep"), run(20_000, 10, 300)])
    writes: list[int] = []
    port = WatchedPort(h.port.factory, j, writes)
    h.rig.port = h.port = port
    h.rig.journal = j
    port.rig = h.rig
    told = []
    host_write = h.rig.host_write

    def to_host(data: bytes) -> None:
        told.append(j.newest()[1] == h.rig.state())
        host_write(data)

    h.rig.host_write = to_host
    h.rig.boot()
    h.advance(40_000)
    inject(h, Fault.OCCLUSION, 0)
    h.advance(5_000)
    gt = h.truth()
    assert gt.strokes_total == 40 and gt.tones_total == 1
    assert len(writes) > 40 and told and all(told)
    assert j.newest()[1] == h.rig.state()  # and at the end of each advance
    # Cheap when nothing moved: a commit per distinct state, not per write.
    commits = j.commits
    h.rig.exchange()
    h.rig.checkpoint()
    assert j.commits == commits


def test_a_clean_exit_leaves_pump_json_alone_in_charge(tmp_path):
    """pump.json put back by hand after a clean stop is what the next start uses (the
    checkpoint was folded into it and blanked), as before the checkpoint existed."""
    from emulator.server import Emulator, EmulatorOptions

    sd = tmp_path / "sd"
    opts = EmulatorOptions(state_dir=str(sd), controller="scripted", script=())
    emu = Emulator(opts, out=lambda line: None)
    emu._stop = True  # stop at the first turn of the loop
    assert emu.run() == 0
    state = json.loads((sd / "pump.json").read_text())
    assert state["checkpoint_seq"] >= 1
    assert Journal(sd / CHECKPOINT_FILE).newest() is None
