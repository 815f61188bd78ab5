"""The firmware's parts on their own, wired as the controller wires them (Parts.new) but
driven directly: the guard against every caller that asks it to move the motor, the
engine's catch-up limit, and the guard's odometer count. No controller, no pump link.

Each test tries to get round a rule from another side than the HIL tests do.
"""

from __future__ import annotations

import pytest

from firmware.board.druglib import load_library
from firmware.catheter import Catheter
from firmware.config import FirmwareConfig
from firmware.delivery import ActiveBolus, Fill
from firmware.guard import RunRequest
from firmware.parts import Parts
from firmware.prescription import BasalStep, Prescription
from firmware.rules.run import Purpose
from protocol.codes import AlarmId, BolusKind, LogEvent, RunOutcome, TherapyState
from protocol.messages import MotorRun, MotorStop, RunProgress
from tests.fake_pump import hw_info

MG = 1_000_000
FG = 1_000_000
H = 3_600_000
CONC = 5 * MG
STROKE_NL = 500
STROKE_FG = STROKE_NL * CONC  # 2.5 ug
KEYS = {1: bytes(32), 2: bytes(range(32))}


def parts(state: TherapyState = TherapyState.RUNNING, limit_ng: int = 3 * MG, rate: int = 2 * MG) -> Parts:
    """Parts with a prescription, 12 mL filled, the catheter primed, in `state`."""
    p = Parts.new(KEYS, FirmwareConfig(), load_library())
    p.hardware.learn(hw_info())
    e = p.engine
    e.rx = Prescription("morphine", CONC, (BasalStep(0, rate),), None, limit_ng, 2_000)
    e.reservoir.volume_nl = 12_000_000
    e.reservoir.fill = Fill("morphine", CONC)
    e.catheter = Catheter(200_000, CONC)
    p.supervisor.therapy.machine.set_state(state)
    p.clock.boot(10 * H, 1_767_225_600, 0, 0)
    return p


def motor(p: Parts) -> list:
    return [m for m in p.outbox.take_messages() if isinstance(m, MotorRun | MotorStop)]


# ============================================================ the guard, asked by anyone


@pytest.mark.parametrize("purpose", list(Purpose))
def test_no_run_of_any_purpose_moves_the_motor_while_a_high_alarm_stands(purpose):
    state = TherapyState.STOPPED if purpose is Purpose.PRIMING else TherapyState.RUNNING
    p = parts(state)
    p.alarms.condition(AlarmId.OCCLUSION, True, p.clock.now_ms)
    facts = p.engine.delivery_facts(state, p.alarms.holds_therapy())
    assert not p.guard.admit(RunRequest(purpose, 1, 1_800, 7), facts)
    assert motor(p) == [] and p.guard.run is None


@pytest.mark.parametrize("purpose", list(Purpose))
def test_every_purpose_is_held_to_the_rolling_24h_limit_counted_at_the_catheter_tip(purpose):
    state = TherapyState.STOPPED if purpose is Purpose.PRIMING else TherapyState.RUNNING
    p = parts(state, limit_ng=3 * MG)
    p.engine.history.add(p.clock.now_ms, 3 * MG * FG - 10 * STROKE_FG)  # room for ten strokes
    facts = p.engine.delivery_facts(state, False)
    assert not p.guard.admit(RunRequest(purpose, 11, 1_800, 7), facts)
    assert motor(p) == []
    assert p.guard.admit(RunRequest(purpose, 10, 1_800, 7), facts)
    (run,) = motor(p)
    assert isinstance(run, MotorRun) and run.strokes == 10


def test_after_a_refill_at_a_higher_concentration_the_old_drug_counts_first_then_the_new():
    # Bridging: the catheter still holds 5 mg/mL, the reservoir now 10 mg/mL. A run that
    # pushes past the old drug carries the new one: the guard counts both, exactly.
    p = parts(limit_ng=3 * MG)
    p.engine.reservoir.fill = Fill("morphine", 2 * CONC)
    p.engine.catheter = Catheter(10 * STROKE_NL, CONC)  # ten strokes of the old drug left
    room = 10 * STROKE_FG + 5 * 2 * STROKE_FG  # ten old strokes and five new ones
    p.engine.history.add(p.clock.now_ms, 3 * MG * FG - room)
    facts = p.engine.delivery_facts(TherapyState.RUNNING, False)
    assert not p.guard.admit(RunRequest(Purpose.BASAL, 16, 1_800), facts)
    assert p.guard.admit(RunRequest(Purpose.BASAL, 15, 1_800), facts)


def test_a_run_is_not_admitted_closer_to_the_last_stroke_than_the_mechanism_allows():
    p = parts()
    p.guard.last_stroke_ms = p.clock.now_ms - 1_799
    facts = p.engine.delivery_facts(TherapyState.RUNNING, False)
    assert not p.guard.admit(RunRequest(Purpose.BASAL, 1, 1_800), facts)
    p.clock.observe(p.clock.now_ms + 1)
    assert p.guard.admit(RunRequest(Purpose.BASAL, 1, 1_800), facts)


def test_a_run_going_on_is_stopped_at_the_next_stroke_once_a_rule_fails():
    p = parts()
    facts = p.engine.delivery_facts(TherapyState.RUNNING, False)
    assert p.guard.admit(RunRequest(Purpose.BASAL, 64, 1_800), facts)
    run = p.guard.run
    motor(p)
    report = RunProgress(
        run_id=run.run_id, strokes_made=1, outcome=RunOutcome.IN_PROGRESS, odometer_strokes=1, time_ms=p.clock.now_ms
    )
    p.guard.odometer = 0
    made, fault = p.guard.on_progress(report)
    assert [(m.strokes, m.purpose) for m in made] == [(1, Purpose.BASAL)] and fault is None
    p.guard.recheck(TherapyState.RUNNING, False, 12_000_000, 0, 3 * MG * FG)
    assert p.guard.run is run and motor(p) == []  # every rule still holds
    p.guard.recheck(TherapyState.RUNNING, False, 12_000_000, 3 * MG * FG + 1, 3 * MG * FG)
    assert p.guard.run is None
    assert [type(m) for m in motor(p)] == [MotorStop]


def test_the_odometer_counts_no_more_than_the_runs_commanded_could_have_made():
    p = parts()
    facts = p.engine.delivery_facts(TherapyState.RUNNING, False)
    assert p.guard.admit(RunRequest(Purpose.BASAL, 5, 60_000), facts)
    run = p.guard.run
    p.guard.odometer = 100
    p.guard.stop()  # given up: its strokes count only as its late reports or the odometer show them
    motor(p)
    # Two minutes later the odometer claims 40 strokes: this run could have made 3 (at once,
    # then one a minute); the rest never happened as far as any run of ours could say.
    t = p.clock.now_ms + 2 * 60_000
    p.clock.observe(t)
    made = p.guard.settle(140, t)
    assert sum(m.strokes for m in made) == 3 and {m.purpose for m in made} == {Purpose.BASAL}
    log = [(r.event, r.arg0, r.arg1) for r in p.log.entries]
    assert (LogEvent.DELIVERY_SHORTFALL, 40, 3) in log
    assert p.guard.odometer == 140 and p.guard.orphans == [] and run.reported == 3


# ============================================================ the engine: no catch-up burst


def test_basal_owed_beyond_the_catch_up_limit_is_given_up_and_logged():
    p = parts(rate=2 * MG)
    e = p.engine
    e.restart_accrual()
    p.clock.observe(p.clock.now_ms - p.clock.skew_ms + 12 * H)  # the pump's time leapt 12 h
    e.accrue()
    kept_fg = e.acc.owed // 86_400_000
    two_hours_fg = 2 * MG * FG // 12
    assert two_hours_fg <= kept_fg < two_hours_fg + STROKE_FG
    (entry,) = [r for r in p.log.entries if r.event is LogEvent.BASAL_FORFEITED]
    owed_fg = 2 * MG * FG // 2  # 12 h of 2 mg/day
    assert entry.arg0 == (owed_fg - two_hours_fg) // STROKE_FG
    assert entry.arg1 == entry.arg0 * STROKE_FG // FG


def test_basal_held_back_by_a_bolus_of_the_longest_duration_is_caught_up_in_full():
    p = parts(rate=2 * MG)
    e = p.engine
    e.restart_accrual()
    e.bolus = ActiveBolus(1, BolusKind.CLINICIAN, 100_000, 20_000, 3_600, p.clock.now_ms, 40, 90_000)
    p.clock.observe(p.clock.now_ms + H)
    e.accrue()
    assert e.acc.owed // 86_400_000 == 2 * MG * FG // 24  # an hour of basal, all of it still owed
    assert not [r for r in p.log.entries if r.event is LogEvent.BASAL_FORFEITED]
