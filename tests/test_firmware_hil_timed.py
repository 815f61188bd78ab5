"""The firmware over real ptys: timed boluses in the prescription (SR-053) and the refill
date if the patient takes every bolus allowed (SR-054), issue 12 items 9 and 10.

Delivery is judged by the emulator's ground truth (what left the catheter tip). The pump
starts at local midnight (2026-01-01T00:00), so a timed bolus at 08:00 falls due at pump
time 8 h. Every test runs in-process or split (`pytest --split`).
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from protocol.codes import (
    AlarmId,
    BolusDecision,
    BolusKind,
    BolusOutcome,
    LogEvent,
    NakReason,
    TherapyState,
    TimedBolusOutcome,
)
from protocol.messages import (
    AlarmRaised,
    BolusFinished,
    BolusStarted,
    RefillBegin,
    RefillComplete,
    SetClock,
    SimPowerCycle,
)
from protocol.schema import NONE_U64
from tests.harness import Procs, PumpHost, firmware_pump, rolling_max
from tools.client import Refused

MG = 1_000_000  # ng
CONC = 5 * MG  # morphine 5 mg/mL
STROKE_NG = 2_500  # 0.5 uL of it
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
H = 3_600  # s


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def running(procs: Procs, timed, basal=((0, MG),), limit=2 * MG, fill_nl=12_000_000, **rx) -> PumpHost:
    """A pump filled with morphine 5 mg/mL, programmed with these timed boluses (start_s,
    dose_ng, duration_s) and started at local midnight."""
    pump = firmware_pump(procs)
    pump.fill(fill_nl, CONC)
    pump.program(basal=basal, timed_bolus=timed, max_dose_24h_ng=limit, **rx)
    assert pump.start().state is TherapyState.RUNNING
    return pump


def timed_log(pump: PumpHost) -> list[tuple[int, int, TimedBolusOutcome]]:
    """(pump time s, index, outcome) of each TIMED_BOLUS log entry."""
    return [(e.time_s, e.arg0, TimedBolusOutcome(e.arg1)) for e in pump.log() if e.event is LogEvent.TIMED_BOLUS]


def timed_events(pump: PumpHost, kind: type) -> list:
    return [e for e in pump.events(kind) if e.kind is BolusKind.TIMED]


def basal(rate_ng_per_day: int, ms: int) -> Fraction:
    return Fraction(rate_ng_per_day * ms, DAY)


# ============================================================ delivered, counted


@pytest.mark.req("SR-053")
def test_timed_boluses_are_given_every_day_at_their_times_by_ground_truth(procs):
    """0.25 mg over 15 min at 08:00 and at 20:00 on 1 mg/day of basal: each starts at its
    time, every day, delivers its dose out of the catheter tip (ground truth, within a
    stroke), is logged and counts toward the rolling 24 h like any drug."""
    pump = running(procs, ((8 * H, MG // 4, 900), (20 * H, MG // 4, 900)))
    pump.advance_to(8 * HOUR - MINUTE)
    assert abs(pump.truth().delivered_ng - basal(MG, 8 * HOUR - MINUTE)) <= STROKE_NG
    assert not timed_events(pump, BolusStarted)
    pump.advance_to(8 * HOUR + 16 * MINUTE)
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(MG, gt.time_ms) - MG // 4) <= STROKE_NG
    (started,) = timed_events(pump, BolusStarted)
    assert (started.time_s, started.dose_ng, started.volume_nl, started.duration_s) == (8 * H, MG // 4, 50_000, 900)
    (done,) = timed_events(pump, BolusFinished)
    assert (done.outcome, done.delivered_ng) == (BolusOutcome.COMPLETED, MG // 4)
    st = pump.status()
    assert st.dose_24h_ng == gt.delivered_ng  # counted like any drug
    assert not st.bolus_active and st.boluses_24h == 0  # not a patient bolus
    pump.advance_to(DAY + 8 * HOUR + 16 * MINUTE)
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(MG, gt.time_ms) - 3 * MG // 4) <= STROKE_NG
    assert [e.time_s for e in timed_events(pump, BolusStarted)] == [8 * H, 20 * H, 32 * H]
    assert [(e.outcome, e.delivered_ng) for e in timed_events(pump, BolusFinished)] == [
        (BolusOutcome.COMPLETED, MG // 4)
    ] * 3
    assert timed_log(pump) == [
        (8 * H, 0, TimedBolusOutcome.STARTED),
        (20 * H, 1, TimedBolusOutcome.STARTED),
        (32 * H, 0, TimedBolusOutcome.STARTED),
    ]


@pytest.mark.req("SR-053", "SR-001")
def test_a_prescription_whose_basal_and_timed_boluses_break_the_hard_limit_is_refused(procs):
    """Basal 2 mg/day and two timed boluses of 0.25 mg: the pump's 24 h + 1 min window
    holds the basal of a day and a minute, a stroke it may be ahead, both boluses, and
    one again (yesterday's, as today's starts) with the basal it held back for 15 min:
    2.774722 mg. A hard limit of 2.75 mg is refused naming the timed bolus that breaks it,
    and so is one ng less than that; exactly 2.774723 mg is accepted, and over three days
    every timed bolus is given (none refused at its time: without the stroke in hand the
    first one was), the limit held by ground truth."""
    pump = firmware_pump(procs)
    pump.fill(12_000_000, CONC)
    timed = ((8 * H, MG // 4, 900), (20 * H, MG // 4, 900))
    with pytest.raises(Refused) as refused:
        pump.program(basal=((0, 2 * MG),), timed_bolus=timed, max_dose_24h_ng=2_750_000)
    assert (refused.value.reason, refused.value.field) == (NakReason.OUT_OF_RANGE, "timed_bolus[1].dose_ng")
    assert "at least 2.77472 mg, not 2.75 mg" in refused.value.nak.detail
    with pytest.raises(Refused):
        pump.program(basal=((0, 2 * MG),), timed_bolus=timed, max_dose_24h_ng=2_774_722)
    assert not pump.prescription().present
    pump.program(basal=((0, 2 * MG),), timed_bolus=timed, max_dose_24h_ng=2_774_723)
    pump.start()
    samples = []
    for _ in range(3 * 24 * 4):
        pump.advance(15 * MINUTE)
        gt = pump.truth()
        samples.append((gt.time_ms, gt.delivered_ng))
    assert [outcome for _, _, outcome in timed_log(pump)] == [TimedBolusOutcome.STARTED] * 6
    assert rolling_max(samples) <= 2_774_723
    assert abs(gt.delivered_ng - basal(2 * MG, gt.time_ms) - 6 * MG // 4) <= STROKE_NG


@pytest.mark.req("SR-053", "SR-001")
def test_timed_boluses_out_of_order_overlapping_or_undeliverable_are_refused_naming_the_field(procs):
    """One bolus at a time, in order, each deliverable: a refusal names the timed bolus and
    its field and changes nothing."""
    pump = firmware_pump(procs)
    pump.fill(12_000_000, CONC)
    cases = [
        (((20 * H, MG // 4, 900), (8 * H, MG // 4, 900)), "timed_bolus[1].start_s", "sorted"),
        (((8 * H, MG // 4, 900), (8 * H + 600, MG // 4, 900)), "timed_bolus[1].start_s", "one bolus at a time"),
        (((300, MG // 4, 900), (23 * H + 3_300, MG // 4, 900)), "timed_bolus[0].start_s", "one bolus at a time"),
        (((8 * H, 1_000, 900),), "timed_bolus[0].dose_ng", "less than one stroke"),
        (((8 * H, MG // 4, 30),), "timed_bolus[0].duration_s", "outside 60..3600 s"),
        (((8 * H, MG // 4, 600), (86_400, MG // 4, 900)), "timed_bolus[1].start_s", "not a time of day"),
    ]
    for timed, field, words in cases:
        with pytest.raises(Refused) as refused:
            pump.program(timed_bolus=timed)
        assert (refused.value.reason, refused.value.field) == (NakReason.OUT_OF_RANGE, field), timed
        assert words in refused.value.nak.detail
    assert not pump.prescription().present
    pump.program(timed_bolus=((8 * H, MG // 4, 900),))
    rx = pump.prescription()
    assert [(t.start_s, t.dose_ng, t.duration_s) for t in rx.timed_bolus] == [(8 * H, MG // 4, 900)]


# ============================================================ against the 24 h limit


@pytest.mark.req("SR-053", "SR-006")
def test_the_patient_bolus_projection_holds_room_for_the_coming_timed_bolus(procs):
    """1 mg/day of basal, 0.6 mg at 12:00 every day, hard limit 2.25 mg: a patient bolus
    of 0.7 mg at 06:00 would leave no room for the timed bolus (1 + 0.6 + 0.7 mg in the 24 h
    ahead), so it is denied by the dose limit, and the timed bolus is given at its time.
    The same press without the timed bolus in the prescription is granted."""
    bolus = (700_000, 600, H, 6)
    pump = running(procs, ((12 * H, 600_000, 900),), limit=2_250_000, bolus=bolus)
    pump.advance_to(6 * HOUR)
    assert pump.press().decision is BolusDecision.DOSE_LIMIT
    pump.advance_to(13 * HOUR)
    assert [outcome for _, _, outcome in timed_log(pump)] == [TimedBolusOutcome.STARTED]
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(MG, gt.time_ms) - 600_000) <= STROKE_NG
    # Without it: the same press is granted.
    other = running(procs, (), limit=2_250_000, bolus=bolus)
    other.advance_to(6 * HOUR)
    assert other.press().decision is BolusDecision.GRANTED


@pytest.mark.req("SR-053", "SR-006", "SR-040")
def test_timed_and_patient_boluses_pressed_every_5_minutes_keep_the_hard_limit_by_ground_truth(procs):
    """Attack: the patient presses every five minutes for three days around two timed
    boluses. Every timed bolus is still given (the patient's boluses are judged with them
    ahead), and no rolling 24 h of ground-truth delivery exceeds the hard limit."""
    limit = 2_500_000
    pump = running(procs, ((8 * H, MG // 4, 900), (18 * H, MG // 4, 900)), limit=limit, bolus=(MG // 5, 600, 1_800, 12))
    samples, granted = [], 0
    for _ in range(3 * 24 * 12):
        granted += pump.press().decision is BolusDecision.GRANTED
        pump.advance(5 * MINUTE)
        gt = pump.truth()
        samples.append((gt.time_ms, gt.delivered_ng))
    assert granted >= 3  # the patient did get boluses: the limit, not the rules, bounds them
    assert [outcome for _, _, outcome in timed_log(pump)] == [TimedBolusOutcome.STARTED] * 6
    assert rolling_max(samples) <= limit


@pytest.mark.req("SR-053", "SR-006")
def test_a_timed_bolus_that_would_break_the_hard_limit_is_refused_at_its_time_and_never_given_later(procs):
    """A clinician bolus under a generous limit, then the limit lowered: at 08:00 the timed
    bolus would take the rolling 24 h over the new limit, so it is refused and logged,
    and not given later in a burst when room comes back; the next day's is given."""
    timed = ((8 * H, MG // 2, 900),)
    pump = running(procs, timed, limit=3 * MG)
    pump.advance_to(6 * HOUR)
    pump.client.clinician_bolus(MG, 1_200)
    pump.advance_to(7 * HOUR)
    pump.program(basal=((0, MG),), timed_bolus=timed, max_dose_24h_ng=2_100_000)
    pump.advance_to(8 * HOUR + 30 * MINUTE)
    assert timed_log(pump) == [(8 * H, 0, TimedBolusOutcome.DOSE_LIMIT)]
    assert not timed_events(pump, BolusStarted)
    pump.advance_to(DAY + 7 * HOUR)  # the clinician bolus has left the window
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(MG, gt.time_ms) - MG) <= STROKE_NG  # no timed bolus, late or not
    pump.advance_to(DAY + 8 * HOUR + 20 * MINUTE)
    assert timed_log(pump)[1:] == [(DAY // 1000 + 8 * H, 0, TimedBolusOutcome.STARTED)]
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(MG, gt.time_ms) - MG - MG // 2) <= STROKE_NG


# ============================================================ when it cannot be given at its time


@pytest.mark.req("SR-053", "SR-039")
def test_a_timed_bolus_due_while_stopped_or_in_a_refill_is_not_given_logged_and_never_caught_up(procs):
    """Stopped at 08:00: not given, logged. In a refill at 20:00: not given, logged. After
    the start and the refill, nothing is caught up (ground truth: basal only)."""
    pump = running(procs, ((8 * H, MG // 4, 900), (20 * H, MG // 4, 900)))
    pump.advance_to(7 * HOUR)
    pump.client.stop()
    stopped_at = pump.truth().delivered_ng
    pump.advance_to(8 * HOUR + 30 * MINUTE)
    assert pump.truth().delivered_ng == stopped_at
    pump.start()
    pump.advance_to(19 * HOUR + 30 * MINUTE)
    pump.request(RefillBegin(command_id=pump.next_id()))
    pump.advance_to(20 * HOUR + 10 * MINUTE)
    done = RefillComplete(
        command_id=pump.next_id(), withdrawn_nl=0, added_nl=12_000_000, drug="morphine", concentration_ng_per_ml=CONC
    )
    pump.request(done)
    assert pump.status().state is TherapyState.RUNNING
    pump.advance_to(23 * HOUR)
    assert timed_log(pump) == [(8 * H, 0, TimedBolusOutcome.NOT_RUNNING), (20 * H, 1, TimedBolusOutcome.NOT_RUNNING)]
    assert not timed_events(pump, BolusStarted)
    gt = pump.truth()
    ran = gt.time_ms - (8 * HOUR + 30 * MINUTE - 7 * HOUR) - (40 * MINUTE)
    assert abs(gt.delivered_ng - basal(MG, ran)) <= 2 * STROKE_NG


@pytest.mark.req("SR-053", "SR-007")
def test_a_timed_bolus_due_during_a_patient_bolus_starts_when_it_ends(procs):
    """A patient bolus of 10 min granted at 07:55: the 08:00 timed bolus waits for it and
    starts as it ends, then both doses are out of the tip."""
    pump = running(procs, ((8 * H, MG // 4, 900),), limit=3 * MG, bolus=(MG // 5, 600, H, 6))
    pump.advance_to(7 * HOUR + 55 * MINUTE)
    assert pump.press().decision is BolusDecision.GRANTED
    pump.advance_to(8 * HOUR + 2 * MINUTE)
    assert not timed_events(pump, BolusStarted)
    pump.advance_to(8 * HOUR + 30 * MINUTE)
    (started,) = timed_events(pump, BolusStarted)
    (patient,) = [e for e in pump.events(BolusFinished) if e.kind is BolusKind.PATIENT]
    assert patient.outcome is BolusOutcome.COMPLETED
    assert patient.time_s <= started.time_s <= patient.time_s + 10  # (its last stroke, then the next's first)
    assert timed_log(pump) == [(started.time_s, 0, TimedBolusOutcome.STARTED)]
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(MG, gt.time_ms) - MG // 5 - MG // 4) <= 2 * STROKE_NG


@pytest.mark.req("SR-053", "SR-016")
def test_a_timed_bolus_the_reservoir_does_not_hold_is_not_given_and_basal_goes_on(procs):
    """1.03 mL recorded at the minimum flow (0.24 mg/day): by 08:00 the reservoir holds
    14 uL above the empty level, less than the 0.25 mg (50 uL) bolus: not given, logged;
    basal goes on until the empty level."""
    least = 240_000
    pump = running(procs, ((8 * H, MG // 4, 900),), basal=((0, least),), limit=MG, fill_nl=1_030_000)
    pump.advance_to(9 * HOUR)
    assert timed_log(pump) == [(8 * H, 0, TimedBolusOutcome.RESERVOIR)]
    assert not timed_events(pump, BolusStarted)
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(least, 9 * HOUR)) <= STROKE_NG
    assert pump.status().state is TherapyState.RUNNING


@pytest.mark.req("SR-053", "SR-042")
def test_a_timed_bolus_is_given_late_within_the_grace_and_missed_beyond_it(procs):
    """The clock set from 07:50 to 08:10: the 08:00 bolus is 10 min late, within the grace
    (1 h), and starts at once. The next day, set from 19:30 to 21:30 across the 20:00 one
    (90 min late): missed, logged, never given."""
    pump = running(procs, ((8 * H, MG // 4, 900), (20 * H, MG // 4, 900)))
    pump.advance_to(7 * HOUR + 50 * MINUTE)
    st = pump.status()
    pump.request(SetClock(command_id=pump.next_id(), clock_s=st.clock_s + 20 * 60))
    (started,) = timed_events(pump, BolusStarted)
    assert started.time_s == st.time_s  # at once, pump time 07:50
    pump.advance_to(19 * HOUR + 10 * MINUTE)  # local 19:30
    st = pump.status()
    before = pump.truth()
    pump.request(SetClock(command_id=pump.next_id(), clock_s=st.clock_s + 2 * 3_600))  # 21:30
    pump.advance(HOUR)
    gt = pump.truth()
    assert abs(gt.delivered_ng - before.delivered_ng - basal(MG, HOUR)) <= STROKE_NG
    assert timed_log(pump) == [
        (7 * H + 50 * 60, 0, TimedBolusOutcome.STARTED),
        (st.time_s, 1, TimedBolusOutcome.MISSED),
    ]


@pytest.mark.req("SR-053", "SR-015")
def test_a_timed_bolus_due_while_the_controller_was_off_is_given_within_the_grace_else_missed(procs):
    """Powered off from 07:55 to 08:10: the 08:00 bolus starts as the pump comes back.
    Off from 19:30 to 21:30: the 20:00 one is missed, logged, never given."""
    pump = running(procs, ((8 * H, MG // 4, 900), (20 * H, MG // 4, 900)))
    pump.advance_to(7 * HOUR + 55 * MINUTE)
    pump.sim(SimPowerCycle(off_ms=15 * MINUTE))
    pump.advance_to(8 * HOUR + 30 * MINUTE)
    (started,) = timed_events(pump, BolusStarted)
    assert 8 * H + 10 * 60 <= started.time_s <= 8 * H + 11 * 60
    pump.advance_to(19 * HOUR + 30 * MINUTE)
    pump.sim(SimPowerCycle(off_ms=2 * HOUR))
    pump.advance_to(23 * HOUR)
    assert [(i, outcome) for _, i, outcome in timed_log(pump)] == [
        (0, TimedBolusOutcome.STARTED),
        (1, TimedBolusOutcome.MISSED),
    ]
    assert len(timed_events(pump, BolusStarted)) == 1
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(MG, gt.time_ms - 2 * HOUR - 15 * MINUTE) - MG // 4) <= 2 * STROKE_NG


# ============================================================ attacks: resets, clocks, programs


@pytest.mark.req("SR-053", "SR-011")
def test_a_reset_during_a_timed_bolus_abandons_it_and_never_gives_it_again(procs):
    """Attack: a power cycle 5 min into the 08:00 timed bolus. It is abandoned (counted in
    full) and not started again after the reset, nor later that day (ground truth: basal
    only after it); the next day's is given."""
    pump = running(procs, ((8 * H, MG // 2, 1_200),), limit=3 * MG)
    pump.advance_to(8 * HOUR + 5 * MINUTE)
    part = pump.truth().delivered_ng - basal(MG, 8 * HOUR + 5 * MINUTE)
    assert 0 < part < MG // 2
    pump.sim(SimPowerCycle(off_ms=10_000))
    pump.advance_to(8 * HOUR + 10 * MINUTE)
    assert pump.status().state is TherapyState.RUNNING
    after_reset = pump.truth().delivered_ng
    pump.advance_to(12 * HOUR)
    gt = pump.truth()
    assert abs(gt.delivered_ng - after_reset - basal(MG, gt.time_ms - 8 * HOUR - 10 * MINUTE)) <= 2 * STROKE_NG
    assert [e.outcome for e in timed_events(pump, BolusFinished)] == [BolusOutcome.INTERRUPTED]
    assert pump.status().dose_24h_ng >= basal(MG, 12 * HOUR) + MG // 2 - STROKE_NG  # counted in full
    pump.advance_to(DAY + 8 * HOUR + 30 * MINUTE)
    assert [e.time_s for e in timed_events(pump, BolusStarted)] == [8 * H, DAY // 1000 + 8 * H]


@pytest.mark.req("SR-053", "SR-042")
def test_setting_the_clock_back_does_not_repeat_a_timed_bolus(procs):
    """Attack: after the 08:00 timed bolus the clock is set back to 07:30: local time
    passes 08:00 again but the bolus is not given twice (ground truth); the next day's is."""
    pump = running(procs, ((8 * H, MG // 2, 600),), limit=3 * MG)
    pump.advance_to(8 * HOUR + 20 * MINUTE)
    st = pump.status()
    pump.request(SetClock(command_id=pump.next_id(), clock_s=st.clock_s - 50 * 60))  # 07:30
    before = pump.truth()
    pump.advance(2 * HOUR)  # local 07:30 -> 09:30
    gt = pump.truth()
    assert abs(gt.delivered_ng - before.delivered_ng - basal(MG, 2 * HOUR)) <= STROKE_NG
    assert len(timed_events(pump, BolusStarted)) == 1
    pump.advance(DAY)
    assert len(timed_events(pump, BolusStarted)) == 2
    assert [outcome for _, _, outcome in timed_log(pump)] == [TimedBolusOutcome.STARTED] * 2


@pytest.mark.req("SR-053", "SR-007")
def test_reprogramming_around_a_timed_bolus_neither_loses_nor_repeats_it(procs):
    """Attack: programmed again at 07:59 (the 08:00 bolus is given once, at 08:00), refused
    during it (one bolus at a time), and programmed again at 08:20 with it still at 08:00
    (not given again: a new program starts at the next time, never at one already past)."""
    timed = ((8 * H, MG // 2, 600),)
    pump = running(procs, timed, limit=3 * MG)
    pump.advance_to(7 * HOUR + 59 * MINUTE)
    pump.program(basal=((0, MG),), timed_bolus=timed, max_dose_24h_ng=3 * MG)
    pump.advance_to(8 * HOUR + 5 * MINUTE)
    with pytest.raises(Refused) as refused:
        pump.program(basal=((0, MG),), timed_bolus=timed, max_dose_24h_ng=3 * MG)
    assert refused.value.reason is NakReason.WRONG_STATE
    pump.advance_to(8 * HOUR + 20 * MINUTE)
    pump.program(basal=((0, MG),), timed_bolus=timed, max_dose_24h_ng=3 * MG)
    pump.advance_to(12 * HOUR)
    assert [e.time_s for e in timed_events(pump, BolusStarted)] == [8 * H]
    gt = pump.truth()
    assert abs(gt.delivered_ng - basal(MG, gt.time_ms) - MG // 2) <= STROKE_NG


# ============================================================ the low-reservoir projections


@pytest.mark.req("SR-053", "SR-016")
def test_the_low_reservoir_projection_counts_the_timed_boluses_and_the_alarm_comes_then(procs):
    """3 mL recorded, low at 2 mL: 5 mg to go at 1 mg/day and 0.5 mg at 08:00 and 20:00.
    Two days use 4 mg; day 3's 08:00 bolus takes it to 4.83 mg and basal the rest by
    12:00: projected at 2 d 12:00 (without the timed boluses it would be 5 days), and the
    alarm comes within a basal stroke of it."""
    pump = running(procs, ((8 * H, MG // 2, 900), (20 * H, MG // 2, 900)), limit=3 * MG, fill_nl=3_000_000)
    st = pump.status()
    projected = 2 * 86_400 + 12 * H
    assert st.low_reservoir_at_s == st.low_reservoir_worst_at_s == projected  # no patient bolus
    pump.advance_to(3 * DAY)
    (raised,) = [e for e in pump.events(AlarmRaised) if e.alarm is AlarmId.LOW_RESERVOIR]
    assert projected <= raised.time_s <= projected + 216 + 2  # a basal stroke of 1 mg/day is 216 s


@pytest.mark.req("SR-054")
def test_status_gives_the_refill_date_if_every_patient_bolus_allowed_is_taken(procs):
    """Prometra's refill date: 3 mL recorded, low at 2 mL (5 mg to go), 1 mg/day of basal
    and a patient bolus of 0.5 mg, lockout 2 h, at most 4 a day. At basal alone the low
    level is 5 days away; if the patient takes every bolus allowed (02:00, 04:00, 06:00,
    08:00, then 26:00, 28:00, 30:00, 32:00) the 32:00 bolus reaches it. The patient then
    does press at every chance: the alarm comes during that bolus."""
    pump = running(procs, (), limit=4 * MG, fill_nl=3_000_000, bolus=(MG // 2, 600, 2 * H, 4))
    st = pump.status()
    assert st.low_reservoir_at_s == 5 * 86_400
    assert st.low_reservoir_worst_at_s == 32 * H
    while not [e for e in pump.events(AlarmRaised) if e.alarm is AlarmId.LOW_RESERVOIR]:
        ack = pump.press()
        nxt = ack.next_available_at_s
        assert ack.decision in (BolusDecision.GRANTED, BolusDecision.LOCKOUT, BolusDecision.COUNT_LIMIT), ack
        pump.advance_to(pump.truth().time_ms + 2 * HOUR if ack.decision is BolusDecision.GRANTED else nxt * 1000)
        assert pump.truth().time_ms <= 2 * DAY
    (raised,) = [e for e in pump.events(AlarmRaised) if e.alarm is AlarmId.LOW_RESERVOIR]
    assert 32 * H <= raised.time_s <= 32 * H + 600
    assert NONE_U64 not in (st.low_reservoir_at_s, st.low_reservoir_worst_at_s)
