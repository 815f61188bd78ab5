"""Unit tests of issue 12's alarm rules (items 4-6): the stopped-pump reminder
(rules/reminder.py, SR-050), recovery by policy (rules/recovery.py, SR-051, SR-052), the
drug library's `withdrawal` and `[drug.recovery]` (firmware/board/druglib.py), and a
START refused while halted (rules/start.py). Then the firmware on the fake pump, for
what the HIL tests cannot place as exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest

from firmware.alarms import PRIORITY
from firmware.board.druglib import DrugLibraryError, load_library
from firmware.config import FirmwareConfig
from firmware.druglib import DrugLibrary
from firmware.nvm import MemoryNvm
from firmware.rules import ready, recovery, reminder, start
from firmware.rules.recovery import LatchedAlarm, Policy
from protocol.codes import AlarmId, LogEvent, NakReason, Priority, TherapyState
from protocol.messages import (
    AlarmAck,
    AlarmAckAck,
    Nak,
    ProgramAck,
    RefillBegin,
    RefillBeginAck,
    RefillComplete,
    RefillCompleteAck,
    Start,
    Status,
    StatusAck,
    Stop,
    StopAck,
)
from tests.fake_pump import DRUGS, FakePump
from tests.test_firmware_controller import ok, program, read_log, setup

MIN = 60_000
H = 3_600_000
STOPPED, RUNNING, REFILL, HALTED = (
    TherapyState.STOPPED,
    TherapyState.RUNNING,
    TherapyState.REFILL,
    TherapyState.HALTED,
)
GOOD = 'unit = "mg"\nmax_concentration_ng_per_ml = 1000\nmax_daily_dose_ng = 1000\n'


# ============================================================ rules/reminder.py (SR-050)


def facts(**kw) -> reminder.StoppedFacts:
    f = {
        "now_ms": 10 * H,
        "state": STOPPED,
        "commissioned": True,
        "stopped_since_ms": 9 * H,
        "remind_after_ms": H,
        "withdrawal_dangerous": False,
    }
    return reminder.StoppedFacts(**{**f, **kw})


def test_rule_reminder_is_present_once_therapy_has_not_run_for_the_reminder_time():
    assert reminder.therapy_stopped(facts()) == reminder.Reminder(True, Priority.LOW, None)
    assert reminder.therapy_stopped(facts(now_ms=10 * H - 1)) == reminder.Reminder(False, Priority.LOW, 10 * H)
    assert reminder.therapy_stopped(facts(remind_after_ms=2 * H)) == reminder.Reminder(False, Priority.LOW, 11 * H)


def test_rule_reminder_is_medium_for_a_drug_whose_withdrawal_is_dangerous():
    assert reminder.therapy_stopped(facts(withdrawal_dangerous=True)).priority is Priority.MEDIUM
    assert reminder.therapy_stopped(facts(withdrawal_dangerous=True, now_ms=9 * H)).priority is Priority.MEDIUM


@pytest.mark.parametrize(
    ("kw", "present"),
    [
        ({"state": STOPPED}, True),
        ({"state": REFILL}, True),  # a refill left open delivers nothing either
        ({"state": RUNNING}, False),
        ({"state": HALTED}, False),  # the high alarm that halted it says so already
        ({"state": TherapyState.BOOT}, False),
        ({"commissioned": False}, False),  # no prescription, or a pump never filled
        ({"stopped_since_ms": None}, False),
    ],
)
def test_rule_reminder_only_for_a_commissioned_pump_left_stopped_or_in_a_refill(kw, present):
    r = reminder.therapy_stopped(facts(**kw))
    assert r.present is present
    if not present:
        assert r.due_ms is None


def test_rule_reminder_count_goes_on_across_a_short_run_and_starts_afresh_after_a_long_one():
    after = reminder.stopped_since_after_run
    # Stopped from 0, ran from 50 min to 55 min: 50 min counted, so it goes on from 5 min.
    assert after(0, 50 * MIN, 55 * MIN, H) == 5 * MIN
    # A run of the reminder time or longer: afresh.
    assert after(0, 50 * MIN, 50 * MIN + H, H) == 50 * MIN + H
    assert after(0, 50 * MIN, 50 * MIN + H - 1, H) == H - 1
    # Nothing counted yet, or no run known (a pump that booted running): afresh.
    assert after(None, 50 * MIN, 55 * MIN, H) == 55 * MIN
    assert after(0, None, 55 * MIN, H) == 55 * MIN


def test_rule_reminder_is_low_priority_by_default():
    assert PRIORITY[AlarmId.THERAPY_STOPPED] is Priority.LOW


# ============================================================ rules/recovery.py (SR-051, SR-052)


def test_rule_recovery_defaults_cover_exactly_the_high_priority_alarms():
    assert set(recovery.DEFAULTS) == {a for a, p in PRIORITY.items() if p is Priority.HIGH}
    assert recovery.DEFAULTS[AlarmId.MOTOR_STALL] is Policy.RESUME
    assert {a for a, p in recovery.DEFAULTS.items() if p is Policy.RESUME} == {AlarmId.MOTOR_STALL}
    assert set(recovery.HOLD_ONLY) == {
        AlarmId.EMPTY_RESERVOIR,
        AlarmId.MEMORY_ERROR,
        AlarmId.BATTERY_EOS,
        AlarmId.PUMP_LINK_LOST,
    }
    assert all(recovery.DEFAULTS[a] is Policy.HOLD for a in recovery.HOLD_ONLY)


@pytest.mark.parametrize("policy", list(Policy))
@pytest.mark.parametrize("priority", list(Priority))
@pytest.mark.parametrize("present", [True, False])
@pytest.mark.parametrize("recovered", [True, False])
def test_rule_recovery_truth_table(policy, priority, present, recovered):
    a = LatchedAlarm(priority, present, recovered, policy)
    high = priority is Priority.HIGH
    # Only a high alarm ever holds therapy: while its condition holds, or after it went
    # until it is reset, unless it recovered.
    assert recovery.holds_therapy(a) is (high and (present or not recovered))
    # Its condition gone, it recovers by itself only under a resume policy.
    assert recovery.recovers(a) is (high and not present and policy is Policy.RESUME)
    # A reset is needed under a hold policy, until it has recovered.
    assert recovery.needs_reset(a) is (high and policy is Policy.HOLD and not recovered)


def test_rule_a_recovered_alarm_whose_condition_is_back_holds_therapy_again():
    assert recovery.holds_therapy(LatchedAlarm(Priority.HIGH, True, True, Policy.RESUME))


# ============================================================ the drug library


def test_rule_drug_library_marks_baclofen_dangerous_to_stop_and_no_other():
    lib = load_library()
    assert {d.name for d in lib.drugs if d.withdrawal_dangerous} == {"baclofen"}
    assert all(d.recovery == () for d in lib.drugs)  # the defaults throughout
    d = lib.get("baclofen")
    assert d.policy(AlarmId.MOTOR_STALL) is Policy.RESUME
    assert d.policy(AlarmId.OCCLUSION) is Policy.HOLD
    assert d.policy(AlarmId.LOW_RESERVOIR) is Policy.HOLD  # (not a high alarm: never asked)


def test_rule_drug_library_reads_withdrawal_and_recovery_per_drug(tmp_path):
    f = tmp_path / "drugs.toml"
    f.write_text(
        "[a]\n" + GOOD + 'withdrawal = "dangerous"\n'
        '[a.recovery]\nmotor_stall = "hold"\nocclusion = "resume"\nbattery_eos = "hold"\n'
        "[b]\n" + GOOD + 'withdrawal = "ordinary"\n'
    )
    lib = load_library(f)
    a, b = lib.get("a"), lib.get("b")
    assert a.withdrawal_dangerous and not b.withdrawal_dangerous
    assert a.policy(AlarmId.MOTOR_STALL) is Policy.HOLD and a.policy(AlarmId.OCCLUSION) is Policy.RESUME
    assert b.policy(AlarmId.MOTOR_STALL) is Policy.RESUME and b.policy(AlarmId.OCCLUSION) is Policy.HOLD


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('withdrawal = "deadly"\n', "withdrawal must be one of"),
        ("withdrawal = true\n", "withdrawal must be one of"),
        ('recovery = "resume"\n', "[bad.recovery] must be a table"),
        ('[bad.recovery]\nmotor_stal = "resume"\n', "'motor_stal' is not a high-priority alarm"),
        ('[bad.recovery]\nlow_reservoir = "hold"\n', "'low_reservoir' is not a high-priority alarm"),
        ('[bad.recovery]\nmotor_stall = "pause"\n', "motor_stall must be one of ('resume', 'hold')"),
        ("[bad.recovery]\nmotor_stall = 1\n", "motor_stall must be one of"),
        ('[bad.recovery]\nmemory_error = "resume"\n', 'memory_error can only be "hold"'),
        ('[bad.recovery]\nbattery_eos = "resume"\n', 'battery_eos can only be "hold"'),
        ('[bad.recovery]\nempty_reservoir = "resume"\n', 'empty_reservoir can only be "hold"'),
    ],
)
def test_rule_drug_library_rejects_a_bad_withdrawal_or_recovery_naming_it(tmp_path, extra, says):
    f = tmp_path / "drugs.toml"
    f.write_text("[bad]\n" + GOOD + extra)
    with pytest.raises(DrugLibraryError) as e:
        load_library(f)
    assert says in str(e.value) and str(f) in str(e.value) and "[bad" in str(e.value)


# ============================================================ rules/start.py (SR-052)


def test_rule_start_refused_while_halted_names_the_alarms_that_hold_it():
    holds = ready.ReadyFacts(
        has_prescription=True,
        holds_another_drug=None,
        high_alarm=True,
        holding=((AlarmId.OCCLUSION, True), (AlarmId.BATTERY_EOS, False)),
        reservoir_known=True,
        catheter_empty=False,
    )
    f = start.StartFacts(state=HALTED, ready=holds, reservoir_empty=False)
    r = start.refusal(f)
    assert r.reason is NakReason.WRONG_STATE
    assert r.detail == (
        "halted by occlusion (still present), battery_eos (gone, not acknowledged): "
        "acknowledge each once its condition is gone"
    )
    assert start.refusal(replace(f, ready=replace(holds, holding=()))).detail == "start needs state stopped, not halted"
    assert start.refusal(replace(f, state=STOPPED)).detail == (
        "a high-priority alarm stands: occlusion (still present), battery_eos (gone, not acknowledged)"
    )


# ============================================================ the firmware, on the fake pump


def fake(config: FirmwareConfig | None = None, nvm: MemoryNvm | None = None, drugs: DrugLibrary | None = None):
    """A fake pump with the firmware: morphine 1 mg/mL programmed, 12 mL filled, running."""
    return setup(config=config, nvm=nvm, drugs=drugs)


def alarm_of(p: FakePump, alarm: AlarmId):
    return next((a for a in ok(p.request(Status()), StatusAck).alarms if a.alarm is alarm), None)


def test_the_reminder_time_is_a_firmware_setting_and_its_count_outlives_a_reset():
    cfg = FirmwareConfig(therapy_stopped_alarm_ms=10 * MIN)
    nvm = MemoryNvm()
    p = fake(config=cfg, nvm=nvm)
    p.advance_to(H)
    ok(p.request(Stop(command_id=p.next_id())), StopAck)
    p.advance(6 * MIN)
    p.reset()  # RAM gone: only NVM holds the count
    p.advance_to(H + 10 * MIN - 1)
    assert alarm_of(p, AlarmId.THERAPY_STOPPED) is None
    p.advance_to(H + 10 * MIN)
    a = alarm_of(p, AlarmId.THERAPY_STOPPED)
    assert (a.priority, a.condition_present) == (Priority.LOW, True)
    raised = [e for e in read_log(p) if e.event is LogEvent.ALARM_RAISED]
    assert [(e.time_s, e.arg0) for e in raised] == [((H + 10 * MIN) // 1000, AlarmId.THERAPY_STOPPED)]


def test_the_reminder_priority_follows_the_drug_in_force():
    """The reminder stands for a drug whose withdrawal is ordinary; the clinician changes
    the prescription, and the refill records, a drug whose withdrawal is dangerous: the
    reminder becomes medium."""
    lib = DrugLibrary(tuple(replace(d, withdrawal_dangerous=d.name == "hydromorphone") for d in DRUGS.drugs))
    p = fake(drugs=lib)
    ok(p.request(Stop(command_id=p.next_id())), StopAck)
    p.advance(H + MIN)
    assert alarm_of(p, AlarmId.THERAPY_STOPPED).priority is Priority.LOW
    ok(p.request(program(p, drug="hydromorphone")), ProgramAck)
    ok(p.request(RefillBegin(command_id=p.next_id())), RefillBeginAck)
    done = RefillComplete(
        command_id=p.next_id(),
        withdrawn_nl=0,
        added_nl=10_000_000,
        drug="hydromorphone",
        concentration_ng_per_ml=1_000_000,
    )
    ok(p.request(done), RefillCompleteAck)
    p.advance(MIN)
    a = alarm_of(p, AlarmId.THERAPY_STOPPED)
    assert (a.priority, a.condition_present) == (Priority.MEDIUM, True)


def test_an_acknowledgement_while_a_stall_holds_never_resumes_and_the_stall_then_resumes_by_itself():
    p = fake()
    p.advance_to(H)
    p.stalled = True
    p.send_sensors()
    ack = ok(p.request(AlarmAck(alarm=AlarmId.MOTOR_STALL)), AlarmAckAck)
    assert (ack.still_active, ack.needs_reset, ack.state) == (True, False, HALTED)
    made = len(p.strokes)
    p.advance(H)
    assert len(p.strokes) == made and ok(p.request(Status()), StatusAck).state is HALTED
    refused = p.request(Start(command_id=p.next_id()))
    assert isinstance(refused, Nak) and "motor_stall (still present)" in refused.detail
    p.stalled = False
    p.send_sensors()
    assert ok(p.request(Status()), StatusAck).state is RUNNING
    # The acknowledgement given while it held only silenced it: latched until acknowledged again.
    a = alarm_of(p, AlarmId.MOTOR_STALL)
    assert (a.acknowledged, a.condition_present, a.needs_reset) == (False, False, False)
    ok(p.request(AlarmAck(alarm=AlarmId.MOTOR_STALL)), AlarmAckAck)
    assert ok(p.request(Status()), StatusAck).alarms == ()
    assert isinstance(p.request(Start(command_id=p.next_id())), Nak)  # (running already)
