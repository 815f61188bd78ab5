"""Controller-level rules (issue 4), with a fake clock and fake hardware.

The test plays the pump (tests/fake_pump.py): it answers HW_INFO_REQUEST and
SENSOR_REQUEST, makes each MOTOR_RUN's strokes itself with a RUN_PROGRESS per stroke,
wakes the controller with TIME at its SLEEP_UNTIL, and relays signed host frames. No
emulator, no ports, no processes; time jumps from event to event, so simulated days
take a fraction of a second.

Expected values are computed here, independently of the firmware's arithmetic: the
basal integral by its own piecewise sum, doses as strokes x 500 nL x concentration.

Reference setup unless a test says otherwise: morphine 1 mg/mL (one 500 nL stroke =
500 ng), basal 1,234,567 ng/day (2469.13 strokes a day: not a whole number of strokes
per hour), patient bolus 0.1 mg over 10 min with a 2 h lockout, hard limit 3 mg per
rolling 24 h, 12 mL in the reservoir; the pump's day starts at local midnight.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config import FirmwareConfig
from firmware.druglib import DrugLibrary
from firmware.nvm import MemoryNvm
from firmware.rules.recovery import Policy
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import (
    AlarmId,
    BeepPattern,
    BolusDecision,
    BolusKind,
    BolusOutcome,
    LogEvent,
    MessageFamily,
    NakReason,
    Priority,
    ResetCause,
    Role,
    RunOutcome,
    TherapyState,
)
from protocol.framing import encode_body
from protocol.messages import (
    PUMP_LINK_TYPES,
    REGISTRY,
    AlarmAck,
    AlarmAckAck,
    AlarmRaised,
    BasalStep,
    BolusFinished,
    BolusRequest,
    BolusRequestAck,
    BolusStarted,
    ClinicianBolus,
    ClinicianBolusAck,
    Hello,
    HelloAck,
    HostRx,
    HwInfo,
    LogRead,
    Message,
    MotorRun,
    MotorStop,
    Nak,
    PowerOn,
    Prime,
    PrimeAck,
    Program,
    ProgramAck,
    ReadPrescription,
    RefillBegin,
    RefillBeginAck,
    RefillComplete,
    RefillCompleteAck,
    RunProgress,
    Sensors,
    SimAdvance,
    SleepUntil,
    Start,
    StartAck,
    Status,
    StatusAck,
    Stop,
    StopAck,
    Time,
)
from protocol.schema import NONE_U32, family_of
from tests.fake_pump import DRUGS, KEYS, FakePump, hw_info
from tests.strategies import messages, scaled

MIN = 60_000
H = 3_600_000
DAY = 86_400_000
CONC = 1_000_000  # ng/mL: morphine 1 mg/mL
STROKE_NL = 500
STROKE_NG = STROKE_NL * CONC // 1_000_000  # 500 ng a stroke at CONC
RATE = 1_234_567  # ng/day
BOLUS_NG = 100_000  # patient bolus: 0.1 mg = 200 strokes
LOCKOUT_S = 7_200
HARD_LIMIT_NG = 3_000_000
FILL_NL = 12_000_000
CATHETER_NL = 200_000  # the catheter volume the clinician programs
DWELL = FirmwareConfig().occlusion_dwell_ms
OCCLUDED_PA = FirmwareConfig().occlusion_pressure_pa


# ================================================================ independent arithmetic


def integral(steps: list[tuple[int, int]], a_ms: int, b_ms: int) -> int:
    """The basal schedule's integral over local ms [a, b) in ng*ms/day: a plain sum over
    each day's steps (steps are (start_s, ng/day), the first at 0)."""
    total = 0
    day = a_ms // DAY
    while day * DAY < b_ms:
        for i, (start_s, rate) in enumerate(steps):
            lo = day * DAY + start_s * 1000
            hi = day * DAY + (steps[i + 1][0] * 1000 if i + 1 < len(steps) else DAY)
            lo, hi = max(lo, a_ms), min(hi, b_ms)
            if hi > lo:
                total += rate * (hi - lo)
        day += 1
    return total


def strokes_due(steps: list[tuple[int, int]], a_ms: int, b_ms: int, stroke_ng: int = STROKE_NG) -> int:
    """Whole strokes of basal the schedule asks for over [a, b)."""
    return integral(steps, a_ms, b_ms) // (stroke_ng * DAY)


def due_time(steps: list[tuple[int, int]], a_ms: int, k: int, stroke_ng: int = STROKE_NG) -> int:
    """Earliest time the k-th basal stroke since a_ms falls due (binary search)."""
    need = k * stroke_ng * DAY
    lo, hi = a_ms, a_ms + DAY
    while integral(steps, a_ms, hi) < need:
        hi += DAY
    while lo < hi:
        mid = (lo + hi) // 2
        if integral(steps, a_ms, mid) >= need:
            hi = mid
        else:
            lo = mid + 1
    return lo


FLAT = [(0, RATE)]


def basal_over(periods: list[tuple[int, int]], steps: list[tuple[int, int]] = FLAT) -> int:
    """Whole strokes of basal owed over the periods therapy ran (none while halted)."""
    return sum(integral(steps, a, b) for a, b in periods) // (STROKE_NG * DAY)


# ================================================================ helpers


def program(p: FakePump, **changes: object) -> Program:
    fields = {
        "command_id": p.next_id(),
        "drug": "morphine",
        "concentration_ng_per_ml": CONC,
        "basal": (BasalStep(start_s=0, rate_ng_per_day=RATE),),
        "bolus_dose_ng": BOLUS_NG,
        "bolus_duration_s": 600,
        "bolus_lockout_s": LOCKOUT_S,
        "bolus_max_per_24h": 6,
        "max_dose_24h_ng": HARD_LIMIT_NG,
        "low_reservoir_ul": 2_000,
        "catheter_volume_nl": CATHETER_NL,
        "timed_bolus": (),
    }
    fields.update(changes)
    return Program(**fields)


def ok(reply: Message, cls: type[Message]) -> Message:
    assert type(reply) is cls, f"expected {cls.NAME}, got {reply}"
    return reply


def fill(p: FakePump, added_nl: int = FILL_NL, conc: int = CONC, withdrawn_nl: int | None = None) -> Message:
    expected = ok(p.request(RefillBegin(command_id=p.next_id())), RefillBeginAck).expected_reservoir_nl
    return ok(
        p.request(
            RefillComplete(
                command_id=p.next_id(),
                # (what the firmware expects, or nothing on a pump never filled)
                withdrawn_nl=(0 if expected == NONE_U32 else expected) if withdrawn_nl is None else withdrawn_nl,
                added_nl=added_nl,
                drug="morphine",
                concentration_ng_per_ml=conc,
            )
        ),
        RefillCompleteAck,
    )


def setup(
    start: bool = True,
    config: FirmwareConfig | None = None,
    hw: HwInfo | None = None,
    nvm: MemoryNvm | None = None,
    drugs: DrugLibrary | None = None,
    **rx: object,
) -> FakePump:
    """Power on at local midnight, program, fill 12 mL and (by default) start, all at t=0."""
    p = FakePump(nvm=nvm, config=config, hw=hw, drugs=drugs)
    p.power_on()
    ok(p.request(program(p, **rx)), ProgramAck)
    fill(p)
    if start:
        ok(p.request(Start(command_id=p.next_id())), StartAck)
    # Programming before the fill raised the reservoir alarms (and their tones) at t=0 and
    # the fill cleared them: the tests look at what comes after the setup.
    assert status(p).alarms == ()
    p.events.clear()
    p.beeps.clear()
    p.sleeps.clear()
    return p


def status(p: FakePump) -> StatusAck:
    return ok(p.request(Status()), StatusAck)


def alarms(p: FakePump) -> dict[AlarmId, tuple[Priority, bool]]:
    return {a.alarm: (a.priority, a.acknowledged) for a in status(p).alarms}


def read_log(p: FakePump) -> list:
    """The whole event log, page by page (a page that does not move on fails the test)."""
    out, seq = [], 0
    for _ in range(FirmwareConfig().log_capacity // 32 + 2):
        page = p.request(LogRead(from_seq=seq, max_entries=32))
        if not page.entries:
            return out
        out.extend(page.entries)
        assert page.entries[-1].seq + 1 > seq, f"LOG_READ from {seq} went back to {page.entries[-1].seq}"
        seq = page.entries[-1].seq + 1
    raise AssertionError("the event log never ended")


def strokes_between(p: FakePump, a_ms: int, b_ms: int) -> int:
    """Strokes the pump made at times in [a, b)."""
    return sum(1 for t, _ in p.strokes if a_ms <= t < b_ms)


def ack(p: FakePump, alarm: AlarmId) -> AlarmAckAck:
    return ok(p.request(AlarmAck(alarm=alarm)), AlarmAckAck)


def clinician_bolus(p: FakePump, dose_ng: int, duration_s: int) -> ClinicianBolusAck:
    return ok(
        p.request(ClinicianBolus(command_id=p.next_id(), dose_ng=dose_ng, duration_s=duration_s)), ClinicianBolusAck
    )


def bolus_finished(p: FakePump) -> list[BolusFinished]:
    return [e for _, e in p.events_of(BolusFinished)]


def motor_runs_after(p: FakePump, t_ms: int) -> list[MotorRun]:
    return [m for t, m in p.runs if t > t_ms]


def whole_second_after(p: FakePump) -> int:
    return (p.now_ms // 1000 + 1) * 1000


# ---------------------------------------------------------------- faults, by kind

FAULTS = ("motor_stall", "occlusion", "battery_eos")
# The drug library with every drug's motor stall held for a clinician, as occlusion and
# end of service are by default (rules/recovery.py): the tests of the hold policy.
HOLD_STALL = DrugLibrary(tuple(replace(d, recovery=((AlarmId.MOTOR_STALL, Policy.HOLD),)) for d in DRUGS.drugs))
FAULT_ALARM = {"motor_stall": AlarmId.MOTOR_STALL, "occlusion": AlarmId.OCCLUSION, "battery_eos": AlarmId.BATTERY_EOS}


def raise_fault(p: FakePump, kind: str) -> int:
    """Make the fault true at the pump and report it; return when the controller knew."""
    if kind == "motor_stall":
        p.stalled = True
        p.send_sensors()
        return p.now_ms
    if kind == "battery_eos":
        p.battery_mv = 3_050
        p.send_sensors()
        return p.now_ms
    p.pressure_pa = OCCLUDED_PA + 10_000
    p.send_sensors()
    confirmed = p.now_ms + DWELL
    p.advance_to(confirmed)
    return confirmed


def clear_fault(p: FakePump, kind: str) -> None:
    p.stalled = False
    p.pressure_pa = 0
    p.battery_mv = 3_600
    p.send_sensors()


# ================================================================ delivery counts what the pump made


@pytest.mark.parametrize("outcome", [RunOutcome.EMPTY, RunOutcome.STALLED])
def test_rule_delivery_is_counted_from_strokes_the_pump_reports_made_not_from_strokes_commanded(outcome):
    p = setup()
    p.run_until(lambda: len(p.strokes) == 5, 2 * DAY)
    _, run = p.runs[-1]
    assert run.strokes == 64  # the controller asked for a long run ...
    assert sum(1 for _, rid in p.strokes if rid == run.run_id) == 5  # ... of which 5 strokes are made
    if outcome is RunOutcome.EMPTY:
        p.strokes_left = 0  # the mechanism finds nothing more to push
    else:
        p.stalled = True
    p.step()  # the 6th stroke fails: the run ends with strokes_made = 5
    assert p.run is None
    end = [o.fed for o in p.outputs if isinstance(o.fed, RunProgress)][-1]
    assert (end.outcome, end.strokes_made, end.run_id) == (outcome, 5, run.run_id)
    p.advance(H)
    assert len(p.strokes) == 5  # nothing more was made
    s = status(p)
    assert s.reservoir_nl == FILL_NL - 5 * STROKE_NL
    assert s.dose_24h_ng == 5 * STROKE_NG
    assert s.state is TherapyState.HALTED
    expected = {AlarmId.DELIVERY_SHORTFALL, AlarmId.EMPTY_RESERVOIR} if outcome is RunOutcome.EMPTY else set()
    assert expected <= set(alarms(p))
    if outcome is RunOutcome.STALLED:
        assert AlarmId.MOTOR_STALL in alarms(p)


def test_rule_delivery_counted_per_stroke_report_matches_the_pump_over_a_day():
    p = setup()
    p.advance(DAY - MIN)
    s = status(p)
    made = len(p.strokes)
    assert made == strokes_due(FLAT, 0, DAY - MIN) or made == strokes_due(FLAT, 0, DAY - MIN) - 1
    assert s.reservoir_nl == FILL_NL - made * STROKE_NL
    assert s.dose_24h_ng == made * STROKE_NG


def test_rule_an_odometer_jump_beyond_what_the_mechanism_could_make_is_not_counted_as_delivered():
    p = setup()
    p.run_until(lambda: len(p.strokes) == 3, H)
    run = p.run
    assert run is not None and run.made == 3
    p.advance(1_000)  # under one min_stroke_interval_ms: at most one stroke could have been made
    before = status(p)
    p.send(
        RunProgress(
            run_id=run.run_id,
            strokes_made=run.made,
            outcome=RunOutcome.IN_PROGRESS,
            odometer_strokes=p.odometer + 10_000,
            time_ms=p.now_ms,
        )
    )
    after = status(p)
    assert before.reservoir_nl - after.reservoir_nl <= STROKE_NL
    assert after.dose_24h_ng - before.dose_24h_ng <= STROKE_NG


# ================================================================ basal during a bolus


def test_rule_basal_due_during_a_bolus_is_held_back_and_paid_out_after_it_never_dropped():
    p = setup()
    boluses = []  # (start, strokes, duration)
    for at in (1 * H, 5 * H, 9 * H):
        p.advance_to(at)
        # 20 strokes over an hour: about 103 basal strokes fall due meanwhile
        clinician_bolus(p, dose_ng=20 * STROKE_NG, duration_s=3_600)
        boluses.append(p.now_ms)
    end = 16 * H
    p.advance_to(end)
    finished = p.events_of(BolusFinished)
    assert [e.outcome for _, e in finished] == [BolusOutcome.COMPLETED] * 3
    bolus_strokes = 0
    for (t_end, e), t_start in zip(finished, boluses, strict=True):
        n = e.delivered_nl // STROKE_NL
        assert n == 20
        # held back: the bolus's runs made its strokes, and no other run made any meanwhile
        own = {m.run_id for t, m in p.runs if t_start <= t < t_end}
        assert sum(1 for _, rid in p.strokes if rid in own) == n
        assert all(rid in own for t, rid in p.strokes if t_start <= t < t_end)
        # and basal fell due meanwhile (so the count below could come out short)
        assert strokes_due(FLAT, t_start, t_end) >= 90
        bolus_strokes += n
    basal = len(p.strokes) - bolus_strokes
    expected = strokes_due(FLAT, 0, end)
    assert expected - 1 <= basal <= expected
    assert status(p).dose_24h_ng == len(p.strokes) * STROKE_NG


# ================================================================ interrupted boluses


@pytest.mark.parametrize("how", ["stalled_run_outcome", "motor_stall_sensors"])
def test_rule_bolus_interrupted_by_a_fault_is_abandoned_not_resumed_and_counts_in_full(how):
    p = setup()
    p.advance_to(H)
    dose = 40 * STROKE_NG
    clinician_bolus(p, dose_ng=dose, duration_s=600)  # 40 strokes, one every 15 s
    start_strokes = len(p.strokes)
    p.run_until(lambda: len(p.strokes) == start_strokes + 5, 2 * H)
    if how == "stalled_run_outcome":
        p.stalled = True
        p.step()  # the next stroke stalls: RUN_PROGRESS STALLED, strokes_made 5
        halted = p.now_ms
    else:
        p.advance(1_000)
        halted = raise_fault(p, "motor_stall")
    fin = bolus_finished(p)
    assert len(fin) == 1
    assert (fin[0].outcome, fin[0].kind) == (BolusOutcome.INTERRUPTED, BolusKind.CLINICIAN)
    assert (fin[0].delivered_ng, fin[0].delivered_nl) == (5 * STROKE_NG, 5 * STROKE_NL)
    made = len(p.strokes)
    s = status(p)
    assert s.state is TherapyState.HALTED and not s.bolus_active
    # counts in full: the 35 strokes never made count toward the rolling 24 h as if given
    assert s.dose_24h_ng == (made - 5) * STROKE_NG + dose
    assert s.reservoir_nl == FILL_NL - made * STROKE_NL
    # the fault clears and is acknowledged: basal resumes, the bolus does not
    p.advance(10 * MIN)
    clear_fault(p, "motor_stall")
    ack(p, AlarmId.MOTOR_STALL)
    assert status(p).state is TherapyState.RUNNING
    resumed = p.now_ms
    p.advance(H)
    assert len(p.events_of(BolusStarted)) == 1
    # every stroke but the bolus's 5 was basal, for the time therapy ran (35 bolus strokes
    # more would show here)
    expected = basal_over([(0, halted), (resumed, p.now_ms)])
    assert expected - 1 <= len(p.strokes) - 5 <= expected
    s = status(p)
    assert not s.bolus_active
    assert s.dose_24h_ng == (len(p.strokes) - 5) * STROKE_NG + dose


def test_rule_bolus_interrupted_by_a_reset_is_logged_interrupted_not_resumed_and_counts_in_full():
    p = setup()
    p.advance_to(LOCKOUT_S * 1000)
    cmd = p.next_id()
    granted = ok(p.request(BolusRequest(command_id=cmd), Role.PATIENT), BolusRequestAck)
    assert granted.decision is BolusDecision.GRANTED
    first = len(p.strokes)
    p.run_until(lambda: len(p.strokes) == first + 10, LOCKOUT_S * 1000 + H)
    p.advance_to(whole_second_after(p))  # strokes are 3 s apart: none more before the reset
    assert len(p.strokes) == first + 10
    made = len(p.strokes)
    reset_at = p.now_ms
    p.reset(ResetCause.WATCHDOG)
    fin = [e for t, e in p.events_of(BolusFinished) if t >= reset_at]
    assert len(fin) == 1
    assert (fin[0].command_id, fin[0].kind, fin[0].outcome) == (cmd, BolusKind.PATIENT, BolusOutcome.INTERRUPTED)
    assert fin[0].delivered_ng == 10 * STROKE_NG
    logged = [e for e in read_log(p) if e.event is LogEvent.BOLUS_FINISHED]
    assert [(e.arg0, e.arg1) for e in logged] == [(cmd, int(BolusOutcome.INTERRUPTED))]
    s = status(p)
    assert s.state is TherapyState.RUNNING and not s.bolus_active
    assert s.boluses_24h == 1
    assert s.dose_24h_ng == (made - 10) * STROKE_NG + BOLUS_NG
    p.advance(H)
    assert len(p.events_of(BolusStarted)) == 1  # not resumed
    # every stroke but the bolus's 10 was basal (190 bolus strokes more would show here);
    # the reset may lose the basal of the last second before it, under a stroke
    expected = basal_over([(0, p.now_ms)])
    assert expected - 1 <= len(p.strokes) - 10 <= expected
    assert status(p).dose_24h_ng == (len(p.strokes) - 10) * STROKE_NG + BOLUS_NG


# ================================================================ faults


@pytest.mark.parametrize("kind", FAULTS)
def test_rule_a_fault_stops_the_current_run_at_once_motor_stop_in_the_same_output(kind):
    p = setup()
    p.run_until(lambda: len(p.strokes) == 3, DAY)
    _, run = p.runs[-1]
    assert p.run is not None and p.run.run_id == run.run_id  # a run is going
    n = len(p.outputs)
    at = raise_fault(p, kind)
    # the output that reported the fault (ALARM_RAISED) also holds MOTOR_STOP for the run
    outs = [o for o in p.outputs[n:] if any(isinstance(m, MotorStop) for m in o.out)]
    assert outs, "no MOTOR_STOP"
    o = outs[0]
    assert o.time_ms == at
    assert MotorStop(run_id=run.run_id) in o.out
    raised = [e for t, e in p.events_of(AlarmRaised) if e.alarm is FAULT_ALARM[kind]]
    assert len(raised) == 1 and raised[0].time_s == at // 1000
    assert p.run is None
    p.advance(H)
    assert len(p.strokes) == 3
    assert status(p).state is TherapyState.HALTED


def test_rule_occlusion_needs_the_pressure_over_the_threshold_for_the_whole_dwell():
    p = setup()
    p.advance_to(10 * MIN)
    # a spike: high, then back under the threshold 1 ms before the dwell is up
    p.pressure_pa = OCCLUDED_PA
    p.send_sensors()
    p.advance(DWELL - 1)
    p.pressure_pa = OCCLUDED_PA - 1
    p.send_sensors()
    # high again: the dwell starts over
    p.advance(5_000)
    p.pressure_pa = OCCLUDED_PA
    p.send_sensors()
    again = p.now_ms
    p.advance(DWELL - 1)
    assert not p.events_of(AlarmRaised)
    assert status(p).state is TherapyState.RUNNING
    before = len(p.strokes)
    p.advance(1)
    raised = p.events_of(AlarmRaised)
    assert [(t, e.alarm, e.priority) for t, e in raised] == [(again + DWELL, AlarmId.OCCLUSION, Priority.HIGH)]
    p.advance(H)
    assert len(p.strokes) == before
    assert status(p).state is TherapyState.HALTED


def test_rule_occlusion_pressure_just_under_the_threshold_never_alarms():
    p = setup()
    p.pressure_pa = OCCLUDED_PA - 1
    p.send_sensors()
    p.advance(6 * H)
    assert not p.events_of(AlarmRaised)
    made = len(p.strokes)
    due = strokes_due(FLAT, 0, 6 * H)
    assert due - 1 <= made <= due


def test_rule_battery_eri_raises_a_medium_alarm_and_delivery_goes_on():
    p = setup()
    p.advance_to(H)
    p.battery_mv = 3_300  # at the ERI threshold, above EOS
    p.send_sensors()
    raised = p.events_of(AlarmRaised)
    assert [(e.alarm, e.priority) for _, e in raised] == [(AlarmId.BATTERY_ERI, Priority.MEDIUM)]
    p.advance(3 * H)
    s = status(p)
    assert s.state is TherapyState.RUNNING
    assert s.battery_mv == 3_300
    due = strokes_due(FLAT, 0, p.now_ms)
    assert due - 1 <= len(p.strokes) <= due


def test_rule_battery_eos_raises_a_high_alarm_that_halts_delivery():
    p = setup()
    p.advance_to(H)
    p.battery_mv = 3_100  # at the EOS threshold
    p.send_sensors()
    raised = {e.alarm: e.priority for _, e in p.events_of(AlarmRaised)}
    assert raised == {AlarmId.BATTERY_EOS: Priority.HIGH, AlarmId.BATTERY_ERI: Priority.MEDIUM}
    assert status(p).state is TherapyState.HALTED
    made = len(p.strokes)
    p.advance(6 * H)
    assert len(p.strokes) == made
    assert not motor_runs_after(p, H)


@pytest.mark.parametrize("kind", FAULTS)
def test_rule_high_alarm_halts_until_the_condition_is_gone_and_then_acknowledged(kind):
    p = setup(drugs=HOLD_STALL)
    p.advance_to(H)
    halted = raise_fault(p, kind)
    alarm = FAULT_ALARM[kind]
    p.advance(30 * MIN)
    made = len(p.strokes)
    clear_fault(p, kind)
    p.advance(30 * MIN)
    # the condition is gone, but nobody acknowledged: still halted, still listed
    s = status(p)
    assert s.state is TherapyState.HALTED
    assert alarm in {a.alarm for a in s.alarms}
    assert len(p.strokes) == made
    reply = ack(p, alarm)
    assert not reply.still_active
    assert status(p).state is TherapyState.RUNNING
    resumed = p.now_ms
    p.advance(H)
    expected = basal_over([(0, halted), (resumed, p.now_ms)])
    assert expected - 1 <= len(p.strokes) <= expected


def test_bug_a_medium_alarm_raised_while_a_high_one_stands_halted_a_pump_a_clinician_had_stopped():
    # The stateful test's reading: a halted pump a clinician stops comes back stopped with
    # its high alarm still latched; a low reservoir raised after that halted it again
    # (any alarm raised while a high one stood halted therapy), though only a high alarm
    # halts.
    p = setup()
    p.advance_to(H)
    raise_fault(p, "occlusion")
    assert status(p).state is TherapyState.HALTED
    ok(p.request(Stop(command_id=p.next_id())), StopAck)
    assert status(p).state is TherapyState.STOPPED and AlarmId.OCCLUSION in alarms(p)
    fill(p, added_nl=1_900_000)  # a refill below the low level (2 mL): the low alarm, medium
    s = status(p)
    assert AlarmId.LOW_RESERVOIR in alarms(p)
    assert s.state is TherapyState.STOPPED


@pytest.mark.parametrize("kind", FAULTS)
def test_rule_high_alarm_acknowledged_while_its_condition_holds_stays_halted_until_gone_and_acknowledged_again(kind):
    p = setup(drugs=HOLD_STALL)
    p.advance_to(H)
    halted = raise_fault(p, kind)
    alarm = FAULT_ALARM[kind]
    p.advance(5 * MIN)
    reply = ack(p, alarm)
    assert reply.still_active  # acknowledging silences, it does not clear
    p.advance(30 * MIN)
    made = len(p.strokes)
    s = status(p)
    assert s.state is TherapyState.HALTED
    assert (alarm, True) in {(a.alarm, a.acknowledged) for a in s.alarms}
    clear_fault(p, kind)
    p.advance(10 * MIN)
    # the condition went after the acknowledgement: resuming is a person's decision, so
    # the alarm stays latched (unacknowledged again) and therapy halted
    s = status(p)
    assert s.state is TherapyState.HALTED
    assert (alarm, False) in {(a.alarm, a.acknowledged) for a in s.alarms}
    assert len(p.strokes) == made
    assert not ack(p, alarm).still_active
    assert status(p).state is TherapyState.RUNNING
    resumed = p.now_ms
    p.advance(H)
    expected = basal_over([(0, halted), (resumed, p.now_ms)])
    assert expected - 1 <= len(p.strokes) <= expected


def test_rule_strokes_are_never_closer_than_the_mechanisms_minimum_interval_even_across_runs():
    # Regression: a new run used to stroke at once after a run's last stroke (bolus end ->
    # basal payout) or a basal stroke (bolus start): two strokes 0 or 1 ms apart.
    p = setup()
    p.run_until(lambda: len(p.strokes) == 3, H)
    p.advance(1)  # a bolus ordered 1 ms after a basal stroke
    clinician_bolus(p, dose_ng=20 * STROKE_NG, duration_s=600)
    p.advance(2 * H)  # the bolus, then the basal held back paid out
    times = [t for t, _ in p.strokes]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= hw_info().min_stroke_interval_ms


def test_bug_strokes_closer_than_the_mechanisms_minimum_interval_after_a_reset():
    """The last stroke's time was not kept in NVM, so after a reset a run owed basal
    stroked at once: 1000 ms after the stroke before the reset, under the 1800 ms minimum."""
    p = setup()
    p.advance_to(LOCKOUT_S * 1000)
    ok(p.request(BolusRequest(command_id=p.next_id()), Role.PATIENT), BolusRequestAck)
    first = len(p.strokes)
    p.run_until(lambda: len(p.strokes) == first + 10, LOCKOUT_S * 1000 + H)  # bolus strokes 3 s apart
    last = p.now_ms
    p.advance_to(whole_second_after(p))
    assert p.now_ms - last < hw_info().min_stroke_interval_ms
    p.reset(ResetCause.WATCHDOG)
    p.advance(10 * MIN)  # the basal held back during the bolus is paid out
    assert len(p.strokes) > first + 10
    times = [t for t, _ in p.strokes]
    assert min(b - a for a, b in itertools.pairwise(times)) >= hw_info().min_stroke_interval_ms


# ================================================================ tones


def tones(p: FakePump, since_ms: int = 0) -> list[tuple[int, BeepPattern]]:
    return [(t, b) for t, b in p.beeps if t >= since_ms]


def test_rule_tone_high_alarm_sounds_two_tone_repeating_at_the_configured_interval():
    p = setup(config=FirmwareConfig(tone_interval_high_ms=2 * MIN))
    p.advance_to(H)
    at = raise_fault(p, "motor_stall")
    p.advance(11 * MIN)
    assert tones(p) == [(at + k * 2 * MIN, BeepPattern.TWO_TONE) for k in range(6)]


def test_rule_tone_high_alarm_default_interval_is_five_minutes():
    p = setup()
    p.advance_to(H)
    at = raise_fault(p, "occlusion")
    p.advance(21 * MIN)
    assert tones(p) == [(at + k * 5 * MIN, BeepPattern.TWO_TONE) for k in range(5)]


def test_rule_tone_medium_alarm_sounds_a_single_tone_hourly():
    p = setup()
    p.advance_to(H)
    p.battery_mv = 3_250
    p.send_sensors()
    at = p.now_ms
    p.advance(5 * H + MIN)
    assert tones(p) == [(at + k * H, BeepPattern.SINGLE_TONE) for k in range(6)]


def test_rule_tone_medium_alarm_is_silenced_after_acknowledge():
    p = setup()
    p.advance_to(H)
    p.battery_mv = 3_250
    p.send_sensors()
    p.advance(90 * MIN)
    assert len(tones(p)) == 2
    acked = p.now_ms
    assert ack(p, AlarmId.BATTERY_ERI).still_active
    p.advance(20 * H)  # within the 24 h silence
    assert tones(p, acked) == []
    assert status(p).state is TherapyState.RUNNING


def test_rule_tone_high_alarm_is_silenced_after_acknowledge_for_the_silence_period_then_repeats():
    config = FirmwareConfig()
    p = setup(config=config)
    p.advance_to(H)
    raise_fault(p, "motor_stall")
    p.advance(12 * MIN)
    acked = p.now_ms
    ack(p, AlarmId.MOTOR_STALL)
    p.advance(config.silence_high_ms + 11 * MIN)
    back = acked + config.silence_high_ms
    assert tones(p, acked) == [(back + k * 5 * MIN, BeepPattern.TWO_TONE) for k in range(3)]


def test_rule_tone_stops_with_a_silent_beep_once_the_last_alarm_is_cleared():
    p = setup()
    p.advance_to(H)
    raise_fault(p, "motor_stall")
    p.advance(7 * MIN)
    clear_fault(p, "motor_stall")
    cleared = p.now_ms
    ack(p, AlarmId.MOTOR_STALL)
    p.advance(2 * H)
    assert tones(p, cleared) == [(cleared, BeepPattern.SILENT)]
    assert status(p).alarms == ()


# ================================================================ the watchdog and the wake-ups


def longest_kick_gap(p: FakePump, since_ms: int) -> int:
    kicks = [k for k in p.kicks if k >= since_ms]
    points = [since_ms, *kicks, p.now_ms]
    return max(b - a for a, b in itertools.pairwise(points))


@pytest.mark.parametrize("window_ms", [300_000, 20_000])
def test_rule_watchdog_is_kicked_at_least_once_per_window_whatever_the_controller_is_doing(window_ms):
    p = FakePump(hw=hw_info(watchdog_window_ms=window_ms))
    p.power_on()
    p.advance(6 * H)  # idle: no prescription
    ok(p.request(program(p)), ProgramAck)
    fill(p)
    p.advance(6 * H)  # stopped
    ok(p.request(Start(command_id=p.next_id())), StartAck)
    p.advance(DAY)  # running basal
    ok(p.request(Stop(command_id=p.next_id())), StopAck)
    ok(p.request(Prime(command_id=p.next_id(), volume_nl=200_000)), PrimeAck)
    p.advance(H)  # priming
    ok(p.request(Start(command_id=p.next_id())), StartAck)
    p.advance(H)
    clinician_bolus(p, dose_ng=40 * STROKE_NG, duration_s=3_600)
    p.advance(2 * H)  # bolus, then payout of the basal held back
    raise_fault(p, "motor_stall")
    p.advance(12 * H)  # halted with a high alarm sounding
    clear_fault(p, "motor_stall")
    ack(p, AlarmId.MOTOR_STALL)
    ok(p.request(RefillBegin(command_id=p.next_id())), RefillBeginAck)
    p.advance(3 * H)  # refill
    ok(
        p.request(
            RefillComplete(
                command_id=p.next_id(),
                withdrawn_nl=status(p).reservoir_nl,
                added_nl=FILL_NL,
                drug="morphine",
                concentration_ng_per_ml=CONC,
            )
        ),
        RefillCompleteAck,
    )
    p.advance(DAY)  # running again
    assert p.now_ms > 2 * DAY
    assert len(p.kicks) > 2 * DAY // window_ms
    assert longest_kick_gap(p, 0) <= window_ms
    assert not p.violations


def test_rule_the_controller_never_sleeps_past_the_next_basal_stroke_due():
    # two steps, neither a whole number of strokes per hour, over two days
    steps = [(0, 1_234_567), (7 * 3_600 + 13, 2_345_679)]
    p = setup(basal=tuple(BasalStep(start_s=s, rate_ng_per_day=r) for s, r in steps), max_dose_24h_ng=4_000_000)
    p.advance(2 * DAY)
    times = [t for t, _ in p.strokes]
    checked = 0
    for t, wake, run_going in p.sleeps:
        made = bisect.bisect_right(times, t)
        # basal is never early: no more strokes made than whole strokes due
        assert made <= strokes_due(steps, 0, t + 1), f"early stroke by {t}"
        if run_going:
            continue  # the pump is making the next strokes: the controller may sleep
        nxt = due_time(steps, 0, made + 1)
        assert wake <= max(nxt, t), f"at {t} ms the controller slept to {wake} past the stroke due at {nxt}"
        checked += 1
    assert checked > 50
    # and over the two days the strokes stayed within one of the schedule's integral
    for t in range(0, 2 * DAY, 10 * MIN):
        made = bisect.bisect_right(times, t)
        due = strokes_due(steps, 0, t + 1)
        assert due - 1 <= made <= due, f"{made} strokes by {t} ms, {due} due"


# ================================================================ power-on recovery from NVM


def test_rule_power_on_recovers_everything_from_nvm_alone():
    nvm = MemoryNvm()
    p = setup(nvm=nvm)
    p.advance_to(LOCKOUT_S * 1000 + 5 * MIN)
    ok(p.request(BolusRequest(command_id=p.next_id()), Role.PATIENT), BolusRequestAck)
    p.advance(20 * MIN)  # the bolus completes; the lockout runs on
    assert [e.outcome for e in bolus_finished(p)] == [BolusOutcome.COMPLETED]
    # a latched medium alarm: the condition came and went, never acknowledged
    p.battery_mv = 3_250
    p.send_sensors()
    p.advance(MIN)
    p.battery_mv = 3_600
    p.send_sensors()
    ok(p.request(Stop(command_id=p.next_id())), StopAck)
    last_id = p.next_id()
    ok(p.request(Start(command_id=last_id)), StartAck)
    p.advance_to(whole_second_after(p) + 37_000)
    before = status(p)
    rx_before = p.request(ReadPrescription())
    log_before = read_log(p)
    next_seq = p.request(LogRead(from_seq=0, max_entries=1)).next_seq
    reset_at = p.now_ms
    p.reset(ResetCause.POWER_CYCLE)  # a fresh Controller on the same NVM

    after = status(p)
    assert after.state is TherapyState.RUNNING
    assert after.last_command_id == last_id
    assert after.reservoir_nl == before.reservoir_nl == FILL_NL - len(p.strokes) * STROKE_NL
    assert after.lockout_remaining_s == before.lockout_remaining_s > 0
    assert after.dose_24h_ng == before.dose_24h_ng == (len(p.strokes) - 200) * STROKE_NG + BOLUS_NG
    assert after.boluses_24h == before.boluses_24h == 1
    assert after.alarms == before.alarms
    assert [(a.alarm, a.acknowledged) for a in after.alarms] == [(AlarmId.BATTERY_ERI, False)]
    # the projection is recomputed at power-on from the recovered estimate: the same
    # within the basal's stroke-by-stroke lag behind the smooth schedule
    assert abs(after.low_reservoir_at_s - before.low_reservoir_at_s) <= 5 * 60
    assert abs(after.low_reservoir_worst_at_s - before.low_reservoir_worst_at_s) <= 5 * 60
    projected = ("low_reservoir_at_s", "low_reservoir_worst_at_s")
    same = {f: getattr(before, f) for f in StatusAck.FIELDS if f not in projected}
    assert {f: getattr(after, f) for f in same} == same
    assert p.request(ReadPrescription()) == rx_before
    # the log continues without reuse: the old entries kept, the next number used next
    log_after = read_log(p)
    assert log_after[: len(log_before)] == log_before
    new = log_after[len(log_before) :]
    assert new[0].seq == next_seq
    assert (new[0].event, new[0].arg0, new[0].arg1) == (LogEvent.BOOT, int(ResetCause.POWER_CYCLE), 2)
    assert [e.seq for e in log_after] == list(range(log_after[0].seq, log_after[0].seq + len(log_after)))
    # running resumes: basal goes on at the schedule's rate
    made = len(p.strokes)
    p.advance(2 * H)
    due = strokes_due(FLAT, reset_at, p.now_ms)
    assert due - 1 <= len(p.strokes) - made <= due + 1
    # a patient bolus is granted again once the recovered lockout has passed
    again = ok(p.request(BolusRequest(command_id=p.next_id()), Role.PATIENT), BolusRequestAck)
    assert again.decision is BolusDecision.GRANTED


def test_rule_power_on_recovers_the_lockout_and_denies_a_bolus_inside_it():
    nvm = MemoryNvm()
    p = setup(nvm=nvm)
    p.advance_to(LOCKOUT_S * 1000)
    ok(p.request(BolusRequest(command_id=p.next_id()), Role.PATIENT), BolusRequestAck)
    started = p.now_ms
    p.advance(30 * MIN)
    p.advance_to(whole_second_after(p))
    p.reset()
    denied = ok(p.request(BolusRequest(command_id=p.next_id()), Role.PATIENT), BolusRequestAck)
    assert denied.decision is BolusDecision.LOCKOUT
    assert denied.next_available_at_s == (started + LOCKOUT_S * 1000) // 1000


def test_rule_power_on_recovers_a_latched_high_alarm_and_stays_halted():
    nvm = MemoryNvm()
    p = setup(nvm=nvm, drugs=HOLD_STALL)
    p.advance_to(H)
    raise_fault(p, "motor_stall")
    clear_fault(p, "motor_stall")  # the condition went; not acknowledged
    p.advance_to(whole_second_after(p))
    halted_at = p.now_ms
    made = len(p.strokes)
    p.reset()
    s = status(p)
    assert s.state is TherapyState.HALTED
    assert [(a.alarm, a.priority, a.acknowledged) for a in s.alarms] == [(AlarmId.MOTOR_STALL, Priority.HIGH, False)]
    p.advance(H)
    assert len(p.strokes) == made
    assert not motor_runs_after(p, halted_at)
    # it still sounds, on the schedule it had (raised at 1 h, every 5 min)
    assert tones(p, halted_at)[:2] == [(H + k * 5 * MIN, BeepPattern.TWO_TONE) for k in (1, 2)]
    ack(p, AlarmId.MOTOR_STALL)
    assert status(p).state is TherapyState.RUNNING


def test_rule_power_on_recovery_keeps_the_basal_accumulator_within_one_stroke_over_resets():
    nvm = MemoryNvm()
    p = setup(nvm=nvm)
    for k in range(1, 8):
        p.advance_to(k * 3 * H + k * 7_000)
        p.reset(ResetCause.WATCHDOG)
    p.advance_to(DAY - 2 * MIN)
    due = strokes_due(FLAT, 0, p.now_ms)
    # each reset may lose the time since the last stroke (less than one stroke) at most
    assert due - 8 <= len(p.strokes) <= due
    assert status(p).dose_24h_ng == len(p.strokes) * STROKE_NG


def test_rule_power_on_recovery_keeps_all_delivery_still_inside_the_rolling_24h():
    # Regression: NVM kept 1440 history minutes where a rolling 24 h touches 1441, so a
    # reset forgot delivery in the oldest minute that was still inside the 24 h.
    nvm = MemoryNvm()
    p = setup(nvm=nvm)
    p.run_until(lambda: bool(p.strokes), MIN)
    first = p.strokes[0][0]
    assert first % MIN < 59_000  # the first stroke lies early enough in minute 0
    # 24 h after minute 0 began, but before the first stroke is 24 h old
    p.advance_to(DAY + (first % MIN // 1000) * 1000)
    inside = sum(1 for t, _ in p.strokes if t > p.now_ms - DAY)
    assert first > p.now_ms - DAY
    before = status(p).dose_24h_ng
    assert before >= inside * STROKE_NG
    p.reset()
    assert status(p).dose_24h_ng >= inside * STROKE_NG


# ================================================================ priming and bridging


def test_rule_priming_into_a_primed_catheter_is_drug_counted_toward_the_rolling_24h():
    # Issue 11: the catheter is primed, so every priming stroke pushes drug out of its tip.
    p = setup()
    p.advance_to(H)
    ok(p.request(Stop(command_id=p.next_id())), StopAck)
    before = status(p)
    made = len(p.strokes)
    assert before.dose_24h_ng == made * STROKE_NG > 0
    ok(p.request(Prime(command_id=p.next_id(), volume_nl=200_000)), PrimeAck)
    p.advance(30 * MIN)
    primed = len(p.strokes) - made
    assert primed == 200_000 // STROKE_NL
    fin = bolus_finished(p)
    assert [(e.kind, e.outcome, e.delivered_nl, e.delivered_ng) for e in fin] == [
        (BolusKind.PRIMING, BolusOutcome.COMPLETED, 200_000, primed * STROKE_NG)
    ]
    s = status(p)
    assert s.dose_24h_ng == before.dose_24h_ng + primed * STROKE_NG
    assert s.reservoir_nl == before.reservoir_nl - 200_000
    assert s.state is TherapyState.STOPPED


def test_rule_a_prime_that_would_break_the_rolling_24h_hard_limit_is_refused_and_changes_nothing():
    limit = 1_300_000
    p = setup(max_dose_24h_ng=limit)
    p.advance_to(H)
    ok(p.request(Stop(command_id=p.next_id())), StopAck)
    per_prime = 400_000 // STROKE_NL * STROKE_NG  # 0.4 mg out of the tip
    accepted = 0
    while True:
        before = status(p)
        made = len(p.strokes)
        reply = p.request(Prime(command_id=p.next_id(), volume_nl=400_000))
        p.advance(30 * MIN)
        if isinstance(reply, Nak):
            break
        ok(reply, PrimeAck)
        accepted += 1
        assert before.dose_24h_ng + per_prime <= limit
        assert status(p).dose_24h_ng == before.dose_24h_ng + per_prime
    assert accepted == (limit - before.dose_24h_ng + accepted * per_prime) // per_prime >= 2
    assert before.dose_24h_ng + per_prime > limit
    assert (reply.reason, reply.field) == (NakReason.OUT_OF_RANGE, "volume_nl") and "hard limit" in reply.detail
    after = status(p)
    assert len(p.strokes) == made
    assert (after.dose_24h_ng, after.last_command_id) == (before.dose_24h_ng, before.last_command_id)


@pytest.mark.parametrize("when", ["before_first_start", "after_a_stop"])
def test_rule_priming_while_stopped_owes_no_basal_for_the_time_stopped(when):
    # Regression: the priming bolus's wake-ups accrued basal while stopped (from pump time
    # 0 on a fresh pump: 48 million strokes owed), and START paid it out at the payout pace,
    # bounded only by the 24 h hard limit (1016 strokes in the first hour instead of 103).
    p = setup(start=when == "after_a_stop")
    if when == "after_a_stop":
        p.advance_to(H)
        ok(p.request(Stop(command_id=p.next_id())), StopAck)
    p.advance(2 * H)
    ok(p.request(Prime(command_id=p.next_id(), volume_nl=200_000)), PrimeAck)
    p.advance(H)
    made = len(p.strokes)
    ok(p.request(Start(command_id=p.next_id())), StartAck)
    started = p.now_ms
    p.advance(H)
    due = strokes_due(FLAT, started, p.now_ms)
    assert len(p.strokes) - made <= due + 1


def test_rule_priming_after_a_refill_at_a_new_concentration_pushes_the_old_drug_out_counted_at_its_own():
    p = setup(start=False)
    fill(p, conc=2 * CONC)
    ok(p.request(Prime(command_id=p.next_id(), volume_nl=200_000)), PrimeAck)
    p.advance(30 * MIN)
    made = len(p.strokes)
    assert made == 400
    d0 = status(p).dose_24h_ng
    assert d0 == made * STROKE_NG  # the old drug (1 mg/mL) the catheter held
    # the catheter now holds the new drug: each stroke after it carries 1000 ng
    ok(p.request(Start(command_id=p.next_id())), StartAck)
    p.run_until(lambda: len(p.strokes) == made + 10, p.now_ms + DAY)
    assert status(p).dose_24h_ng == d0 + 10 * 2 * STROKE_NG


def test_rule_bridging_after_a_refill_at_double_concentration_accounts_the_dead_volume_at_the_old_one():
    p = setup()
    p.advance_to(H)
    before = status(p)
    old = len(p.strokes)
    assert before.dose_24h_ng == old * STROKE_NG
    done = fill(p, added_nl=FILL_NL, conc=2 * CONC)
    assert done.reservoir_nl == FILL_NL
    s = status(p)
    assert (s.state, s.concentration_ng_per_ml) == (TherapyState.RUNNING, 2 * CONC)
    refilled = p.now_ms
    dead_strokes = CATHETER_NL // STROKE_NL  # 400
    p.run_until(lambda: len(p.strokes) == old + dead_strokes, DAY)
    # the old drug (1 mg/mL) came out of the catheter tip: 500 ng a stroke
    assert status(p).dose_24h_ng == before.dose_24h_ng + dead_strokes * STROKE_NG
    bridged = p.now_ms
    # the basal rate in ng/day held meanwhile: strokes at the old stroke dose's pace
    due = strokes_due(FLAT, refilled, bridged)
    assert due - 1 <= dead_strokes <= due + 1
    p.run_until(lambda: len(p.strokes) == old + dead_strokes + 10, DAY)
    # from then on the new drug: 1000 ng a stroke, half as many strokes for the same rate
    assert status(p).dose_24h_ng == before.dose_24h_ng + dead_strokes * STROKE_NG + 10 * 2 * STROKE_NG
    assert status(p).reservoir_nl == FILL_NL - (dead_strokes + 10) * STROKE_NL
    p.advance(4 * H)
    later = [t for t, _ in p.strokes if t >= p.now_ms - 4 * H]
    due2 = strokes_due(FLAT, 0, 4 * H, stroke_ng=2 * STROKE_NG)
    assert abs(len(later) - due2) <= 1


# ================================================================ host requests: states and types


def halted_pump() -> FakePump:
    p = setup()
    p.advance_to(H)
    raise_fault(p, "motor_stall")
    return p


def refill_pump() -> FakePump:
    p = setup()
    ok(p.request(RefillBegin(command_id=p.next_id())), RefillBeginAck)
    return p


def bolus_pump() -> FakePump:
    p = setup()
    clinician_bolus(p, dose_ng=40 * STROKE_NG, duration_s=600)
    return p


def fresh_pump() -> FakePump:
    p = FakePump()
    p.power_on()
    return p


WRONG_STATE = [
    ("fresh", lambda p: Start(command_id=p.next_id())),
    ("fresh", lambda p: Prime(command_id=p.next_id(), volume_nl=200_000)),
    (
        "fresh",
        lambda p: RefillComplete(
            command_id=p.next_id(), withdrawn_nl=0, added_nl=1, drug="morphine", concentration_ng_per_ml=CONC
        ),
    ),
    ("fresh", lambda p: ClinicianBolus(command_id=p.next_id(), dose_ng=5_000, duration_s=600)),
    ("stopped", lambda p: Stop(command_id=p.next_id())),
    ("running", lambda p: Start(command_id=p.next_id())),
    ("running", lambda p: Prime(command_id=p.next_id(), volume_nl=200_000)),
    (
        "running",
        lambda p: RefillComplete(
            command_id=p.next_id(), withdrawn_nl=0, added_nl=1, drug="morphine", concentration_ng_per_ml=CONC
        ),
    ),
    ("running", lambda p: AlarmAck(alarm=AlarmId.LOW_RESERVOIR)),
    ("running", lambda p: Stop(command_id=p.last_id)),  # the id already accepted
    ("bolus", lambda p: ClinicianBolus(command_id=p.next_id(), dose_ng=5_000, duration_s=600)),
    ("bolus", lambda p: program(p)),
    ("refill", lambda p: program(p)),
    ("refill", lambda p: Start(command_id=p.next_id())),
    ("refill", lambda p: RefillBegin(command_id=p.next_id())),
    ("halted", lambda p: Start(command_id=p.next_id())),
    ("halted", lambda p: ClinicianBolus(command_id=p.next_id(), dose_ng=5_000, duration_s=600)),
    ("halted", lambda p: Prime(command_id=p.next_id(), volume_nl=200_000)),
]
PUMPS = {
    "fresh": fresh_pump,
    "stopped": lambda: setup(start=False),
    "running": setup,
    "bolus": bolus_pump,
    "refill": refill_pump,
    "halted": halted_pump,
}


@pytest.mark.parametrize(("state", "make"), WRONG_STATE, ids=[f"{s}-{i}" for i, (s, _) in enumerate(WRONG_STATE)])
def test_rule_a_request_in_the_wrong_state_answers_nak_wrong_state_and_changes_nothing(state, make):
    p = PUMPS[state]()
    before = status(p)
    rx = p.request(ReadPrescription())
    runs, strokes = len(p.runs), len(p.strokes)
    msg = make(p)
    reply = p.request(msg)  # answered once, and feed() did not raise
    assert type(reply) is Nak
    assert (reply.request_type, reply.reason) == (msg.TYPE, NakReason.WRONG_STATE)
    assert status(p) == before
    assert p.request(ReadPrescription()) == rx
    assert (len(p.runs), len(p.strokes)) == (runs, strokes)


def test_rule_a_patient_bolus_request_when_not_running_is_denied_with_an_ack_not_an_exception():
    p = setup(start=False)
    reply = ok(p.request(BolusRequest(command_id=p.next_id()), Role.PATIENT), BolusRequestAck)
    assert reply.decision is BolusDecision.NOT_RUNNING
    assert reply.dose_ng == 0


def test_rule_a_host_request_while_starting_answers_busy_and_asks_for_hw_info_again():
    p = FakePump()
    p.power_on(answer=False)  # HW_INFO_REQUEST goes unanswered (lost on the link)
    p.queue.clear()
    body, seq = p.frame(Status())
    p.queue.append(HostRx(time_ms=p.now_ms, frame=body))
    p.pump()
    got = p.replies.pop(seq)
    assert [(type(m), m.reason) for m in got] == [(Nak, NakReason.BUSY)]
    # it asks again rather than sleeping unfed until the watchdog resets it
    p.advance(1_000)
    assert status(p).state is TherapyState.STOPPED


UNKNOWN = [
    MotorRun(run_id=7, strokes=64, interval_ms=1_800),
    MotorStop(run_id=0xFFFF),
    SleepUntil(wake_at_ms=0),
    PowerOn(reset_cause=ResetCause.POWER_UP, time_ms=0, rtc_s=0, boot_count=1, odometer_strokes=0),
    Sensors(time_ms=0, outlet_pressure_pa=10**6, motor_stalled=True, battery_mv=3_000, odometer_strokes=0),
    hw_info(),
    StartAck(command_id=9, state=TherapyState.RUNNING),
    ProgramAck(command_id=9),
    Nak(request_type=0x43, reason=NakReason.BUSY, field="", detail=""),
    AlarmRaised(time_s=0, alarm=AlarmId.OCCLUSION, priority=Priority.HIGH),
    SimAdvance(duration_ms=DAY),
]


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("msg", UNKNOWN, ids=[type(m).NAME for m in UNKNOWN])
def test_rule_a_relayed_pump_link_type_or_a_non_request_on_the_host_link_gets_nak_unknown_type(msg, signed):
    p = setup()
    p.advance(10 * MIN)
    before = status(p)
    runs, stops = len(p.runs), len(p.stops)
    reply = p.request(msg, Role.CLINICIAN if signed else None)
    assert type(reply) is Nak
    assert (reply.request_type, reply.reason) == (msg.TYPE, NakReason.UNKNOWN_TYPE)
    # nothing reached the pump or the therapy
    assert (len(p.runs), len(p.stops)) == (runs, stops)
    assert not p.events_of(AlarmRaised)
    assert status(p) == before


def test_rule_an_undeclared_host_request_type_gets_nak_unknown_type():
    p = setup()
    undeclared = next(t for t in range(0x40, 0x60) if t not in REGISTRY)
    seq = 4_321
    reply = p.relay(encode_body(undeclared, seq, b"", FrameSigner(Role.CLINICIAN, KEYS[Role.CLINICIAN], 10**6)), seq)
    assert (type(reply), reply.request_type, reply.reason) == (Nak, undeclared, NakReason.UNKNOWN_TYPE)


REQUESTS = sorted(
    (cls for t, cls in REGISTRY.items() if family_of(t) is MessageFamily.HOST_REQUEST), key=lambda c: c.TYPE
)


@settings(max_examples=scaled(60), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from(REQUESTS).flatmap(messages), st.sampled_from([Role.CLINICIAN, Role.PATIENT])),
        min_size=1,
        max_size=6,
    )
)
def test_rule_any_host_request_gets_exactly_one_answer_and_never_raises(requests):
    p = setup()
    for msg, role in requests:
        reply = p.request(msg, role)  # asserts exactly one reply
        assert type(reply) is Nak or reply.TYPE == msg.TYPE + 0x20
        p.advance(MIN)
    assert not p.violations


def plausible(msg: Message, now_ms: int, odometer: int) -> Message:
    """A pump-link message with its times and odometer where a working pump could put them."""
    fields = {f: getattr(msg, f) for f in msg.FIELDS}
    if "time_ms" in fields:
        fields["time_ms"] = now_ms + fields["time_ms"] % DAY
    if "odometer_strokes" in fields:
        fields["odometer_strokes"] = odometer + fields["odometer_strokes"] % 3
    return type(msg)(**fields)


PUMP_INPUT = st.one_of(
    messages(Time), messages(RunProgress), messages(Sensors), messages(HostRx), st.binary(max_size=64)
)


@settings(max_examples=scaled(60), deadline=None)
@given(st.lists(PUMP_INPUT, min_size=1, max_size=10))
def test_rule_any_pump_link_input_is_answered_with_sleep_until_and_never_raises(items):
    p = setup()
    p.advance(5 * MIN)
    decoder = codec.MessageDecoder(PUMP_LINK_TYPES)
    for item in items:
        data = item if isinstance(item, bytes) else codec.encode(plausible(item, p.now_ms, p.odometer), 1)
        got = decoder.feed(p.ctl.feed(data))
        assert all(isinstance(g, codec.Received) for g in got)
        assert isinstance(got[-1].message, SleepUntil)


# ================================================================ authentication


def log_events(p: FakePump, *events: LogEvent) -> list[tuple[LogEvent, int, int]]:
    return [(e.event, e.arg0, e.arg1) for e in read_log(p) if e.event in events]


def test_rule_authentication_wrong_key_is_refused_auth_failed_and_logged():
    p = setup()
    wrong = FrameSigner(Role.CLINICIAN, bytes(32))
    cmd = p.next_id()
    body, seq = p.frame(Stop(command_id=cmd), signer=wrong)
    reply = p.relay(body, seq)
    assert (type(reply), reply.reason) == (Nak, NakReason.AUTH_FAILED)
    assert status(p).state is TherapyState.RUNNING
    assert log_events(p, LogEvent.AUTH_FAILED) == [(LogEvent.AUTH_FAILED, int(Role.CLINICIAN), Stop.TYPE)]
    # unsigned: refused the same way
    reply = p.request(Stop(command_id=cmd), role=None)
    assert (type(reply), reply.reason) == (Nak, NakReason.AUTH_FAILED)
    assert status(p).state is TherapyState.RUNNING


def test_rule_authentication_replay_is_refused_replayed_and_logged():
    p = setup()
    body, seq = p.frame(Status())
    ok(p.relay(body, seq), StatusAck)
    reply = p.relay(body, seq)
    assert (type(reply), reply.reason) == (Nak, NakReason.REPLAYED)
    assert log_events(p, LogEvent.REPLAY_REJECTED) == [(LogEvent.REPLAY_REJECTED, int(Role.CLINICIAN), Status.TYPE)]


def test_rule_authentication_a_forged_frame_does_not_move_the_counter_on():
    p = setup()
    forged = FrameSigner(Role.CLINICIAN, bytes(32), counter=10**12)
    body, seq = p.frame(Status(), signer=forged)
    assert p.relay(body, seq).reason is NakReason.AUTH_FAILED
    ok(p.request(Status()), StatusAck)  # the real key's next counter is still fresh


def test_rule_authentication_counters_survive_a_reset_so_a_frame_accepted_before_is_refused_after():
    nvm = MemoryNvm()
    p = setup(nvm=nvm)
    p.advance(MIN)
    body, seq = p.frame(Hello())
    ok(p.relay(body, seq), HelloAck)
    patient_body, patient_seq = p.frame(Status(), Role.PATIENT)
    ok(p.relay(patient_body, patient_seq), StatusAck)
    p.advance_to(whole_second_after(p))
    p.reset()
    for b, q in ((body, seq), (patient_body, patient_seq)):
        reply = p.relay(b, q)
        assert (type(reply), reply.reason) == (Nak, NakReason.REPLAYED)
    assert [a0 for _, a0, _ in log_events(p, LogEvent.REPLAY_REJECTED)] == [int(Role.CLINICIAN), int(Role.PATIENT)]
    ok(p.request(Status()), StatusAck)  # fresh frames still pass


def test_rule_authentication_patient_key_may_not_send_clinician_requests():
    p = setup()
    reply = p.request(Stop(command_id=p.next_id()), Role.PATIENT)
    assert (type(reply), reply.reason) == (Nak, NakReason.NOT_PERMITTED)
    assert status(p).state is TherapyState.RUNNING
    assert log_events(p, LogEvent.NOT_PERMITTED) == [(LogEvent.NOT_PERMITTED, int(Role.PATIENT), Stop.TYPE)]
