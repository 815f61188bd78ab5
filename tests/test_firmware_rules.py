"""Rules of the firmware's pure modules: the patient bolus rule, alarms, the event log, the
reservoir, the run rules the guard asks, the therapy state machine and catheter
bridging. Fixed inputs and fakes only: no ports, no processes, no controller.

Prescription and drug library rules: tests/test_firmware_prescription.py; the dose engine:
tests/test_firmware_dose.py; the rolling 24 h history: tests/test_firmware_history.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.alarms import AlarmSet
from firmware.catheter import Catheter
from firmware.config import FirmwareConfig
from firmware.delivery import Fill
from firmware.eventlog import EventLog
from firmware.reservoir import Reservoir
from firmware.rules import reservoir as reservoir_rule
from firmware.rules.limit24h import Window, strokes_within
from firmware.rules.occlusion import confirmed as occlusion_confirmed
from firmware.rules.patient_bolus import BolusFacts, decide
from firmware.rules.run import Purpose, RunFacts, Stop, StrokeFacts, refusal, stroke_refusal
from firmware.therapy import Therapy, diagram_document
from protocol.codes import AlarmId, BeepPattern, BolusDecision, CatheterState, LogEvent, Priority, TherapyState
from tests.strategies import scaled

FG = 1_000_000  # fg per ng
MG = 1_000_000  # ng per mg
MIN = 60_000
H = 3_600_000
DAY = 86_400_000
ROOT = Path(__file__).resolve().parent.parent

# ================================================================ the patient bolus rule

NOW = 40 * DAY + 123_456
GRANTABLE = BolusFacts(
    now_ms=NOW,
    running=True,
    has_patient_bolus=True,
    high_alarm_active=False,
    bolus_active_until_ms=None,
    lockout_until_ms=NOW - 1,
    boluses_in_window=2,
    max_per_24h=6,
    oldest_start_in_window_ms=NOW - 20 * H,
    dose_fg=2 * MG * FG,  # into an empty window with no basal: 2 of the 3 mg allowed
    window=Window(
        now_ms=NOW,
        local_ms=NOW,
        past_per_minute_fg=(0,) * 1441,
        basal=(),
        owed_fg=0,
        max_dose_24h_fg=3 * MG * FG,
        stroke_fg=100,
    ),
    reservoir_nl=5_000_000,
    bolus_volume_nl=20_000,
    empty_level_nl=1_000_000,
)

# Each denial, in the order the rule checks them, with the facts that trigger it.
DENIALS: list[tuple[BolusDecision, dict]] = [
    (BolusDecision.NOT_RUNNING, {"running": False}),
    (BolusDecision.NO_PATIENT_BOLUS, {"has_patient_bolus": False}),
    (BolusDecision.ALARM_ACTIVE, {"high_alarm_active": True}),
    (BolusDecision.BOLUS_IN_PROGRESS, {"bolus_active_until_ms": NOW + 5 * MIN}),
    (BolusDecision.LOCKOUT, {"lockout_until_ms": NOW + H}),
    (BolusDecision.COUNT_LIMIT, {"boluses_in_window": 6}),
    (BolusDecision.DOSE_LIMIT, {"dose_fg": 3 * MG * FG + 1}),
    (BolusDecision.RESERVOIR, {"reservoir_nl": 1_000_000 + 20_000 - 1}),
]


def facts(**changes: object) -> BolusFacts:
    return dataclasses.replace(GRANTABLE, **changes)


def test_rule_patient_bolus_granted_when_every_rule_holds():
    v = decide(GRANTABLE)
    assert v.granted and v.decision is BolusDecision.GRANTED
    assert v.next_available_at_ms is None


@pytest.mark.parametrize(("reason", "changes"), DENIALS, ids=[d.name for d, _ in DENIALS])
def test_rule_patient_bolus_each_denial_reason(reason, changes):
    v = decide(facts(**changes))
    assert v.decision is reason
    assert not v.granted


@pytest.mark.parametrize("i", range(len(DENIALS)), ids=[d.name for d, _ in DENIALS])
def test_rule_patient_bolus_denial_reasons_take_precedence_in_order(i):
    # With this reason and every later one true at once, this one is the answer.
    changes: dict = {}
    for _, c in DENIALS[i:]:
        changes.update(c)
    assert decide(facts(**changes)).decision is DENIALS[i][0]


@pytest.mark.parametrize(
    "changes",
    [{"running": False}, {"has_patient_bolus": False}, {"high_alarm_active": True}],
)
def test_rule_patient_bolus_denied_for_state_says_no_time(changes):
    assert decide(facts(**changes)).next_available_at_ms is None


def test_rule_patient_bolus_denied_during_lockout_says_when_next_available():
    v = decide(facts(lockout_until_ms=NOW + 37 * MIN))
    assert v.decision is BolusDecision.LOCKOUT
    assert v.next_available_at_ms == NOW + 37 * MIN
    assert decide(facts(lockout_until_ms=NOW)).granted  # the lockout ends at its end


def test_rule_patient_bolus_denied_while_a_bolus_runs_says_the_later_of_its_end_and_the_lockout():
    v = decide(facts(bolus_active_until_ms=NOW + 5 * MIN, lockout_until_ms=NOW + H))
    assert (v.decision, v.next_available_at_ms) == (BolusDecision.BOLUS_IN_PROGRESS, NOW + H)
    v = decide(facts(bolus_active_until_ms=NOW + 5 * MIN, lockout_until_ms=NOW - MIN))
    assert (v.decision, v.next_available_at_ms) == (BolusDecision.BOLUS_IN_PROGRESS, NOW + 5 * MIN)


def test_rule_patient_bolus_count_limit_says_oldest_start_plus_24h():
    v = decide(facts(boluses_in_window=6, oldest_start_in_window_ms=NOW - 23 * H - 17))
    assert v.decision is BolusDecision.COUNT_LIMIT
    assert v.next_available_at_ms == NOW - 23 * H - 17 + DAY
    assert decide(facts(boluses_in_window=5)).granted


def test_rule_patient_bolus_dose_limit_says_when_enough_old_delivery_leaves_the_window():
    # 700 fg in the window's minute 100 and 500 in minute 200 (index 1440 is the current
    # minute); the dose leaves room for 200 fg, so 1000 fg must leave. A minute at index j
    # is wholly more than 24 h old once the minute j + 1 after the current one starts.
    past = [0] * 1441
    past[100], past[200] = 700, 500
    w = dataclasses.replace(GRANTABLE.window, past_per_minute_fg=tuple(past))
    v = decide(facts(window=w, dose_fg=3 * MG * FG - 200))
    assert v.decision is BolusDecision.DOSE_LIMIT
    assert v.next_available_at_ms == (NOW // MIN + 201) * MIN
    assert decide(facts(window=w, dose_fg=3 * MG * FG - 1_200)).granted  # at the limit is within it


def test_rule_patient_bolus_dose_limit_with_no_room_foreseeable_says_no_time():
    past = [0] * 1441
    past[5] = 10
    w = dataclasses.replace(GRANTABLE.window, past_per_minute_fg=tuple(past))
    v = decide(facts(window=w, dose_fg=3 * MG * FG + 1))
    assert (v.decision, v.next_available_at_ms) == (BolusDecision.DOSE_LIMIT, None)


def test_rule_patient_bolus_reservoir_must_hold_the_dose_above_the_empty_level():
    assert decide(facts(reservoir_nl=1_000_000 + 20_000)).granted
    v = decide(facts(reservoir_nl=1_000_000 + 20_000 - 1))
    assert (v.decision, v.next_available_at_ms) == (BolusDecision.RESERVOIR, None)


# ================================================================ alarms

CFG = FirmwareConfig()


def tones(alarms: AlarmSet, until: int) -> list[tuple[int, BeepPattern]]:
    """What the beeper plays up to `until`, waking only when the alarm set asks to."""
    out = []
    while (t := alarms.next_tone_ms()) is not None and t <= until:
        p = alarms.tones_due(t)
        assert p is not None, "woken for a tone that did not sound"
        out.append((t, p))
    return out


def test_rule_alarm_priorities_follow_the_domain_notes():
    a = AlarmSet(CFG)
    high = {AlarmId.EMPTY_RESERVOIR, AlarmId.MOTOR_STALL, AlarmId.OCCLUSION, AlarmId.BATTERY_EOS, AlarmId.MEMORY_ERROR}
    medium = {AlarmId.LOW_RESERVOIR, AlarmId.BATTERY_ERI, AlarmId.REFILL_DISCREPANCY, AlarmId.DELIVERY_SHORTFALL}
    for alarm in AlarmId:
        a.condition(alarm, True, 0)
    for alarm in high:
        assert a.active[alarm].priority is Priority.HIGH
    for alarm in medium:
        assert a.active[alarm].priority is Priority.MEDIUM
    assert a.active[AlarmId.THERAPY_STOPPED].priority is Priority.LOW  # a reminder (medium by drug: SR-050)


def test_rule_alarm_latches_when_its_condition_goes_without_acknowledgement():
    a = AlarmSet(CFG)
    assert a.condition(AlarmId.LOW_RESERVOIR, True, 1_000) == "raised"
    assert a.condition(AlarmId.LOW_RESERVOIR, True, 2_000) is None  # already raised
    assert a.condition(AlarmId.LOW_RESERVOIR, False, 3_000) == "changed"  # latched, not cleared
    assert AlarmId.LOW_RESERVOIR in a.active
    assert not a.active[AlarmId.LOW_RESERVOIR].condition
    assert a.tones_due(1_000 + H) is BeepPattern.SINGLE_TONE  # a latched alarm still sounds
    assert a.acknowledge(AlarmId.LOW_RESERVOIR, 4_000) == (True, "cleared")
    assert a.active == {}


def test_rule_alarm_acknowledge_silences_but_does_not_clear_while_the_condition_holds():
    a = AlarmSet(CFG)
    a.condition(AlarmId.OCCLUSION, True, 0)
    assert a.acknowledge(AlarmId.OCCLUSION, 1_000) == (True, None)
    assert AlarmId.OCCLUSION in a.active and a.active[AlarmId.OCCLUSION].acknowledged
    assert a.holds_therapy()
    # Once acknowledged, the condition going clears it.
    assert a.condition(AlarmId.OCCLUSION, False, 2_000) == "cleared"
    assert a.active == {}
    assert not a.holds_therapy()


def test_rule_alarm_raised_again_after_clearing_needs_a_new_acknowledgement():
    a = AlarmSet(CFG)
    a.condition(AlarmId.MOTOR_STALL, True, 0)
    a.acknowledge(AlarmId.MOTOR_STALL, 10)
    a.condition(AlarmId.MOTOR_STALL, False, 20)
    assert a.condition(AlarmId.MOTOR_STALL, True, 30) == "raised"
    s = a.active[AlarmId.MOTOR_STALL]
    assert (s.raised_ms, s.acknowledged, s.condition) == (30, False, True)
    assert a.tones_due(30) is BeepPattern.TWO_TONE  # sounds at once, not after a silence


def test_rule_alarm_condition_returning_while_latched_needs_acknowledging_again():
    a = AlarmSet(CFG)
    a.condition(AlarmId.OCCLUSION, True, 0)
    a.condition(AlarmId.OCCLUSION, False, 10)
    assert a.condition(AlarmId.OCCLUSION, True, 20) == "changed"  # still the same latched alarm, not raised again
    assert a.active[AlarmId.OCCLUSION].condition
    assert a.acknowledge(AlarmId.OCCLUSION, 30) == (True, None)  # condition holds: stays
    assert AlarmId.OCCLUSION in a.active


def test_rule_alarm_holds_therapy_while_a_latched_high_alarm_stands_until_acknowledged_or_recovered():
    a = AlarmSet(CFG)
    a.condition(AlarmId.LOW_RESERVOIR, True, 0)
    assert not a.holds_therapy()
    a.condition(AlarmId.EMPTY_RESERVOIR, True, 0)
    a.condition(AlarmId.EMPTY_RESERVOIR, False, 10)
    assert a.holds_therapy() and not a.active[AlarmId.EMPTY_RESERVOIR].condition
    a.acknowledge(AlarmId.EMPTY_RESERVOIR, 20)
    assert not a.holds_therapy()
    # A recovered one (a resume policy: firmware/supervisor.py marks it) is latched and holds nothing.
    a.condition(AlarmId.MOTOR_STALL, True, 30)
    assert [x.alarm for x in a.holding()] == [AlarmId.MOTOR_STALL]
    a.condition(AlarmId.MOTOR_STALL, False, 40)
    a.active[AlarmId.MOTOR_STALL].recovered = True
    assert not a.holds_therapy() and a.holding() == [] and AlarmId.MOTOR_STALL in a.active
    # Its condition coming back holds therapy again, and it needs a new acknowledgement.
    assert a.condition(AlarmId.MOTOR_STALL, True, 50) == "changed"
    s = a.active[AlarmId.MOTOR_STALL]
    assert a.holds_therapy() and not s.recovered and not s.acknowledged


def test_rule_alarm_acknowledging_or_clearing_an_absent_alarm_changes_nothing():
    a = AlarmSet(CFG)
    assert a.acknowledge(AlarmId.OCCLUSION, 0) == (False, None)
    assert a.condition(AlarmId.OCCLUSION, False, 0) is None
    assert not a.clear(AlarmId.LOW_RESERVOIR)
    a.condition(AlarmId.LOW_RESERVOIR, True, 0)
    assert a.clear(AlarmId.LOW_RESERVOIR)  # refill completion clears outright
    assert a.active == {}


def test_rule_alarm_high_priority_sounds_two_tone_every_five_minutes():
    a = AlarmSet(CFG)
    a.condition(AlarmId.OCCLUSION, True, 1_000)
    assert tones(a, 1_000 + 16 * MIN) == [(1_000 + k * 5 * MIN, BeepPattern.TWO_TONE) for k in range(4)]


def test_rule_alarm_medium_priority_sounds_a_single_tone_hourly():
    a = AlarmSet(CFG)
    a.condition(AlarmId.LOW_RESERVOIR, True, 0)
    assert tones(a, 3 * H) == [(k * H, BeepPattern.SINGLE_TONE) for k in range(4)]


def test_rule_alarm_tones_repeat_at_the_configured_intervals():
    a = AlarmSet(FirmwareConfig(tone_interval_high_ms=7_000, tone_interval_medium_ms=11_000))
    a.condition(AlarmId.OCCLUSION, True, 0)
    assert [t for t, _ in tones(a, 21_000)] == [0, 7_000, 14_000, 21_000]
    b = AlarmSet(FirmwareConfig(tone_interval_high_ms=7_000, tone_interval_medium_ms=11_000))
    b.condition(AlarmId.BATTERY_ERI, True, 0)
    assert [t for t, _ in tones(b, 22_000)] == [0, 11_000, 22_000]


def test_rule_alarm_highest_priority_due_is_the_one_heard():
    a = AlarmSet(CFG)
    a.condition(AlarmId.LOW_RESERVOIR, True, 0)
    a.condition(AlarmId.OCCLUSION, True, 0)
    assert a.tones_due(0) is BeepPattern.TWO_TONE
    assert a.tones_due(1) is None  # both rescheduled: nothing due a ms later
    assert a.tones_due(5 * MIN) is BeepPattern.TWO_TONE
    a.acknowledge(AlarmId.OCCLUSION, 6 * MIN)
    a.condition(AlarmId.OCCLUSION, False, 6 * MIN)
    assert tones(a, 2 * H) == [(H, BeepPattern.SINGLE_TONE), (2 * H, BeepPattern.SINGLE_TONE)]


def test_rule_alarm_acknowledged_alarm_is_silent_for_the_silence_period_then_sounds_again():
    a = AlarmSet(CFG)
    a.condition(AlarmId.OCCLUSION, True, 0)
    assert a.tones_due(0) is BeepPattern.TWO_TONE
    a.acknowledge(AlarmId.OCCLUSION, 7 * MIN)  # condition still holds
    assert a.tones_due(10 * MIN) is None
    assert a.tones_due(36 * MIN) is None
    # High: silenced 30 min, then every 5 min again.
    assert tones(a, 50 * MIN) == [(t * MIN, BeepPattern.TWO_TONE) for t in (37, 42, 47)]
    m = AlarmSet(CFG)
    m.condition(AlarmId.LOW_RESERVOIR, True, 0)
    m.tones_due(0)
    m.acknowledge(AlarmId.LOW_RESERVOIR, 10 * MIN)
    # Medium: silenced 24 h.
    assert tones(m, DAY + 10 * MIN) == [(DAY + 10 * MIN, BeepPattern.SINGLE_TONE)]


def test_rule_alarm_state_round_trips_through_to_data_and_load():
    a = AlarmSet(CFG)
    a.condition(AlarmId.LOW_RESERVOIR, True, 100)
    a.condition(AlarmId.OCCLUSION, True, 200)
    a.acknowledge(AlarmId.OCCLUSION, 300)
    a.condition(AlarmId.EMPTY_RESERVOIR, True, 400)
    a.condition(AlarmId.EMPTY_RESERVOIR, False, 500)
    a.condition(AlarmId.THERAPY_STOPPED, True, 550, Priority.MEDIUM)  # (a drug whose withdrawal is dangerous)
    a.condition(AlarmId.MOTOR_STALL, True, 560)
    a.condition(AlarmId.MOTOR_STALL, False, 570)
    a.active[AlarmId.MOTOR_STALL].recovered = True
    a.tones_due(600)
    b = AlarmSet(CFG)
    b.condition(AlarmId.MOTOR_STALL, True, 0)  # replaced by the load
    b.load(a.to_data())
    assert b.active == a.active
    assert list(b.active) == list(a.active)
    assert tones(b, DAY) == tones(a, DAY)
    assert b.active[AlarmId.THERAPY_STOPPED].priority is Priority.MEDIUM and b.active[AlarmId.MOTOR_STALL].recovered
    # Rows written before issue 12 (no priority, no recovery) load with the usual priority.
    c = AlarmSet(CFG)
    c.load([row[:6] for row in a.to_data()])
    assert c.active[AlarmId.THERAPY_STOPPED].priority is Priority.LOW
    assert not c.active[AlarmId.MOTOR_STALL].recovered


# ================================================================ the event log


def test_rule_event_log_is_a_ring_bounded_at_its_capacity():
    log = EventLog(capacity=5)
    for i in range(12):
        log.add(i, LogEvent.BOOT, i)
    assert [e.seq for e in log.entries] == [8, 9, 10, 11, 12]
    assert [e.arg0 for e in log.entries] == [7, 8, 9, 10, 11]
    assert (log.oldest_seq, log.next_seq) == (8, 13)


def test_rule_event_log_sequence_numbers_strictly_increase_and_are_never_reused():
    log = EventLog(capacity=3)
    seqs = [log.add(0, LogEvent.CLOCK_SET).seq for _ in range(10)]
    assert seqs == list(range(1, 11))
    # After a reset the log resumes from the persisted next number, never from 1.
    again = EventLog(capacity=3, next_seq=log.next_seq)
    assert again.oldest_seq == 11
    assert again.add(5, LogEvent.BOOT).seq == 11


def test_rule_event_log_read_pages_from_any_seq_including_overwritten_ones():
    log = EventLog(capacity=5)
    for i in range(12):
        log.add(100 + i, LogEvent.ALARM_RAISED, i)
    assert [e.seq for e in log.read(1, 2)] == [8, 9]  # overwritten: from the oldest kept
    assert [e.seq for e in log.read(10, 32)] == [10, 11, 12]
    assert log.read(13, 32) == [] and log.read(99, 32) == []
    assert log.read(9, 0) == []
    pages, nxt = [], 0
    while page := log.read(nxt, 2):
        pages.append([e.seq for e in page])
        nxt = page[-1].seq + 1
    assert pages == [[8, 9], [10, 11], [12]]
    assert EventLog(capacity=5).read(0, 5) == []


def test_rule_event_log_records_time_event_and_unsigned_32_bit_args():
    log = EventLog(capacity=4)
    r = log.add(77, LogEvent.REFILL_COMPLETE, -1, 2**32 + 5)
    assert (r.seq, r.time_s, r.event, r.arg0, r.arg1) == (1, 77, LogEvent.REFILL_COMPLETE, 0xFFFFFFFF, 5)


# ================================================================ the reservoir


def test_rule_reservoir_estimate_decreases_with_delivery_and_never_below_zero():
    r = Reservoir(20_000, 12_000_000)
    for _ in range(10):
        r.delivered(500)
    assert r.volume_nl == 12_000_000 - 5_000
    r.delivered(13_000_000)
    assert r.volume_nl == 0


def test_rule_reservoir_low_and_empty_levels():
    assert not reservoir_rule.is_low(2_000_001, 2_000)
    assert reservoir_rule.is_low(2_000_000, 2_000)
    empty = CFG.empty_reservoir_ul * 1000
    assert not reservoir_rule.is_empty(1_000_001, empty, None)
    assert reservoir_rule.is_empty(1_000_000, empty, None)
    assert not reservoir_rule.is_empty(1_000_000, 999_000, None)
    # So near the empty level that not one more stroke fits above it: empty.
    assert reservoir_rule.is_empty(1_000_499, empty, 500)
    assert not reservoir_rule.is_empty(1_000_500, empty, 500)
    assert reservoir_rule.strokes_above_empty(1_001_499, empty, 500) == 2


@pytest.mark.parametrize(
    ("capacity_ul", "off_nl", "consequential"),
    [
        (20_000, 1_000_000, False),  # exactly 1 mL on a 20 mL pump: not past the limit
        (20_000, 1_000_001, True),
        (20_000, -1_000_000, False),
        (20_000, -1_000_001, True),
        (40_000, 1_500_000, False),  # 1.5 mL is within a 40 mL pump's 2 mL
        (40_000, 2_000_000, False),
        (40_000, 2_000_001, True),
        (40_000, -2_000_001, True),
    ],
)
def test_rule_reservoir_refill_discrepancy_past_1ml_on_20ml_and_2ml_on_40ml(capacity_ul, off_nl, consequential):
    r = Reservoir(capacity_ul, 3_000_000)
    discrepancy = r.refill(3_000_000 + off_nl, 15_000_000, Fill("morphine", 5 * MG))
    assert discrepancy == off_nl
    small, large = CFG.refill_discrepancy_small_ul, CFG.refill_discrepancy_large_ul
    assert reservoir_rule.discrepancy_consequential(discrepancy, r.capacity_nl, small, large) is consequential
    assert r.volume_nl == 15_000_000  # the estimate restarts from the fill
    assert r.fill == Fill("morphine", 5 * MG)  # and what the fill put in is recorded


def test_rule_reservoir_refill_discrepancy_limits_are_configurable():
    assert reservoir_rule.discrepancy_consequential(500_001, 20_000_000, 500, 700)
    assert not reservoir_rule.discrepancy_consequential(700_000, 40_000_000, 500, 700)


def test_rule_reservoir_overfill_is_a_fill_beyond_the_capacity_the_withdrawal_empties_it():
    cap = 20_000_000
    assert not reservoir_rule.overfills(20_000_000, cap)
    assert reservoir_rule.overfills(20_000_001, cap)
    assert not reservoir_rule.overfills(40_000_000, 40_000_000)


def test_rule_reservoir_more_withdrawn_than_it_holds_is_impossible():
    assert not reservoir_rule.impossible_withdrawal(20_000_000, 20_000_000)
    assert reservoir_rule.impossible_withdrawal(20_000_001, 20_000_000)


# ================================================================ the run rules (the guard asks them)

RUN_OK = RunFacts(
    purpose=Purpose.BASAL,
    state=TherapyState.RUNNING,
    high_alarm=False,
    strokes=64,
    interval_ms=1_800,
    max_strokes_per_run=64,
    min_interval_ms=1_800,
    now_ms=NOW,
    last_stroke_ms=NOW - 1_800,
    stroke_nl=500,
    reservoir_nl=5_000_000,
    empty_level_nl=1_000_000,
    window_fg=1 * MG * FG,
    drug_fg=160_000 * FG,
    max_dose_24h_fg=3 * MG * FG,
)
RUN_REFUSALS = [
    (Stop.HIGH_ALARM, {"high_alarm": True}),
    (Stop.NOT_RUNNING, {"state": TherapyState.STOPPED}),
    (Stop.MECHANISM, {"strokes": 65}),
    (Stop.TOO_SOON, {"last_stroke_ms": NOW - 1_799}),
    (Stop.RESERVOIR, {"reservoir_nl": 1_000_000 + 32_000 - 1}),
    (Stop.LIMIT_24H, {"window_fg": 3 * MG * FG - 160_000 * FG + 1}),
]


def test_rule_run_may_start_when_every_rule_holds():
    assert refusal(RUN_OK) is None
    assert refusal(dataclasses.replace(RUN_OK, reservoir_nl=1_032_000)) is None  # leaves exactly empty
    assert refusal(dataclasses.replace(RUN_OK, window_fg=3 * MG * FG - 160_000 * FG)) is None  # reaches the limit
    assert refusal(dataclasses.replace(RUN_OK, last_stroke_ms=None)) is None


@pytest.mark.parametrize("i", range(len(RUN_REFUSALS)), ids=[r.name for r, _ in RUN_REFUSALS])
def test_rule_run_refusal_for_each_reason_in_order(i):
    assert refusal(dataclasses.replace(RUN_OK, **RUN_REFUSALS[i][1])) is RUN_REFUSALS[i][0]
    changes: dict = {}
    for _, c in RUN_REFUSALS[i:]:
        changes.update(c)
    assert refusal(dataclasses.replace(RUN_OK, **changes)) is RUN_REFUSALS[i][0]


@pytest.mark.parametrize("field", ["strokes", "interval_ms"])
def test_rule_run_beyond_the_mechanism_is_refused(field):
    bad = {"strokes": 0, "interval_ms": 1_799}[field]
    assert refusal(dataclasses.replace(RUN_OK, **{field: bad})) is Stop.MECHANISM


def test_rule_run_priming_runs_while_stopped_and_its_drug_counts_toward_the_limit():
    priming = dataclasses.replace(RUN_OK, purpose=Purpose.PRIMING, state=TherapyState.STOPPED)
    assert refusal(priming) is None
    assert refusal(dataclasses.replace(priming, window_fg=3 * MG * FG)) is Stop.LIMIT_24H
    assert refusal(dataclasses.replace(priming, high_alarm=True)) is Stop.HIGH_ALARM
    assert refusal(dataclasses.replace(priming, reservoir_nl=1_000_000)) is Stop.RESERVOIR
    assert refusal(dataclasses.replace(priming, state=TherapyState.REFILL)) is Stop.NOT_RUNNING
    for purpose in (Purpose.BASAL, Purpose.PATIENT):
        assert refusal(dataclasses.replace(priming, purpose=purpose)) is Stop.NOT_RUNNING


def test_rule_run_a_single_bolus_runs_while_stopped_under_every_limit():
    # SR-048: a clinician bolus while stopped; never halted or in a refill.
    single = dataclasses.replace(RUN_OK, purpose=Purpose.CLINICIAN, state=TherapyState.STOPPED)
    assert refusal(single) is None
    assert refusal(dataclasses.replace(single, window_fg=3 * MG * FG)) is Stop.LIMIT_24H
    assert refusal(dataclasses.replace(single, high_alarm=True)) is Stop.HIGH_ALARM
    assert refusal(dataclasses.replace(single, reservoir_nl=1_000_000)) is Stop.RESERVOIR
    for state in (TherapyState.REFILL, TherapyState.HALTED, TherapyState.BOOT):
        assert refusal(dataclasses.replace(single, state=state)) is Stop.NOT_RUNNING


STROKE_OK = StrokeFacts(
    purpose=Purpose.PATIENT,
    state=TherapyState.RUNNING,
    high_alarm=False,
    made=10,
    commanded=64,
    reservoir_nl=1_000_000,
    empty_level_nl=1_000_000,
    window_fg=3 * MG * FG,
    max_dose_24h_fg=3 * MG * FG,
)


@pytest.mark.parametrize(
    ("stop", "changes"),
    [
        (None, {}),
        (Stop.HIGH_ALARM, {"high_alarm": True}),
        (Stop.NOT_RUNNING, {"state": TherapyState.HALTED}),
        (Stop.MECHANISM, {"made": 65}),
        (Stop.RESERVOIR, {"reservoir_nl": 999_999}),
        (Stop.LIMIT_24H, {"window_fg": 3 * MG * FG + 1}),
    ],
)
def test_rule_run_every_reported_stroke_is_checked_again(stop, changes):
    assert stroke_refusal(dataclasses.replace(STROKE_OK, **changes)) is stop


@pytest.mark.parametrize(
    ("window", "wanted", "expect"),
    [
        (0, 10, 10),
        (3 * MG * FG - 2_500 * FG * 5 // 2, 10, 2),  # room for 2.5 strokes: 2
        (3 * MG * FG - 2_500 * FG, 10, 1),
        (3 * MG * FG - 1, 10, 0),
        (3 * MG * FG + 5, 10, 0),  # already over: none, never negative
    ],
)
def test_rule_limit24h_strokes_within_the_hard_limit(window, wanted, expect):
    assert strokes_within(window, 2_500 * FG, 3 * MG * FG, wanted) == expect


def test_rule_limit24h_strokes_without_drug_are_not_limited():
    assert strokes_within(10**20, 0, 1, 7) == 7


def test_rule_occlusion_needs_pressure_over_the_threshold_for_the_whole_dwell():
    assert not occlusion_confirmed(None, 10**9, 30_000)
    assert not occlusion_confirmed(1_000, 1_000 + 29_999, 30_000)  # a spike shorter than the dwell
    assert occlusion_confirmed(1_000, 1_000 + 30_000, 30_000)
    assert occlusion_confirmed(1_000, 1_000 + 10**6, 30_000)


# ================================================================ the therapy state machine

STATES = ["boot", "stopped", "running", "refill", "halted"]
# Written out from issue 4, independently of firmware/therapy.py's table:
# (state, trigger) -> destination. Guarded ones need can_deliver.
ALLOWED = {
    ("boot", "boot_to_stopped"): "stopped",
    ("boot", "boot_to_running"): "running",
    ("boot", "boot_to_refill"): "refill",
    ("boot", "boot_to_halted"): "halted",
    ("stopped", "start_therapy"): "running",
    ("running", "stop_therapy"): "stopped",
    ("halted", "stop_therapy"): "stopped",
    ("stopped", "begin_refill"): "refill",
    ("running", "begin_refill"): "refill",
    ("halted", "begin_refill"): "refill",
    ("refill", "finish_refill_stopped"): "stopped",
    ("refill", "finish_refill_running"): "running",
    ("running", "halt"): "halted",
    ("stopped", "halt"): "halted",
    ("halted", "recover_running"): "running",
    ("halted", "recover_stopped"): "stopped",
}
GUARDED = {"boot_to_running", "start_therapy", "finish_refill_running", "recover_running"}
TRIGGERS = sorted({t for _, t in ALLOWED})
CODE = {
    "boot": TherapyState.BOOT,
    "stopped": TherapyState.STOPPED,
    "running": TherapyState.RUNNING,
    "refill": TherapyState.REFILL,
    "halted": TherapyState.HALTED,
}


class FakeController:
    def __init__(self, can_deliver: bool = True) -> None:
        self.deliverable = can_deliver
        self.changes: list[tuple[TherapyState, TherapyState]] = []
        self.then: dict[TherapyState, str] = {}  # a trigger to fire from inside a change
        self.therapy = Therapy(lambda: self.deliverable, self.on_change)

    def on_change(self, old: TherapyState, new: TherapyState) -> None:
        self.changes.append((old, new))
        if new in self.then:
            self.therapy.fire(self.then.pop(new))

    def put(self, state: str) -> None:
        self.therapy.machine.set_state(CODE[state])
        assert self.therapy.state is CODE[state]


def test_rule_therapy_machine_has_exactly_the_triggers_of_the_issue():
    t = FakeController().therapy
    assert set(t.machine.events) == set(TRIGGERS)
    assert t.state is TherapyState.BOOT


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_rule_therapy_every_allowed_transition_and_every_disallowed_one(state, trigger):
    fake = FakeController(can_deliver=True)
    fake.put(state)
    dest = ALLOWED.get((state, trigger))
    ok = fake.therapy.fire(trigger)  # never raises
    if dest is None:
        assert ok is False
        assert fake.therapy.state is CODE[state]
        assert fake.changes == []
    else:
        assert ok is True
        assert fake.therapy.state is CODE[dest]
        assert fake.changes == [(CODE[state], CODE[dest])]  # announced once, old and new


@pytest.mark.parametrize(("state", "trigger"), sorted(k for k in ALLOWED if k[1] in GUARDED))
def test_rule_therapy_guarded_transitions_need_can_deliver(state, trigger):
    fake = FakeController(can_deliver=False)
    fake.put(state)
    assert fake.therapy.fire(trigger) is False
    assert fake.therapy.state is CODE[state]
    assert fake.changes == []
    fake.deliverable = True
    assert fake.therapy.fire(trigger) is True


@pytest.mark.parametrize(("state", "trigger"), sorted(k for k in ALLOWED if k[1] not in GUARDED))
def test_rule_therapy_unguarded_transitions_do_not_ask_can_deliver(state, trigger):
    fake = FakeController(can_deliver=False)
    fake.put(state)
    assert fake.therapy.fire(trigger) is True
    assert fake.therapy.state is CODE[ALLOWED[(state, trigger)]]


def test_rule_therapy_a_trigger_fired_while_announcing_a_change_runs_after_it():
    # The controller halts from inside a state change (an alarm raised on entry): the
    # queued machine finishes the first transition, then runs the second.
    fake = FakeController()
    fake.then[TherapyState.RUNNING] = "halt"
    assert fake.therapy.fire("boot_to_running")
    assert fake.therapy.state is TherapyState.HALTED
    assert fake.changes == [
        (TherapyState.BOOT, TherapyState.RUNNING),
        (TherapyState.RUNNING, TherapyState.HALTED),
    ]


def test_rule_therapy_committed_diagram_matches_the_machine():
    committed = (ROOT / "docs" / "therapy-states.md").read_text()
    assert committed == diagram_document(), (
        "docs/therapy-states.md differs from the state machine in firmware/therapy.py: run `thecal diagram`"
    )
    for (state, trigger), dest in ALLOWED.items():
        assert f"{state.upper()} --> {dest.upper()}:" in committed and trigger in committed


# ================================================================ catheter bridging

OLD, NEW = 5 * MG, 10 * MG  # ng/mL: a refill doubles the concentration
STROKE = 500  # nL


def test_rule_catheter_after_a_concentration_change_the_old_drug_comes_out_first():
    dead = 200_000  # nL: 400 strokes
    c = Catheter(dead, OLD)
    out = [c.push(STROKE, NEW) for _ in range(401)]
    assert out[:400] == [STROKE * OLD] * 400  # exactly the dead volume of the old drug
    assert out[400] == STROKE * NEW
    assert not c.bridging and c.tip_concentration == NEW


def test_rule_catheter_bridging_lasts_exactly_the_dead_volume():
    c = Catheter(200_000, OLD)
    for _ in range(399):
        c.push(STROKE, NEW)
    assert c.bridging and c.tip_concentration == OLD
    c.push(STROKE, NEW)
    assert not c.bridging and c.tip_concentration == NEW


def test_rule_catheter_a_stroke_straddling_the_boundary_carries_both_drugs():
    c = Catheter(200_250, OLD)  # 400.5 strokes
    out = [c.push(STROKE, NEW) for _ in range(402)]
    assert out[399] == STROKE * OLD
    assert out[400] == 250 * OLD + 250 * NEW
    assert out[401] == STROKE * NEW


@settings(max_examples=scaled(50))
@given(
    st.integers(0, 300_000),
    st.lists(st.tuples(st.integers(1, 5_000), st.sampled_from([OLD, NEW, 1, 100_000])), max_size=200),
)
def test_rule_catheter_conserves_drug_and_volume(dead, pushes):
    c = Catheter(dead, OLD)
    inside = dead * OLD
    out = 0
    for nl, conc in pushes:
        out += c.push(nl, conc)
        inside += nl * conc
    held = sum(v * k for v, k in c.segments_tip_first())
    assert out + held == inside
    assert sum(v for v, _ in c.segments_tip_first()) == dead


def test_rule_catheter_without_dead_volume_delivers_the_reservoir_drug():
    c = Catheter(0, OLD)
    assert c.push(STROKE, NEW) == STROKE * NEW
    assert not c.bridging


def test_rule_catheter_replaced_is_empty_pushes_no_drug_up_to_its_volume_then_is_primed():
    """SR-049: an empty catheter fills before drug reaches the tip."""
    c = Catheter(200_000, OLD)
    c.replaced(100_000)  # 200 strokes
    assert c.state is CatheterState.EMPTY and c.volume_nl == 100_000
    out = [c.push(STROKE, NEW) for _ in range(201)]
    assert out[:200] == [0] * 200 and out[200] == STROKE * NEW
    assert c.state is CatheterState.PRIMED


def test_rule_catheter_state_unknown_until_its_volume_has_been_pushed_through():
    c = Catheter()
    assert c.state is CatheterState.UNKNOWN  # no volume entered
    assert c.push(STROKE, OLD) == STROKE * OLD  # counted at the reservoir's drug
    c.program(1_000, OLD)  # two strokes
    assert c.state is CatheterState.UNKNOWN and c.segments_tip_first() == ((1_000, OLD),)
    c.push(STROKE, OLD)
    assert c.state is CatheterState.UNKNOWN
    c.push(STROKE, OLD)
    assert c.state is CatheterState.PRIMED
    c.program(1_000, NEW)  # the same volume: nothing changes
    assert c.state is CatheterState.PRIMED
    c.program(2_000, OLD)  # another volume: its contents no longer known
    assert c.state is CatheterState.UNKNOWN and c.segments_tip_first() == ((2_000, OLD),)


def test_rule_catheter_an_empty_catheter_takes_a_new_volume_but_a_partly_primed_one_becomes_unknown():
    c = Catheter(200_000, OLD)
    c.replaced(100_000)
    c.program(150_000, OLD)  # declared replaced first, its volume programmed after
    assert c.state is CatheterState.EMPTY and c.segments_tip_first() == ((150_000, 0),)
    c.push(STROKE, OLD)
    c.program(100_000, OLD)
    assert c.state is CatheterState.UNKNOWN
    assert c.push(STROKE, OLD) == STROKE * OLD  # counted as drug: what it holds is not known


def test_rule_catheter_state_round_trips():
    c = Catheter(200_000, OLD)
    for _ in range(123):
        c.push(STROKE, NEW)
    c.replaced_at_ms = 42
    d = Catheter.from_data(c.to_data())
    assert (
        d.to_data()
        == c.to_data()
        == [200_000, 200_000 - 123 * STROKE, [[200_000 - 123 * STROKE, OLD], [123 * STROKE, NEW]], 42]
    )
    assert d.state is c.state is CatheterState.UNKNOWN
    assert [d.push(STROKE, NEW) for _ in range(300)] == [c.push(STROKE, NEW) for _ in range(300)]
    assert d.state is c.state is CatheterState.PRIMED


def test_rule_catheter_an_nvm_written_before_the_catheter_had_a_state_loads_as_unknown():
    d = Catheter.from_data([[1_000, OLD], [500, NEW]])
    assert d.state is CatheterState.UNKNOWN and d.volume_nl == 1_500
    assert d.segments_tip_first() == ((1_000, OLD), (500, NEW))


def test_rule_pump_counter_reserves_a_block_ahead_and_only_when_needed():
    """SR-058: NVM holds the top of the block in use, written before a counter beyond it."""
    from firmware.rules import pump_counter

    assert pump_counter.reservation(1, 0) == pump_counter.BLOCK
    assert pump_counter.reservation(pump_counter.BLOCK, pump_counter.BLOCK) is None
    top = pump_counter.BLOCK
    # After a reset signing restarts at the top reserved: the next counter is above every
    # one the block can have used, and reserves the next block.
    assert pump_counter.reservation(top + 1, top) == 2 * pump_counter.BLOCK
