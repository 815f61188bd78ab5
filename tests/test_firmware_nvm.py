"""The file-backed NVM store: two slots per record, commits that are all or nothing at any
kill point, corruption detected and classified; and the controller on top of it: memory
error at boot, key provisioning, and failures that never lock a key out (SR-055, SR-056)."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.auth import OTHER_KEYS
from firmware.board.filenvm import SECTOR, SLOT_A, SLOT_B, FileNvm, layout
from firmware.config import FirmwareConfig
from firmware.nvm import MemoryNvm, NvmError
from protocol.auth import FrameSigner, new_key
from protocol.codes import AlarmId, LogEvent, NakReason, ResetCause, Role, TherapyState
from protocol.messages import Status, StatusAck
from tests.fake_pump import KEYS, FakePump
from tests.test_firmware_controller import read_log, setup, status

CAP = 16  # a small log ring keeps the files small


def nvm(tmp_path, name="nvm.bin", cap=CAP) -> FileNvm:
    return FileNvm(tmp_path / name, cap)


def offset(record: str, slot: int, position: int = 0, cap: int = CAP) -> int:
    _, regions, _ = layout(cap)
    return regions[record].slot_offset(position, slot)


def corrupt(path, off: int, at: int = 8) -> None:
    """Flip a byte inside a slot's payload (not its header): the CRC must catch it."""
    with open(path, "r+b") as f:
        f.seek(off + at)
        b = f.read(1)
        f.seek(off + at)
        f.write(bytes([b[0] ^ 0x5A]))


def slot_of_newest(path, record: str, cap: int = CAP) -> int:
    """Which slot holds the newest copy of a scalar record."""
    s = FileNvm(path, cap)
    s.load()
    return s._current[(layout(cap)[1][record].record_id, 0)]


# ============================================================ the store itself


def test_fresh_file_loads_as_empty_and_round_trips(tmp_path):
    s = nvm(tmp_path)
    assert s.load() is None and s.faults() == []
    s.save("state", 2)
    s.save("prescription", {"drug": "morphine", "basal": [[0, 1_000_000]]})
    s.save_items("history", {"100": 5, "1541": 7})  # 1541 = 100 + 1441: same position, a later minute
    s.save_items("log_entries", {"1": [0, 1, 0, 0], "2": [1, 4, 1, 2]})
    s.commit()
    got = nvm(tmp_path).load()
    assert got["state"] == 2
    assert got["prescription"]["basal"] == [[0, 1_000_000]]
    assert got["history"] == {"1541": 7}
    assert got["log_entries"] == {"1": [0, 1, 0, 0], "2": [1, 4, 1, 2]}


def test_nothing_is_visible_until_commit(tmp_path):
    s = nvm(tmp_path)
    s.save("state", 1)
    s.commit()
    s.save("state", 2)
    s.save_items("history", {"5": 9})
    # Read a copy: a load is a boot, and a boot erases what an unfinished commit wrote.
    (tmp_path / "copy.bin").write_bytes((tmp_path / "nvm.bin").read_bytes())
    assert nvm(tmp_path, "copy.bin").load() == {"state": 1, "history": {}, "log_entries": {}}
    s.commit()
    assert nvm(tmp_path).load()["state"] == 2


def test_a_value_too_big_for_its_slot_is_an_error_not_a_truncation(tmp_path):
    with pytest.raises(NvmError):
        nvm(tmp_path).save("state", list(range(100)))


def test_drop_removes_a_key_unless_its_position_is_rewritten(tmp_path):
    s = nvm(tmp_path)
    s.save_items("history", {"7": 1, "8": 2})
    s.commit()
    s.save_items("history", {"1448": 3}, drop=["7", "8"])  # 1448 takes 7's position
    s.commit()
    assert nvm(tmp_path).load()["history"] == {"1448": 3}


def test_the_two_slots_alternate_and_each_write_spares_the_committed_copy(tmp_path):
    path = tmp_path / "nvm.bin"
    s = nvm(tmp_path)
    seen = []
    for v in range(4):
        s.save("boot", v)
        s.commit()
        seen.append(slot_of_newest(path, "boot"))
    assert seen == [0, 1, 0, 1]


class Torn(FileNvm):
    """Loses power after `budget` bytes: the medium writes whole 512-byte sectors or nothing
    (as disks do), so a write is cut at a sector boundary, never inside a sector. (A
    SIGKILL does not cut a pwrite at all; this is the harder case.)"""

    budget = 0

    def _pwrite(self, data: bytes, off: int) -> None:
        pos = 0
        while pos < len(data):
            chunk = min(len(data) - pos, SECTOR - (off + pos) % SECTOR)
            if chunk > self.budget:
                raise KeyboardInterrupt("power lost")
            os.pwrite(self._fd, data[pos : pos + chunk], off + pos)
            self.budget -= chunk
            pos += chunk


def _commit_torn(path, budget: int, before: dict, after: dict) -> bool:
    """Apply `after` over a store holding `before`, killed after `budget` bytes. True if the
    kill came before the commit finished."""
    s = Torn(path, CAP)
    s.load()
    s.budget = budget
    try:
        for k, v in after.items():
            if k in ("history", "log_entries"):
                s.save_items(k, v)
            else:
                s.save(k, v)
        s.commit()
    except KeyboardInterrupt:
        return True
    return False


BEFORE = {
    "state": 2,
    "boot": 11_000_000,
    "fill": None,
    "history": {"10": 5_000, "11": 6_000},
    "log_entries": {"1": [0, 1, 1, 1]},
}
AFTER = {
    "state": 3,
    "boot": 10_999_500,
    "fill": [7, 100_000],
    "history": {"11": 9_000, "12": 1},
    "log_entries": {"2": [60, 4, 2, 3]},
}


def _expect(*layers: dict) -> dict:
    out = {"history": {}, "log_entries": {}}
    for layer in layers:
        for k, v in layer.items():
            if isinstance(v, dict):
                out[k] = {**out.get(k, {}), **v}
            else:
                out[k] = v
    return out


def test_a_kill_at_every_byte_of_a_commit_leaves_the_old_records_or_the_new_never_a_mix(tmp_path):
    """The two-slot guarantee, exhaustively: kill the writer after every possible number of
    bytes of one commit (a second commit on top of a first, so the old copies are real)."""
    old, new = _expect(BEFORE), _expect(BEFORE, AFTER)
    base = tmp_path / "base.bin"
    s = FileNvm(base, CAP)
    for k, v in BEFORE.items():
        s.save_items(k, v) if isinstance(v, dict) else s.save(k, v)
    s.commit()
    s.close()
    image = base.read_bytes()
    # How many bytes the whole commit writes.
    probe = tmp_path / "probe.bin"
    probe.write_bytes(image)
    t = Torn(probe, CAP)
    t.load()
    t.budget = 10**9
    for k, v in AFTER.items():
        t.save_items(k, v) if isinstance(v, dict) else t.save(k, v)
    t.commit()
    total = 10**9 - t.budget
    assert total > 150
    outcomes = set()
    for budget in range(total + 1):
        path = tmp_path / "t.bin"
        path.write_bytes(image)
        killed = _commit_torn(path, budget, BEFORE, AFTER)
        first = FileNvm(path, CAP)
        got = first.load()
        assert got in (old, new), budget
        assert not any(f.critical for f in first.faults()), budget
        outcomes.add("new" if got == new else "old")
        assert killed == (budget < total)
        # The store is usable after the kill, and a kill's leftovers never come back.
        first.save("limits", budget)
        first.commit()
        again = FileNvm(path, CAP).load()
        assert again == {**got, "limits": budget}, budget
    assert outcomes == {"old", "new"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["state", "fill", "delivery", "hist", "log"]), st.integers(0, 3000)), max_size=40
    )
)
def test_file_store_reads_back_what_the_memory_store_holds(tmp_path_factory, ops):
    """Random saves and commits: after each commit a fresh FileNvm loads what MemoryNvm has."""
    path = tmp_path_factory.mktemp("nvm") / "p.bin"
    f, m = FileNvm(path, CAP), MemoryNvm()
    m.records.update({"history": {}, "log_entries": {}})
    seq = 1
    for i, (rec, v) in enumerate(ops):
        if rec == "hist":
            for s in (f, m):
                s.save_items("history", {str(v): i}, drop=[str(v - 1441)])
        elif rec == "log":
            for s in (f, m):
                s.save_items("log_entries", {str(seq): [v, 1, 0, 0]}, drop=[str(seq - CAP)])
            seq += 1
        else:
            for s in (f, m):
                s.save(rec, v)
        if i % 3 == 2:
            f.commit()
            assert FileNvm(path, CAP).load() == m.load()


# ------------------------------------------------------------ corruption


def _committed_twice(tmp_path) -> tuple:
    path = tmp_path / "c.bin"
    s = FileNvm(path, CAP)
    for v in (1, 2):
        s.save("prescription", {"v": v})
        s.save("state", 2)
        s.save_items("history", {"10": v})
        s.save_items("log_entries", {str(v): [v, 1, 0, 0]})
        s.commit()
    return path, slot_of_newest(path, "prescription")


def test_a_damaged_older_copy_is_logged_not_critical_and_repaired(tmp_path):
    path, newest = _committed_twice(tmp_path)
    corrupt(path, offset("prescription", 1 - newest))
    s = FileNvm(path, CAP)
    got = s.load()
    assert got["prescription"] == {"v": 2}
    (fault,) = s.faults()
    assert (fault.record, fault.slots, fault.critical) == ("prescription", SLOT_A if newest == 1 else SLOT_B, False)
    # Repaired at load: the next boot finds nothing wrong.
    t = FileNvm(path, CAP)
    assert t.load()["prescription"] == {"v": 2} and t.faults() == []


def test_a_damaged_newest_copy_is_critical_never_a_silent_rollback(tmp_path):
    path, newest = _committed_twice(tmp_path)
    corrupt(path, offset("prescription", newest))
    s = FileNvm(path, CAP)
    got = s.load()
    assert "prescription" not in got  # not {"v": 1}: that would be the old prescription
    (fault,) = s.faults()
    assert fault.record == "prescription" and fault.critical


def test_both_copies_damaged_is_critical(tmp_path):
    path, _ = _committed_twice(tmp_path)
    corrupt(path, offset("prescription", 0))
    corrupt(path, offset("prescription", 1))
    s = FileNvm(path, CAP)
    assert "prescription" not in s.load()
    (fault,) = s.faults()
    assert fault.critical and fault.slots == SLOT_A | SLOT_B


def test_a_damaged_history_minute_is_critical_a_damaged_log_entry_is_not(tmp_path):
    path, _ = _committed_twice(tmp_path)
    corrupt(path, offset("history", 0, position=10))
    corrupt(path, offset("log_entries", 0, position=1))
    s = FileNvm(path, CAP)
    s.load()
    faults = {f.record: f for f in s.faults()}
    assert faults["history"].critical and faults["history"].position == 10
    assert not faults["log_entries"].critical and faults["log_entries"].position == 1


def test_a_lost_superblock_trusts_nothing_but_keeps_the_log_numbering(tmp_path):
    path, _ = _committed_twice(tmp_path)
    corrupt(path, offset("state", 0) - 2048)  # superblock slot A ...
    corrupt(path, offset("state", 0) - 1024)  # ... and B
    s = FileNvm(path, CAP)
    got = s.load()
    assert got == {"log": {"next_seq": 3}}  # entries 1 and 2 existed: never number one of them again
    assert s.faults()[0].record == "superblock" and s.faults()[0].critical


def test_a_store_made_with_another_layout_is_not_read_as_this_one(tmp_path):
    path = tmp_path / "x.bin"
    s = FileNvm(path, 32)
    s.save("state", 2)
    s.commit()
    t = FileNvm(path, CAP)  # another log capacity: every offset differs
    assert t.load() is None
    assert t.faults()[0].critical


# ============================================================ the controller on FileNvm


def file_pump(tmp_path, **kw) -> FakePump:
    return setup(nvm=FileNvm(tmp_path / "fw.bin", 10_000), **kw)


def reopen(p: FakePump, tmp_path, cause=ResetCause.POWER_CYCLE) -> None:
    """A new NVM object on the same file and a fresh controller: nothing kept in memory."""
    p.nvm.close()
    p.nvm = FileNvm(tmp_path / "fw.bin", 10_000)
    p.reset(cause)


def test_recovery_from_the_file_alone_equals_recovery_from_memory(tmp_path):
    mem, fil = setup(), file_pump(tmp_path)
    for p in (mem, fil):
        p.advance(3 * 3_600_000)
    reopen(fil, tmp_path)
    mem.reset()
    for p in (mem, fil):
        p.advance(3_600_000)
    a, b = status(mem), status(fil)
    assert a == b and a.state is TherapyState.RUNNING
    assert [(e.seq, e.event) for e in read_log(mem)] == [(e.seq, e.event) for e in read_log(fil)]


def test_corrupt_record_at_boot_raises_memory_error_and_halts_until_acknowledged(tmp_path):
    p = file_pump(tmp_path)
    p.advance(3_600_000)
    newest = slot_of_newest(tmp_path / "fw.bin", "prescription", 10_000)
    corrupt(tmp_path / "fw.bin", offset("prescription", newest, cap=10_000))
    reopen(p, tmp_path)
    st_ = status(p)
    assert st_.state is TherapyState.HALTED
    assert any(a.alarm is AlarmId.MEMORY_ERROR for a in st_.alarms)
    log = read_log(p)
    rid = layout(10_000)[1]["prescription"].record_id
    nvm_errors = [e for e in log if e.event is LogEvent.NVM_ERROR]
    assert [(e.arg0, e.arg1 & 3) for e in nvm_errors] == [(rid, 1 << newest)]
    strokes = len(p.strokes)
    p.advance(3_600_000)
    assert len(p.strokes) == strokes  # nothing delivered while halted
    from tests.test_firmware_controller import ack

    ack(p, AlarmId.MEMORY_ERROR)
    assert status(p).state is TherapyState.STOPPED  # never resumes by itself after a memory error
    # The damaged record was rewritten: the next boot is clean.
    reopen(p, tmp_path)
    assert not [e for e in read_log(p) if e.event is LogEvent.NVM_ERROR and e.seq > nvm_errors[-1].seq]


def test_keys_are_provisioned_once_then_read_from_nvm(tmp_path):
    p = file_pump(tmp_path)
    # A later start with other keys in hand (keys.json regenerated): NVM's keys still rule.
    other = {Role.CLINICIAN: new_key(), Role.PATIENT: new_key()}
    p.nvm.close()
    p.nvm = FileNvm(tmp_path / "fw.bin", 10_000)
    saved = p.keys
    p.keys = other
    p.reset()
    p.keys = saved
    p._signers = {r: FrameSigner(r, k) for r, k in saved.items()}
    for r, _k in saved.items():
        p._signers[r].counter = 10**12  # above anything sent before the reset
    assert isinstance(p.request(Status()), StatusAck)


def _bad_signer(role: Role) -> FrameSigner:
    return FrameSigner(role, new_key())


def test_failures_never_lock_a_key_out_not_even_across_a_reset(tmp_path):
    """Five failures with one key in ten minutes used to lock that key out for ten minutes,
    across resets: five random tags under the clinician's key id locked the clinician out.
    Now the real key is served after every failure, before a reset and after it (SR-055);
    the failures are logged (within the refusal log's budget), and nothing is locked."""
    cfg = FirmwareConfig()
    p = file_pump(tmp_path)
    before = status(p)
    bad = _bad_signer(Role.CLINICIAN)
    for i in range(20):
        wire, seq = p.frame(Status(), signer=bad)
        reply = p.relay_maybe(wire, seq)
        if i < cfg.auth_nak_burst:
            assert reply.reason is NakReason.AUTH_FAILED
        else:
            assert reply is None  # the NAK budget of key id 1 is spent: dropped unanswered
        assert isinstance(p.request(Status()), StatusAck)  # the clinician's key, after each one
        assert isinstance(p.request(Status(), Role.PATIENT), StatusAck)
    log = list(p.ctl.parts.log.entries)
    failed = [(e.arg0, e.arg1) for e in log if e.event is LogEvent.AUTH_FAILED]
    assert failed == [(Role.CLINICIAN, Status.TYPE)] * cfg.refusal_log_burst
    reopen(p, tmp_path)
    for _ in range(5):
        wire, seq = p.frame(Status(), signer=bad)
        p.relay_maybe(wire, seq)
    after = p.request(Status())
    assert isinstance(after, StatusAck)
    assert (after.state, after.last_command_id) == (before.state, before.last_command_id)
    assert not [e for e in read_log(p) if e.event is LogEvent.KEY_LOCKED_OUT]


def test_the_nak_budget_comes_back_in_pump_time(tmp_path):
    """A failure is answered while its key id's NAK budget lasts: the burst at once, then
    one a minute (SR-055). Authentic frames never spend it."""
    cfg = FirmwareConfig(auth_nak_burst=3, auth_nak_every_ms=60_000)
    p = setup(config=cfg)
    bad = _bad_signer(Role.PATIENT)

    def answered(n: int) -> int:
        got = 0
        for _ in range(n):
            wire, seq = p.frame(Status(), signer=bad)
            got += p.relay_maybe(wire, seq) is not None
            assert isinstance(p.request(Status(), Role.PATIENT), StatusAck)  # never spends it
        return got

    assert answered(10) == 3
    p.advance(59_000)
    assert answered(1) == 0
    p.advance(1_000)
    assert answered(2) == 1
    p.advance(10 * 60_000)  # refilled to the burst, not beyond
    assert answered(10) == 3


def test_replays_spend_their_keys_budget_and_unknown_key_ids_share_one(tmp_path):
    p = setup()
    wire, seq = p.frame(Status())
    p.relay(wire, seq)
    replies = [p.relay_maybe(wire, seq) for _ in range(8)]
    assert [r.reason for r in replies if r is not None] == [NakReason.REPLAYED] * FirmwareConfig().auth_nak_burst
    assert isinstance(p.request(Status()), StatusAck)  # a fresh counter is served: no lockout
    forged = {7: new_key(), 9: new_key(), 200: new_key()}
    for k in forged:
        for _ in range(20):
            wire, seq = p.frame(Status(), signer=FrameSigner(k, forged[k]))
            p.relay_maybe(wire, seq)
    # Bounded memory: a key id the pump does not hold gets no budget of its own; every
    # other key id (and unsigned frames) shares one (test_bug_unsigned_frames_flooded_...).
    assert set(p.ctl.parts.auth.nak_budgets) <= {*KEYS, OTHER_KEYS}
    assert len(p.ctl.parts.refusals.kinds) <= len(KEYS) + 1 + 4


def test_a_random_flood_of_bad_frames_over_a_day_keeps_the_log_bounded_by_its_budget(tmp_path):
    """Refused frames are logged one by one only within the budget of their kind, and
    counted beyond it (SR-056): over a day of failures, at most the burst and one entry
    per interval, and every failure is in an entry or a count."""
    cfg = FirmwareConfig()
    p = setup()
    rng = random.Random(1)
    n0 = p.ctl.parts.log.next_seq
    bad = _bad_signer(Role.CLINICIAN)
    t0 = p.now_ms
    sent = 0
    while p.now_ms - t0 < 86_400_000:
        wire, seq = p.frame(Status(), signer=bad)
        p.relay_maybe(wire, seq)
        sent += 1
        p.advance(rng.randrange(1, 90_000))
    p.advance(cfg.refusal_log_every_ms)  # the last count is logged when its time comes
    new = [e for e in read_log(p) if e.seq >= n0]
    failed = [e for e in new if e.event is LogEvent.AUTH_FAILED]
    summaries = [e for e in new if e.event is LogEvent.AUTH_FAILURES_SUMMARY]
    assert all(e.arg0 == Role.CLINICIAN for e in summaries)
    assert len(failed) + sum(e.arg1 for e in summaries) == sent
    bound = cfg.refusal_log_burst + (p.now_ms - t0) // cfg.refusal_log_every_ms
    assert len(failed) + len(summaries) <= bound


def test_a_failure_beyond_the_log_budget_writes_nothing_to_nvm(tmp_path):
    """Keep NVM writes per request small: a counted failure costs no write; only the
    entries that reach the log do."""
    cfg = FirmwareConfig()
    p = setup(start=False)
    bad = _bad_signer(Role.CLINICIAN)
    for _ in range(cfg.refusal_log_burst):
        wire, seq = p.frame(Status(), signer=bad)
        p.relay_maybe(wire, seq)
    writes = p.nvm.writes
    for _ in range(1_000):
        wire, seq = p.frame(Status(), signer=bad)
        p.relay_maybe(wire, seq)
    assert p.nvm.writes == writes


def test_bug_a_second_power_on_kept_the_old_ram(tmp_path):
    """Bug: in split mode a power cycle sends POWER_ON to the same running process, and the
    controller kept everything in RAM: after a damaged prescription it went from RUNNING
    (not from BOOT) to HALTED, and acknowledging the memory error resumed the old basal.
    Now POWER_ON to a powered controller starts it over from NVM alone."""
    p = file_pump(tmp_path)
    p.advance(3_600_000)
    newest = slot_of_newest(tmp_path / "fw.bin", "prescription", 10_000)
    corrupt(tmp_path / "fw.bin", offset("prescription", newest, cap=10_000))
    p.power_on(ResetCause.POWER_CYCLE)  # the same controller object, as in split mode
    states = [(e.arg0, e.arg1) for e in read_log(p) if e.event is LogEvent.THERAPY_STATE]
    assert states[-1] == (TherapyState.BOOT, TherapyState.HALTED)
    from tests.test_firmware_controller import ack

    ack(p, AlarmId.MEMORY_ERROR)
    st_ = status(p)
    assert st_.state is TherapyState.STOPPED and st_.basal_rate_ng_per_day == 0
