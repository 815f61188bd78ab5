"""The firmware over real ptys, surviving what it must: a damaged NVM file, a power cycle
in the middle of a refill, frames it must refuse (a wrong key, a patient programming, a
replay, also across a power cycle) and failures that never lock a key out.

Every test runs in-process or split (`pytest --split`): the NVM file is
`firmware-nvm.bin` in the state directory either way. Every refused request leaves status
and prescription as they were.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from firmware.board.filenvm import NVM_FILE, SLOT_A, SLOT_B, FileNvm, layout
from protocol import codec
from protocol.auth import FrameSigner, new_key
from protocol.codes import AlarmId, LogEvent, NakReason, ResetCause, Role, TherapyState
from protocol.messages import Nak, RefillBegin, RefillComplete, SimPowerCycle, SimRefill, Status, StatusAck
from tests.harness import Procs, PumpHost, firmware_pump, program_message, send_frame
from tools.client import Refused

MG = 1_000_000
CONC = 5 * MG
FILL_NL = 12_000_000
MINUTE = 60_000
HOUR = 3_600_000
BASE = {"basal": ((0, 2 * MG),), "bolus": (100_000, 600, 3_600, 6), "max_dose_24h_ng": 5 * MG}


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def running(procs) -> tuple[PumpHost, Path]:
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(**BASE)
    pump.start()
    pump.advance(HOUR)
    state_dir = Path(procs.started[0].state_dir)
    return pump, state_dir / NVM_FILE


def snapshot(pump: PumpHost):
    return pump.status(), pump.prescription()


def newest_slot(nvm_file: Path, record: str) -> int:
    """Which slot holds the newest copy (read from a copy: a load may tidy the file)."""
    copy = nvm_file.with_name("peek.bin")
    shutil.copyfile(nvm_file, copy)
    s = FileNvm(copy)
    s.load()
    return s._current[(layout(10_000)[1][record].record_id, 0)]


def damage(nvm_file: Path, record: str, slot: int) -> None:
    off = layout(10_000)[1][record].slot_offset(0, slot)
    with open(nvm_file, "r+b") as f:
        f.seek(off + 10)
        b = f.read(1)
        f.seek(off + 10)
        f.write(bytes([b[0] ^ 0xFF]))


def nvm_errors(log) -> list[tuple[int, int]]:
    return [(e.arg0, e.arg1 & 3) for e in log if e.event is LogEvent.NVM_ERROR]


# ============================================================ a damaged NVM file


@pytest.mark.parametrize("which", ["older", "newest", "both"])
@pytest.mark.req("SR-034")
def test_damaged_nvm_slot_is_detected_at_boot(procs, which):
    """The older copy damaged: therapy goes on from the newest, and the log says what was
    found. The newest (or both) damaged: the prescription cannot be vouched for, so the
    pump raises the memory-error alarm, stays halted (nothing delivered, by ground truth)
    until a clinician acknowledges it, and then stops rather than resumes."""
    pump, nvm_file = running(procs)
    rx_before = pump.prescription()
    newest = newest_slot(nvm_file, "prescription")
    slots = {"older": [1 - newest], "newest": [newest], "both": [0, 1]}[which]
    for slot in slots:
        damage(nvm_file, "prescription", slot)
    pump.sim(SimPowerCycle(off_ms=MINUTE))
    rid = layout(10_000)[1]["prescription"].record_id
    mask = sum(SLOT_A if s == 0 else SLOT_B for s in slots)
    log = pump.log()
    assert nvm_errors(log) == [(rid, mask)]
    st = pump.status()
    if which == "older":
        assert st.state is TherapyState.RUNNING and not st.alarms
        assert pump.prescription() == rx_before
        return
    assert st.state is TherapyState.HALTED
    assert [a.alarm for a in st.alarms] == [AlarmId.MEMORY_ERROR]
    assert not pump.prescription().present  # not silently the older prescription
    (raised,) = [e for e in log if e.event is LogEvent.ALARM_RAISED]
    assert raised.arg0 == AlarmId.MEMORY_ERROR and raised.seq > [e for e in log if e.event is LogEvent.BOOT][-1].seq
    delivered = pump.truth().delivered_nl
    pump.advance(2 * HOUR)
    assert pump.truth().delivered_nl == delivered
    pump.ack(AlarmId.MEMORY_ERROR)
    st = pump.status()
    assert st.state is TherapyState.STOPPED and not st.alarms
    # Reprogramming brings it back, and the next boot finds a clean store.
    pump.program(**BASE)
    assert pump.start().state is TherapyState.RUNNING
    pump.sim(SimPowerCycle(off_ms=MINUTE))
    assert nvm_errors(pump.log()) == [(rid, mask)]
    assert pump.status().state is TherapyState.RUNNING


@pytest.mark.req("SR-034")
def test_a_damaged_history_minute_halts_and_denies_patient_boluses_for_a_day(procs):
    pump, nvm_file = running(procs)
    reg = layout(10_000)[1]["history"]
    minute = (pump.truth().time_ms - MINUTE) // MINUTE  # a minute with basal strokes in it
    pos = minute % reg.positions
    with open(nvm_file, "r+b") as f:
        for slot in (0, 1):
            f.seek(reg.slot_offset(pos, slot) + 7)
            b = f.read(1)
            if b and b != b"\0":
                f.seek(reg.slot_offset(pos, slot) + 7)
                f.write(bytes([b[0] ^ 0xFF]))
    pump.sim(SimPowerCycle(off_ms=MINUTE))
    st = pump.status()
    assert st.state is TherapyState.HALTED and AlarmId.MEMORY_ERROR in [a.alarm for a in st.alarms]
    pump.ack(AlarmId.MEMORY_ERROR)
    pump.start()
    ack = pump.press()
    assert ack.decision.name == "LOCKOUT"
    assert ack.next_available_at_s >= pump.truth().time_ms // 1000 + 23 * 3600


# ============================================================ power cycle during a refill


@pytest.mark.req("SR-017")
def test_power_cycle_during_refill_comes_back_in_refill_and_completes(procs):
    pump, _ = running(procs)
    pump.request(RefillBegin(command_id=pump.next_id()))
    assert pump.status().state is TherapyState.REFILL
    gt = pump.truth()
    pump.sim(SimRefill(withdraw_nl=gt.reservoir_nl, add_nl=15_000_000, concentration_ng_per_ml=CONC, into_pocket=False))
    pump.sim(SimPowerCycle(off_ms=MINUTE))
    st = pump.status()
    assert st.state is TherapyState.REFILL  # not running on a reservoir it has not been told about
    delivered = pump.truth().delivered_nl
    pump.advance(HOUR)
    assert pump.truth().delivered_nl == delivered  # nothing in refill
    done = pump.request(
        RefillComplete(
            command_id=pump.next_id(),
            withdrawn_nl=gt.reservoir_nl,
            added_nl=15_000_000,
            drug="morphine",
            concentration_ng_per_ml=CONC,
        )
    )
    assert done.reservoir_nl == 15_000_000
    st = pump.status()
    assert st.state is TherapyState.RUNNING and st.reservoir_nl == 15_000_000
    pump.advance(HOUR)
    assert pump.truth().delivered_nl > delivered
    boots = [e for e in pump.log() if e.event is LogEvent.BOOT]
    assert boots[-1].arg0 == ResetCause.POWER_CYCLE


# ============================================================ refused frames


@pytest.mark.req("SR-027", "SR-028")
def test_wrong_key_and_patient_programming_are_refused_logged_and_change_nothing(procs):
    pump, _ = running(procs)
    before = snapshot(pump)
    seen = pump.log()[-1].seq
    forged = FrameSigner(Role.CLINICIAN, new_key())
    nak = send_frame(pump.client, codec.encode(program_message(500, basal=((0, 4 * MG),)), 9_001, forged), 9_001)
    assert isinstance(nak, Nak) and nak.reason is NakReason.AUTH_FAILED
    with pytest.raises(Refused) as refused:
        pump.request(program_message(501, basal=((0, 4 * MG),)), Role.PATIENT)
    assert refused.value.reason is NakReason.NOT_PERMITTED
    st, rx = snapshot(pump)
    assert rx == before[1]
    assert (st.state, st.last_command_id, st.basal_rate_ng_per_day) == (
        before[0].state,
        before[0].last_command_id,
        before[0].basal_rate_ng_per_day,
    )
    new = [(e.event, e.arg0) for e in pump.log(seen + 1)]
    assert new == [(LogEvent.AUTH_FAILED, Role.CLINICIAN), (LogEvent.NOT_PERMITTED, Role.PATIENT)]


@pytest.mark.req("SR-029")
def test_a_replayed_frame_is_refused_also_after_a_power_cycle(procs):
    pump, _ = running(procs)
    signer = pump.client._signers[Role.CLINICIAN]
    # A clinician's reprogramming, overheard on the link.
    wire = codec.encode(program_message(pump.next_id(), **{**BASE, "basal": ((0, 3 * MG),)}), 9_100, signer)
    first = send_frame(pump.client, wire, 9_100)
    assert not isinstance(first, Nak)
    pump.program(**BASE)  # and later changed back: a replay would bring the overheard one back
    before = snapshot(pump)
    assert before[1].basal[0].rate_ng_per_day == 2 * MG
    again = send_frame(pump.client, wire, 9_100)
    assert isinstance(again, Nak) and again.reason is NakReason.REPLAYED
    pump.sim(SimPowerCycle(off_ms=MINUTE))
    after_cycle = send_frame(pump.client, wire, 9_100)
    assert isinstance(after_cycle, Nak) and after_cycle.reason is NakReason.REPLAYED
    st, rx = snapshot(pump)
    assert rx == before[1] and st.last_command_id == before[0].last_command_id
    replays = [e for e in pump.log() if e.event is LogEvent.REPLAY_REJECTED]
    assert len(replays) == 2


@pytest.mark.req("SR-055")
def test_failures_under_a_key_never_lock_it_out_not_even_across_a_power_cycle(procs):
    """Five failures with one key in ten minutes used to lock it out for ten minutes,
    across a power cycle: five random tags under the clinician's key id kept the real
    clinician out. Now the real key is served after every failure and after the power
    cycle; the failures are answered (within the NAK budget) and logged."""
    pump, _ = running(procs)
    before = snapshot(pump)
    forged = FrameSigner(Role.CLINICIAN, new_key())
    for i in range(5):
        nak = send_frame(pump.client, codec.encode(Status(), 9_200 + i, forged), 9_200 + i)
        assert nak.reason is NakReason.AUTH_FAILED
        assert isinstance(pump.status(), StatusAck)  # the clinician's key, after each one
    assert isinstance(pump.status(Role.PATIENT), StatusAck)
    pump.sim(SimPowerCycle(off_ms=MINUTE))
    assert isinstance(pump.status(), StatusAck)
    st, rx = snapshot(pump)
    assert rx == before[1] and st.last_command_id == before[0].last_command_id
    events = [
        (e.event, e.arg0, e.arg1) for e in pump.log() if e.event in (LogEvent.AUTH_FAILED, LogEvent.KEY_LOCKED_OUT)
    ]
    assert events == [(LogEvent.AUTH_FAILED, Role.CLINICIAN, Status.TYPE)] * 5
