"""The firmware over real ptys, tried as an attacker and a tired clinician would: every
path to the motor passes the rolling 24 h hard limit, a program cannot change what the
reservoir holds, and the controller doubts the pump's time and its own memory.

Each test is a finding of issue 11, judged by the emulator's ground truth (what left the
catheter tip), never by the firmware's own figures. Every test runs in-process or split
(`pytest --split`).
"""

from __future__ import annotations

import json

import pytest

from firmware.board.filenvm import NVM_FILE
from protocol import codec
from protocol.codes import (
    AlarmId,
    BolusDecision,
    CatheterState,
    LogEvent,
    MemoryProof,
    NakReason,
    Priority,
    Role,
    TherapyState,
)
from protocol.messages import BolusRequest, BolusRequestAck, ClinicianBolus, Prime
from protocol.schema import NONE_U32
from tests.harness import Procs, PumpHost, firmware_pump, restart_pump, send_frame
from tools.client import Refused

MG = 1_000_000  # ng
CONC = 5 * MG  # ng/mL
STROKE_NL = 500
STROKE_NG = STROKE_NL * CONC // 1_000_000
FILL_NL = 12_000_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def alarms(pump: PumpHost) -> dict[AlarmId, Priority]:
    return {a.alarm: a.priority for a in pump.status().alarms}


def events(pump: PumpHost, kind: LogEvent) -> list:
    return [e for e in pump.log() if e.event is kind]


# ============================================================ every drug stroke passes the limit


@pytest.mark.req("SR-040")
def test_bug_priming_bypassed_the_rolling_24h_hard_limit(procs):
    """Bug: the catheter was already primed, so every priming stroke pushed drug out of
    its tip, yet the firmware counted priming as no drug at all: eight PRIMEs of 0.4 mL at
    5 mg/mL an hour apart put 16 mg into the patient against a 3 mg hard limit, and START
    was accepted afterwards. Now priming into a primed catheter is drug: it counts toward
    the rolling 24 h and a PRIME that would break the limit is refused."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, MG),), max_dose_24h_ng=3 * MG)
    start = pump.truth()
    answers = []
    for _ in range(8):
        try:
            answers.append(pump.request(Prime(command_id=pump.next_id(), volume_nl=400_000)))
        except Refused as r:
            answers.append(r)
        pump.advance(HOUR)
    primed = pump.truth().delivered_ng - start.delivered_ng
    assert 2 * MG - STROKE_NG <= primed <= 2 * MG + STROKE_NG  # the one PRIME granted, all of it drug
    assert not isinstance(answers[0], Refused)
    assert all((r.reason, r.field) == (NakReason.OUT_OF_RANGE, "volume_nl") for r in answers[1:])
    assert pump.status().dose_24h_ng >= primed
    # Basal after START is held to the same limit: the 24 h from the first PRIME on.
    pump.start()
    pump.advance_to(start.time_ms + DAY)
    assert pump.truth().delivered_ng - start.delivered_ng <= 3 * MG + STROKE_NG


@pytest.mark.req("SR-041")
def test_bug_a_program_changed_the_concentration_without_a_refill(procs):
    """Bug: the reservoir held 5 mg/mL; a PROGRAM for the same mg/day at 1 mg/mL was
    accepted, so the pump pushed five times the volume of 5 mg/mL drug: 6.56 mg on the
    third day against a 3 mg hard limit, with no alarm. The concentration is a fact
    recorded at the refill; a program may only state it."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, 2 * MG),), max_dose_24h_ng=3 * MG)
    pump.start()
    pump.advance(HOUR)
    before, rx = pump.status(), pump.prescription()
    try:
        answer = pump.program(concentration_ng_per_ml=MG, basal=((0, 2 * MG),), max_dose_24h_ng=3 * MG)
    except Refused as r:
        answer = r
    for _ in range(3):
        day_start = pump.truth().delivered_ng
        pump.advance(DAY)
        assert pump.truth().delivered_ng - day_start <= 2 * MG + 2 * STROKE_NG
    assert isinstance(answer, Refused)
    assert (answer.reason, answer.field) == (NakReason.OUT_OF_RANGE, "concentration_ng_per_ml")
    assert "5 mg/mL" in answer.nak.detail and "refill" in answer.nak.detail
    after = pump.status()
    assert (after.concentration_ng_per_ml, after.last_command_id) == (CONC, before.last_command_id)
    assert pump.prescription() == rx


# ============================================================ the controller doubts time and memory


def running(procs, bolus: tuple[int, int, int, int] = (0, 0, 0, 0)) -> PumpHost:
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, 2 * MG),), bolus=bolus, max_dose_24h_ng=5 * MG)
    pump.start()
    pump.advance(HOUR)
    return pump


@pytest.mark.req("SR-042")
def test_bug_pump_time_going_back_stopped_delivery_then_paid_it_out_as_a_burst(procs):
    """Bug: the pump hardware restarted from state 12 h older than what the firmware had
    seen. The firmware waited for its last stroke's time to come round again: delivery
    stopped silently for 12 h while status said running, then the owed basal came out as a
    burst of about 11x the basal rate, and a clinician bolus was acknowledged and never
    delivered. Now the firmware keeps its own time going, raises the clock alarm, logs
    what went back, and goes on with basal at its rate."""
    pump = running(procs)
    older = (pump.emulator.state_dir / "pump.json").read_text()
    pump.advance(12 * HOUR)
    back_s = (pump.truth().time_ms - json.loads(older)["time_ms"]) // 1000  # about 12 h
    pump = restart_pump(procs, pump, lambda sd: (sd / "pump.json").write_text(older))
    per_hour_ng = 2 * MG // 24
    for _ in range(6):  # neither a silent stop nor a burst: each hour about an hour of basal
        t0 = pump.truth().delivered_ng
        pump.advance(HOUR)
        assert per_hour_ng - 2 * STROKE_NG <= pump.truth().delivered_ng - t0 <= per_hour_ng + 2 * STROKE_NG
    t0 = pump.truth().delivered_ng
    pump.request(ClinicianBolus(command_id=pump.next_id(), dose_ng=MG // 2, duration_s=600))
    pump.advance(HOUR)
    given = pump.truth().delivered_ng - t0
    assert MG // 2 + per_hour_ng - 2 * STROKE_NG <= given <= MG // 2 + per_hour_ng + 2 * STROKE_NG
    assert pump.status().state is TherapyState.RUNNING
    assert alarms(pump) == {AlarmId.CLOCK_ERROR: Priority.MEDIUM}
    (back,) = events(pump, LogEvent.CLOCK_WENT_BACK)
    # As far back as the firmware can tell: from the last time it committed (minutes
    # before the hardware's state was put back) to the older state's time.
    assert back_s - 5 * 60 <= back.arg0 <= back_s and 12 * 3_600 <= back_s


@pytest.mark.req("SR-057")
def test_a_lost_pump_json_restarted_on_new_hardware_is_stopped_and_trusts_nothing_physical(procs):
    """Issue 13: pump.json lost beside a firmware that ran therapy is refused; the user
    may start on new hardware instead, and the firmware is told (POWER_ON's reset cause):
    it stops delivery rather than resume on a guess, takes the reservoir and the
    catheter's contents as unknown, counts the odometer afresh, and raises no clock alarm
    (the cause is known). Judged by ground truth: no stroke until a fill is recorded and
    therapy started again, then basal at its rate."""
    pump = running(procs)
    sd = pump.emulator.state_dir
    old_truth = pump.truth()
    # Without the flag, the lost pump.json is refused (tests/test_emulator_hil.py); with it:
    pump = restart_pump(procs, pump, lambda d: (d / "pump.json").unlink(), emulator_args=["--new-hardware"])
    assert (sd / "pump.ckpt.replaced").exists() and (sd / "pump.json").exists()  # the old set aside, a new one
    st = pump.status()
    assert st.state is TherapyState.STOPPED
    assert st.reservoir_nl == NONE_U32  # not known until a fill is recorded
    assert st.catheter_state is CatheterState.UNKNOWN
    assert AlarmId.CLOCK_ERROR not in alarms(pump)
    (told,) = events(pump, LogEvent.HARDWARE_REPLACED)
    assert told.arg0 == 1 and told.arg1 == old_truth.strokes_total  # boot count; strokes it had counted
    assert not events(pump, LogEvent.CLOCK_WENT_BACK) and not events(pump, LogEvent.NVM_OUTDATED)
    fresh = pump.truth()
    assert fresh.strokes_total == 0 and fresh.delivered_ng == 0  # factory-new hardware
    with pytest.raises(Refused) as r:
        pump.start()
    assert r.value.reason is NakReason.WRONG_STATE
    pump.advance(2 * HOUR)
    assert pump.truth().strokes_total == 0  # nothing moved on a guess
    pump.fill(FILL_NL, CONC)
    pump.start()
    t0 = pump.truth().delivered_ng
    pump.advance(6 * HOUR)
    per_6h = 2 * MG // 4
    assert per_6h - 2 * STROKE_NG <= pump.truth().delivered_ng - t0 <= per_6h + 2 * STROKE_NG


@pytest.mark.parametrize("blank", ["zero-length", "erased"])
@pytest.mark.req("SR-044")
def test_bug_a_blank_nvm_on_a_pump_that_booted_before_was_taken_for_a_new_pump(procs, blank):
    """Bug: the NVM came back blank (zero length, or erased) on a pump whose POWER_ON boot
    count said it had booted before; the firmware took it for a new pump: prescription,
    24 h history, lockouts and auth counters silently gone, so once reprogrammed the
    patient got boluses beyond the allotted count in 24 h. Now that is a critical memory
    error: high alarm, halted (nothing delivered), patient boluses denied for a day."""
    bolus = (100_000, 600, 3_600, 2)  # two a day
    pump = running(procs, bolus=bolus)
    for _ in range(2):
        pump.advance(HOUR)
        assert pump.press().decision is BolusDecision.GRANTED

    def wipe(sd):
        path = sd / NVM_FILE
        path.write_bytes(b"" if blank == "zero-length" else bytes(path.stat().st_size))

    pump = restart_pump(procs, pump, wipe)
    held = pump.truth().delivered_ng
    pump.advance(2 * HOUR)
    assert pump.truth().delivered_ng == held  # nothing delivered on a memory it cannot vouch for
    booted = pump.status()
    for a in booted.alarms:  # the clinician acknowledges what stands, fills, programs, starts
        pump.ack(a.alarm)
    pump.fill(pump.truth().reservoir_nl, CONC)
    pump.program(basal=((0, 2 * MG),), bolus=bolus, max_dose_24h_ng=5 * MG)
    pump.start()
    pump.advance(2 * HOUR)
    t0 = pump.truth().delivered_ng
    decision = pump.press().decision
    pump.advance(HOUR)
    assert pump.truth().delivered_ng - t0 <= 2 * MG // 24 + 2 * STROKE_NG  # basal only: no third bolus in 24 h
    assert decision is BolusDecision.LOCKOUT  # the 24 h it cannot vouch for denies patient boluses for a day
    assert booted.state is TherapyState.HALTED
    assert {a.alarm: a.priority for a in booted.alarms}[AlarmId.MEMORY_ERROR] is Priority.HIGH
    (proof,) = events(pump, LogEvent.NVM_OUTDATED)
    assert proof.arg0 == MemoryProof.BLANK_AFTER_BOOTS


@pytest.mark.req("SR-044")
def test_bug_an_nvm_rolled_back_to_an_older_copy_granted_a_replayed_bolus_inside_its_lockout(procs):
    """Bug: the NVM file was put back to a copy from before a patient bolus: the old
    lockout, bolus count and auth counters came back, and the bolus request captured on
    the link was replayed and granted inside its lockout. The pump's odometer proves the
    NVM older than the hardware (strokes no run it recorded could have made): now that is
    a critical memory error, and the replay changes nothing."""
    pump = running(procs, bolus=(100_000, 600, 3_600, 6))
    pump.advance(HOUR)  # past the lockout that programming started
    nvm = pump.emulator.state_dir / NVM_FILE
    older = nvm.read_bytes()
    client = pump.client
    client._seq = seq = (client._seq + 1) & 0xFFFF
    wire = codec.encode(BolusRequest(command_id=pump.next_id()), seq, client._signers[Role.PATIENT])
    granted = send_frame(client, wire, seq)
    assert isinstance(granted, BolusRequestAck) and granted.decision is BolusDecision.GRANTED
    pump.advance(20 * MINUTE)
    pump = restart_pump(procs, pump, lambda sd: (sd / NVM_FILE).write_bytes(older))
    held = pump.truth().delivered_ng
    replayed = send_frame(pump.client, wire, seq)
    pump.advance(HOUR)
    assert pump.truth().delivered_ng == held  # no bolus, and halted
    assert not (isinstance(replayed, BolusRequestAck) and replayed.decision is BolusDecision.GRANTED)
    assert pump.status().state is TherapyState.HALTED
    assert alarms(pump)[AlarmId.MEMORY_ERROR] is Priority.HIGH
    (proof,) = events(pump, LogEvent.NVM_OUTDATED)
    assert proof.arg0 == MemoryProof.ODOMETER_AHEAD and proof.arg1 > 0


@pytest.mark.req("SR-043")
def test_basal_owed_for_hours_is_given_up_not_caught_up(procs):
    """A lower hard limit programmed over a day of a higher rate holds basal back for
    hours, until the old delivery leaves the rolling 24 h. The basal owed meanwhile is
    not paid out when room comes back (that would be hours of drug in minutes, held only
    by the hard limit): beyond the catch-up limit (2 h) it is given up, and logged."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, 10 * MG),), max_dose_24h_ng=12 * MG)
    pump.start()
    pump.advance(DAY)
    pump.program(basal=((0, 2 * MG),), max_dose_24h_ng=3 * MG)
    held = pump.truth().delivered_ng
    pump.advance(12 * HOUR)
    assert pump.truth().delivered_ng == held  # 10 mg in the window: nothing fits under 3 mg
    while pump.truth().delivered_ng == held:  # the window drains, then room comes back
        pump.advance(10 * MINUTE)
    resumed = pump.truth().delivered_ng
    pump.advance(2 * HOUR)
    two_hours = 2 * MG // 12
    # Two hours of basal, and at most two more owed from before (the catch-up limit).
    assert pump.truth().delivered_ng - resumed <= 2 * two_hours + 2 * STROKE_NG
    (forfeited,) = events(pump, LogEvent.BASAL_FORFEITED)[:1]
    assert forfeited.arg0 > 0 and forfeited.arg1 == forfeited.arg0 * STROKE_NG
    assert pump.status().state is TherapyState.RUNNING
