"""The controller firmware over real ptys under attack on the host link (issue 14).

An outside attacker found that five frames with a random tag under the clinician's key id
locked the real clinician out for ten minutes, across power cycles, and that one forged
frame a minute denied most of a day's genuine STOPs and boluses; and that a flood of
refused requests (with the patient's key) or of forged frames (without any key) wrapped
the 10,000-entry event log, losing the PROGRAM, REFILL and BOLUS records. Here: forged
frames never keep a genuine request out (SR-055), and no flood of refusals or failures
pushes a therapy record out of the log (SR-056). Judged by the answers, by LOG_READ, and,
where delivery is involved, by the emulator's ground truth.

Forged frames go out on the same port as the genuine requests, ahead of them, so the
pump has seen every forged frame before the genuine request that follows; their sequence
numbers are half the sequence space away from the client's own.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from emulator.hostlink import SOCKET_NAME
from firmware.config import FirmwareConfig
from protocol import codec
from protocol.auth import COUNTER_CEILING, COUNTER_MAX, FrameSigner, compute_tag, new_key
from protocol.codes import BolusDecision, BolusKind, BolusOutcome, LogEvent, NakReason, Role, TherapyState
from protocol.framing import AUTH_PREFIX
from protocol.messages import (
    BolusRequest,
    BolusRequestAck,
    KeyUpdate,
    Message,
    Nak,
    RefillBegin,
    RefillComplete,
    SimRefill,
    Start,
    Status,
    StatusAck,
    Stop,
)
from tests.harness import Procs, PumpHost, firmware_pump, program_message, send_frame
from tools.client import Client, Refused

MG = 1_000_000
CONC = 5 * MG
FILL_NL = 12_000_000
DOSE_NG = 100_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
CFG = FirmwareConfig()
# What a therapy record is: everything but refusals, failures and their counts. (A
# BOLUS_REQUEST is one only when granted; a denied one is a refusal.)
NOISE = frozenset(
    {
        LogEvent.AUTH_FAILED,
        LogEvent.REPLAY_REJECTED,
        LogEvent.NOT_PERMITTED,
        LogEvent.COMMAND_REFUSED,
        LogEvent.PROGRAM_REFUSED,
        LogEvent.AUTH_FAILURES_SUMMARY,
        LogEvent.REFUSALS_SUMMARY,
    }
)


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def running(procs, basal_ng_per_day: int = 2 * MG, bolus=(DOSE_NG, 600, 3_600, 24)) -> PumpHost:
    """Filled, programmed, running, and an hour on: past the lockout programming starts."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, basal_ng_per_day),), bolus=bolus, max_dose_24h_ng=5 * MG)
    assert pump.start().state is TherapyState.RUNNING
    pump.advance(HOUR)
    return pump


def is_therapy(e) -> bool:
    if e.event is LogEvent.BOLUS_REQUEST:
        return e.arg1 == BolusDecision.GRANTED
    return e.event not in NOISE


class _Recording(dict):
    """The client's answers by seq, also kept in arrival order: replays of one overheard
    frame all carry its seq, so a dict alone would keep only the last answer."""

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.arrived: list[tuple[int, Message]] = []

    def __setitem__(self, seq: int, msg: Message) -> None:
        self.arrived.append((seq, msg))
        super().__setitem__(seq, msg)


class Attacker:
    """Frames nobody with a key sent: a random tag under the clinician's or the patient's
    key id, no trailer, a key id the pump does not hold, and replays of genuine frames
    overheard on the link. Sent on the test's own port, with sequence numbers far from
    the client's."""

    KINDS = ("clinician", "patient", "unsigned", "stranger", "replay")

    def __init__(self, pump: PumpHost, overheard: list[tuple[bytes, int]], seed: int = 0) -> None:
        self.client = pump.client
        self.client._responses = self._answers = _Recording(self.client._responses)
        self.overheard = overheard
        self._overheard_seqs = {seq for _, seq in overheard}
        self.rng = random.Random(seed)
        self.signers = {k: FrameSigner(k, new_key()) for k in (Role.CLINICIAN, Role.PATIENT, 9)}
        self.sent: Counter[str] = Counter()
        self._seqs: list[int] = []

    def frame(self, kind: str, seq: int) -> bytes:
        cid = self.rng.randrange(1, 2**32)
        if kind == "clinician":
            return codec.encode(Stop(command_id=cid), seq, self.signers[Role.CLINICIAN])  # a forged STOP
        if kind == "patient":
            return codec.encode(BolusRequest(command_id=cid), seq, self.signers[Role.PATIENT])
        if kind == "unsigned":
            return codec.encode(Stop(command_id=cid), seq)
        if kind == "stranger":
            return codec.encode(Stop(command_id=cid), seq, self.signers[9])
        return self.rng.choice(self.overheard)[0]  # a replay, byte for byte (its own seq)

    def send(self, kinds: list[str]) -> None:
        base = (self.client._seq + 0x8000) & 0xFFFF
        wire = bytearray()
        for i, kind in enumerate(kinds):
            seq = (base + i) & 0xFFFF
            self._seqs.append(seq)
            wire += self.frame(kind, seq)
            self.sent[kind] += 1
        self.client.send_raw(bytes(wire))

    def answered(self) -> list[Message]:
        """The answers to the forged frames sent since the last call (call it after a
        genuine request has been answered: the pump answers in order)."""
        ours = set(self._seqs) | self._overheard_seqs
        got = [m for s, m in self._answers.arrived if s in ours]
        self._answers.arrived.clear()
        for s in ours:
            self.client._responses.pop(s, None)
        self._seqs.clear()
        return got


def overhear(pump: PumpHost) -> list[tuple[bytes, int]]:
    """Genuine frames an eavesdropper recorded: the clinician's and the patient's STATUS
    (each sent and answered, so replaying them can only be refused)."""
    c = pump.client
    out = []
    for role in (Role.CLINICIAN, Role.PATIENT):
        c._seq = (c._seq + 1) & 0xFFFF
        wire = codec.encode(Status(), c._seq, c._signers[role])
        assert isinstance(send_frame(c, wire, c._seq), StatusAck)
        out.append((wire, c._seq))
    return out


def pipelined(pump: PumpHost, requests: list[tuple[Message, Role]], chunk: int = 200) -> list[Message]:
    """Correctly signed requests sent a chunk at a time without waiting for each answer;
    every answer, in order (an authentic frame is always answered)."""
    c = pump.client
    out: list[Message] = []
    for i in range(0, len(requests), chunk):
        seqs, wire = [], bytearray()
        for msg, role in requests[i : i + chunk]:
            c._seq = (c._seq + 1) & 0xFFFF
            c._responses.pop(c._seq, None)
            seqs.append(c._seq)
            wire += codec.encode(msg, c._seq, c._signers[role])
        c.send_raw(bytes(wire))
        out += [c._wait(lambda s=s: c._responses.pop(s, None), 10.0) for s in seqs]
    return out


def counted(log, event: LogEvent) -> int:
    """Refusals of one kind (AUTH_FAILED and REPLAY_REJECTED together per key id are one
    kind; here the refusals of authentic requests): logged one by one plus counted."""
    one_by_one = sum(1 for e in log if e.event is event and not is_therapy(e))
    return one_by_one + sum(e.arg1 for e in log if e.event is LogEvent.REFUSALS_SUMMARY and e.arg0 == event)


def auth_failures(log) -> int:
    one_by_one = sum(1 for e in log if e.event in (LogEvent.AUTH_FAILED, LogEvent.REPLAY_REJECTED))
    return one_by_one + sum(e.arg1 for e in log if e.event is LogEvent.AUTH_FAILURES_SUMMARY)


# ============================================================ SR-055: valid frames get through


@pytest.mark.req("SR-055")
def test_a_burst_of_a_thousand_forged_frames_cannot_deny_a_genuine_stop_status_or_bolus(procs):
    """1,000 forged frames (a random tag under the clinician's and the patient's key ids,
    unsigned, another key id, replays of overheard genuine frames), then the clinician's
    STOP: accepted, and by ground truth nothing moves after it. Again while stopped, then
    START and the patient's bolus: accepted and delivered. The forged frames are answered
    only within each key id's NAK budget (time stands still meanwhile), and change
    nothing."""
    pump = running(procs)
    attacker = Attacker(pump, overhear(pump))
    n0 = pump.log()[-1].seq + 1
    burst = [attacker.rng.choice(Attacker.KINDS) for _ in range(1_000)]
    attacker.send(burst)
    assert pump.status(Role.PATIENT).state is TherapyState.RUNNING
    naks = attacker.answered()
    assert all(isinstance(m, Nak) and m.reason in (NakReason.AUTH_FAILED, NakReason.REPLAYED) for m in naks)
    assert len(naks) == 3 * CFG.auth_nak_burst  # key ids 1, 2 and the rest: each its budget, no more

    attacker.send(burst)
    stopped = pump.request(Stop(command_id=pump.next_id()))
    assert stopped.state is TherapyState.STOPPED
    assert attacker.answered() == []  # the budgets are spent: dropped unanswered
    strokes = pump.truth().strokes_total
    for _ in range(6):
        attacker.send(burst[:200])
        pump.advance(10 * MINUTE)
        assert pump.status().state is TherapyState.STOPPED
    assert pump.truth().strokes_total == strokes  # stopped by ground truth: nothing moved

    attacker.send(burst)
    assert pump.start().state is TherapyState.RUNNING
    attacker.send(burst)
    before = pump.truth().delivered_ng
    assert pump.press().decision is BolusDecision.GRANTED
    pump.advance(10 * MINUTE + 5_000)
    delivered = pump.truth().delivered_ng - before
    assert DOSE_NG <= delivered <= DOSE_NG + 2 * MG * 11 // 1_440 + 2_500  # the bolus, 10 min of basal, a stroke
    pump.advance(CFG.refusal_log_every_ms)  # the last counts of failures come out
    log = pump.log(n0)
    assert [e for e in log if e.event is LogEvent.KEY_LOCKED_OUT] == []
    # Every forged frame is in the log, one by one or counted; none was acted on.
    assert auth_failures(log) == sum(attacker.sent.values())
    started = [(e.arg0, e.arg1) for e in log if e.event is LogEvent.BOLUS_STARTED]
    assert started == [(pump.command_id, BolusKind.PATIENT)]  # ours, no other
    states = [(e.arg0, e.arg1) for e in log if e.event is LogEvent.THERAPY_STATE]
    assert states == [(TherapyState.RUNNING, TherapyState.STOPPED), (TherapyState.STOPPED, TherapyState.RUNNING)]


@pytest.mark.req("SR-055")
def test_forged_frames_every_minute_all_day_never_deny_a_genuine_stop_start_status_or_bolus(procs):
    """The attack that denied 103 of 144 genuine requests in a day: forged frames under the
    clinician's key id, here three a minute, and under the patient's, one a minute, all
    day. Every ten minutes a genuine request (each hour: the patient's bolus, the
    patient's STATUS, the clinician's STOP, STATUS, START, and the patient's STATUS
    again): all 144 accepted, the boluses delivered and nothing delivered while stopped,
    by ground truth."""
    pump = running(procs)
    attacker = Attacker(pump, overhear(pump), seed=1)
    per_minute = ["clinician", "clinician", "replay", "patient"]
    answered = 0
    for hour in range(24):
        for slot in range(6):
            if slot == 0:
                before = pump.truth().delivered_ng
                assert pump.press().decision is BolusDecision.GRANTED, f"hour {hour}"
            elif slot == 1:
                st = pump.status(Role.PATIENT)
                assert st.state is TherapyState.RUNNING and not st.bolus_active
                assert pump.truth().delivered_ng - before >= DOSE_NG, f"hour {hour}: the bolus was not delivered"
            elif slot == 2:
                assert pump.request(Stop(command_id=pump.next_id())).state is TherapyState.STOPPED
                strokes = pump.truth().strokes_total
            elif slot == 3:
                assert pump.status().state is TherapyState.STOPPED
            elif slot == 4:
                assert pump.truth().strokes_total == strokes, f"hour {hour}: delivery while stopped"
                assert pump.request(Start(command_id=pump.next_id())).state is TherapyState.RUNNING
            else:
                assert pump.status(Role.PATIENT).state is TherapyState.RUNNING
            answered += len(attacker.answered())
            for _ in range(10):
                attacker.send(per_minute)
                pump.advance(MINUTE)
    log = pump.log()
    assert [e for e in log if e.event is LogEvent.KEY_LOCKED_OUT] == []
    granted = [e for e in log if e.event is LogEvent.BOLUS_REQUEST and e.arg1 == BolusDecision.GRANTED]
    finished = [e for e in log if e.event is LogEvent.BOLUS_FINISHED and e.arg1 == BolusOutcome.COMPLETED]
    assert len(granted) == 24 and len(finished) == 24
    # Answered within the NAK budgets: per key id the burst and one a minute at most.
    assert answered <= 3 * (CFG.auth_nak_burst + 24 * 60 * MINUTE // CFG.auth_nak_every_ms)


# ============================================================ SR-056: records no flood can wipe


@pytest.mark.req("SR-056")
def test_ten_thousand_refused_patient_requests_leave_every_therapy_record_readable(procs):
    """The patient's key sends 10,000 requests the pump refuses: bolus presses inside the
    lockout (7,000), STOPs it may not send (2,000), presses with a command id already
    used (1,000). Every one is answered; every entry the log held is still there,
    unchanged; the refusals are logged one by one within their budget and counted beyond
    it, every one of them accounted for."""
    pump = running(procs)
    assert pump.press().decision is BolusDecision.GRANTED
    pump.advance(20 * MINUTE)
    before = pump.log()
    assert {LogEvent.PROGRAM_ACCEPTED, LogEvent.REFILL_COMPLETE, LogEvent.BOLUS_STARTED} <= {e.event for e in before}
    requests: list[tuple[Message, Role]] = []
    for i in range(10_000):
        if i % 10 < 7:
            pressed = pump.next_id()
            requests.append((BolusRequest(command_id=pressed), Role.PATIENT))
        elif i % 10 < 9:
            requests.append((Stop(command_id=pump.next_id()), Role.PATIENT))
        else:
            requests.append((BolusRequest(command_id=pressed), Role.PATIENT))  # sent again
    answers = pipelined(pump, requests)
    kinds = Counter(
        a.decision.name if isinstance(a, BolusRequestAck) else a.reason.name if isinstance(a, Nak) else type(a).NAME
        for a in answers
    )
    assert kinds == {"LOCKOUT": 7_000, "NOT_PERMITTED": 2_000, "WRONG_STATE": 1_000}
    after = pump.log()
    assert after[: len(before)] == before, "an entry was pushed out of the log or changed"
    new = after[len(before) :]
    assert len(new) <= 3 * CFG.refusal_log_burst  # time stood still: each kind its burst
    pump.advance(CFG.refusal_log_every_ms)  # the counts are logged when their budget comes back
    log = pump.log(before[-1].seq + 1)
    assert counted(log, LogEvent.BOLUS_REQUEST) == 7_000
    assert counted(log, LogEvent.NOT_PERMITTED) == 2_000
    assert counted(log, LogEvent.COMMAND_REFUSED) == 1_000
    assert pump.log()[: len(before)] == before
    # The pump still serves the patient: the next bolus, once the lockout is over.
    pump.advance(HOUR)
    assert pump.press().decision is BolusDecision.GRANTED


@pytest.mark.req("SR-056")
def test_a_month_of_forged_frames_and_refused_presses_leaves_every_therapy_record_readable(procs):
    """Thirty days of therapy (basal, the patient's boluses, a reprogramming every ten
    days, a refill on day 15, a stop and start every week) while every hour brings thirty
    forged frames (six of each kind: under the clinician's and the patient's key ids,
    unsigned, another key id, replays) and fourteen presses, most refused: some 21,600
    forged frames and 10,080 presses in all. Every therapy record of the month is still
    readable through LOG_READ, each bolus the ground truth shows is in it, and every
    forged frame and refused press is in it, one by one or counted."""
    pump = running(procs, basal_ng_per_day=MG, bolus=(DOSE_NG, 600, 3 * 3_600, 6))
    attacker = Attacker(pump, overhear(pump), seed=2)
    start = pump.log()
    programs, granted, state_changes = [], [], 0
    presses = 0
    hourly = [k for k in Attacker.KINDS for _ in range(6)]
    for day in range(30):
        if day in (10, 20):
            programs.append(pump.next_id())
            basal = MG + (day // 10) * MG // 10
            rx = {"basal": ((0, basal),), "bolus": (DOSE_NG, 600, 3 * 3_600, 6), "max_dose_24h_ng": 5 * MG}
            pump.request(program_message(programs[-1], **rx))
        if day == 15:
            pump.request(RefillBegin(command_id=pump.next_id()))
            gt = pump.truth()
            pump.sim(
                SimRefill(withdraw_nl=gt.reservoir_nl, add_nl=FILL_NL, concentration_ng_per_ml=CONC, into_pocket=False)
            )
            pump.request(
                RefillComplete(
                    command_id=pump.next_id(),
                    withdrawn_nl=gt.reservoir_nl,
                    added_nl=FILL_NL,
                    drug="morphine",
                    concentration_ng_per_ml=CONC,
                )
            )
            state_changes += 2
        if day % 7 == 3:
            assert pump.request(Stop(command_id=pump.next_id())).state is TherapyState.STOPPED
            pump.advance(10 * MINUTE)
            assert pump.start().state is TherapyState.RUNNING
            state_changes += 2
        for _ in range(24):
            attacker.send(hourly)
            answers = pipelined(pump, [(BolusRequest(command_id=pump.next_id()), Role.PATIENT) for _ in range(14)])
            assert all(isinstance(a, BolusRequestAck) for a in answers), f"day {day}: a press refused: {answers}"
            presses += 14
            first = pump.command_id - 13
            granted += [first + i for i, a in enumerate(answers) if a.decision is BolusDecision.GRANTED]
            attacker.answered()
            pump.advance(HOUR)
    pump.advance(CFG.refusal_log_every_ms)  # the last counts come out
    log = pump.log()
    new = log[len(start) :]
    assert log[: len(start)] == start, "a record from before the month was pushed out"
    # Every therapy record of the month: the programs, the refill, the boluses, the
    # state changes, the deliveries (each whole mL, against the ground truth).
    month = [e for e in log[len(start) :] if is_therapy(e)]
    assert [e.arg0 for e in month if e.event is LogEvent.PROGRAM_ACCEPTED] == programs
    assert [e.event for e in month if e.event in (LogEvent.REFILL_BEGIN, LogEvent.REFILL_COMPLETE)] == [
        LogEvent.REFILL_BEGIN,
        LogEvent.REFILL_COMPLETE,
    ]
    assert [e.arg0 for e in month if e.event is LogEvent.BOLUS_REQUEST] == granted
    assert [e.arg0 for e in month if e.event is LogEvent.BOLUS_STARTED] == granted
    assert [e.arg0 for e in month if e.event is LogEvent.BOLUS_FINISHED] == granted
    assert len([e for e in month if e.event is LogEvent.THERAPY_STATE]) == state_changes
    assert 5 * 30 <= len(granted) <= 6 * 30
    milestones = [e.arg0 for e in log if e.event is LogEvent.DELIVERY_MILESTONE]
    assert milestones == list(range(1, pump.truth().delivered_nl // 1_000_000 + 1))
    delivered_ng = pump.truth().delivered_ng
    assert delivered_ng >= len(granted) * DOSE_NG + 30 * MG * 9 // 10  # the boluses on top of basal
    # Every forged frame and every refused press is in the log, one by one or counted,
    # within the bound SR-056 states: per kind the burst and one an interval.
    assert auth_failures(new) == sum(attacker.sent.values())
    assert counted(new, LogEvent.BOLUS_REQUEST) == presses - len(granted)
    noise = [e for e in new if not is_therapy(e)]
    per_kind = CFG.refusal_log_burst + 31 * DAY // CFG.refusal_log_every_ms
    assert len(noise) <= 4 * per_kind  # key ids 1, 2 and the rest, and denied presses


@pytest.mark.req("SR-055")
def test_a_frame_signed_at_the_top_of_the_counter_range_does_not_kill_the_key(procs):
    """Bug: a frame signed (by a faulty host, with the real key) at counter 2**64 - 1 was
    accepted and stored, so no counter was left above it: the clinician's key was dead for
    good, every later request REPLAYED. Now a counter at or above 2**63 is refused and
    nothing is stored."""
    pump = running(procs)
    key = pump.emulator.keys()[Role.CLINICIAN]
    for counter in (COUNTER_MAX, COUNTER_CEILING):

        def at_top(head: bytes, counter: int = counter) -> bytes:
            prefix = AUTH_PREFIX.pack(Role.CLINICIAN, counter)
            return prefix + compute_tag(key, head + prefix)

        seq = 0x7A00 + counter % 7
        reply = send_frame(pump.client, codec.encode(Stop(command_id=pump.next_id()), seq, at_top), seq)
        assert isinstance(reply, Nak) and reply.reason is NakReason.AUTH_FAILED
        assert "top of its range" in reply.detail
    assert pump.status().state is TherapyState.RUNNING  # neither STOP was acted on
    pump.request(Stop(command_id=pump.next_id()))  # the key still works, with an ordinary counter
    assert pump.status().state is TherapyState.STOPPED


@pytest.mark.req("SR-059")
def test_a_revoked_patient_key_stays_refused_after_a_power_cycle_and_a_replaced_one_takes_over(procs):
    """A lost handset: its key was valid for the life of the pump. Now the clinician revokes
    it (refused at once and after a power cycle), then issues a new one, which works while
    the old stays refused, across another power cycle. The patient cannot do either, and
    the clinician's own key cannot be revoked."""
    pump = running(procs)
    keys = pump.emulator.keys()
    sock = str(pump.emulator.state_dir / SOCKET_NAME)
    old = Client(sock, keys, Role.PATIENT)
    assert old.status().state is TherapyState.RUNNING
    with pytest.raises(Refused) as r:  # a patient cannot change keys
        old.request(KeyUpdate(command_id=old.next_command_id(), role=Role.PATIENT, wrapped_key=b""), Role.PATIENT)
    assert r.value.reason is NakReason.NOT_PERMITTED
    with pytest.raises(Refused) as r:
        pump.client.update_key(Role.CLINICIAN, None)
    assert (r.value.reason, r.value.field) == (NakReason.OUT_OF_RANGE, "role")
    assert pump.client.update_key(Role.PATIENT, None).revoked
    for _ in range(2):
        with pytest.raises(Refused) as r:
            old.status()
        assert r.value.reason is NakReason.AUTH_FAILED and "patient key was revoked" in r.value.nak.detail
        pump.client.power_cycle()
    fresh_key = new_key()
    assert not pump.client.update_key(Role.PATIENT, fresh_key).revoked
    fresh = Client(sock, {**keys, Role.PATIENT: fresh_key}, Role.PATIENT)
    for _ in range(2):
        assert fresh.status().state is TherapyState.RUNNING
        with pytest.raises(Refused):
            old.status()
        pump.client.power_cycle()
    updates = [(e.arg0, e.arg1) for e in pump.log() if e.event is LogEvent.KEY_UPDATED]
    assert updates == [(Role.PATIENT, 1), (Role.PATIENT, 0)]
    old.close()
    fresh.close()
