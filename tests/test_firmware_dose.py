"""Rules of the dose engine (firmware/dose.py): integer dose arithmetic and the exact
basal accumulator, and the basal plan per minute the 24 h projection runs on
(firmware/rules/limit24h.py). Expected values come from an independent reference written here: the
schedule's cumulative integral F(t) built from whole days plus the part of a day, not
the module's segment walk."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.dose import (
    FG_PER_NG,
    MS_PER_DAY,
    BasalAccumulator,
    basal_integral_fg_ms,
    next_change_ms,
    rate_at,
    stroke_fg,
    strokes_for,
    volume_nl,
)
from firmware.rules.limit24h import basal_plan_fg
from tests.strategies import scaled

MG = 1_000_000
H_MS = 3_600_000


@dataclass(frozen=True)
class Step:
    start_s: int
    rate_ng_per_day: int


REF = (Step(0, 1 * MG), Step(7 * 3600, 1_500_000), Step(22 * 3600, 1 * MG))
# Morphine 5 mg/mL in 500 nL strokes: 2500 ng a stroke.
STROKE_FG = 500 * 5 * MG
COST = STROKE_FG * MS_PER_DAY  # one stroke in the accumulator's units (fg*ms/day)


def cumulative(steps, t_ms: int) -> int:
    """Reference: integral of the schedule from local time 0 to t_ms, in fg*ms/day units
    (rate ng/day x ms x 1e6). Whole days first, then each step's overlap with [0, tod)."""
    days, tod = divmod(t_ms, MS_PER_DAY)
    bounds = [s.start_s * 1000 for s in steps] + [MS_PER_DAY]
    per_day = sum(s.rate_ng_per_day * (bounds[i + 1] - bounds[i]) for i, s in enumerate(steps))
    part = sum(
        s.rate_ng_per_day * max(0, min(tod, bounds[i + 1]) - bounds[i]) for i, s in enumerate(steps) if bounds[i] < tod
    )
    return (days * per_day + part) * FG_PER_NG


def integral(steps, a: int, b: int) -> int:
    return cumulative(steps, b) - cumulative(steps, a)


@st.composite
def schedules(draw, max_rate: int = 20 * MG):
    n = draw(st.integers(1, 24))
    starts = sorted(draw(st.sets(st.integers(1, 86_399), min_size=n - 1, max_size=n - 1)))
    rates = draw(st.lists(st.integers(0, max_rate), min_size=n, max_size=n))
    return tuple(Step(s, r) for s, r in zip([0, *starts], rates, strict=True))


# ---------------------------------------------------------------- dose to volume


def test_rule_dose_to_volume_goes_through_the_concentration():
    assert volume_nl(100_000, 5 * MG) == 20_000  # 0.1 mg of 5 mg/mL is 20 uL
    assert volume_nl(19_200, 100_000) == 192_000  # 19.2 mcg of 100 mcg/mL is 192 uL
    assert volume_nl(1, 3) == 333_333  # rounded down: 1 ng of 3 ng/mL is 333_333.3 nL


def test_rule_dose_one_stroke_carries_volume_times_concentration_in_fg():
    assert stroke_fg(500, 5 * MG) == 2_500 * FG_PER_NG  # 2.5 mcg of morphine
    assert stroke_fg(500, 25_000) == 12_500_000  # 12.5 ng of ziconotide


def test_rule_dose_strokes_for_a_dose_are_the_nearest_whole_number_and_at_least_one():
    assert strokes_for(100_000, stroke_fg(500, 5 * MG)) == 40
    assert strokes_for(1, stroke_fg(500, 5 * MG)) == 1
    assert strokes_for(3_749, stroke_fg(500, 5 * MG)) == 1  # 1.4996 strokes
    assert strokes_for(3_750, stroke_fg(500, 5 * MG)) == 2  # 1.5 rounds up


def test_rule_dose_rate_at_and_next_change_follow_the_schedule():
    cases = [(0, MG, 7 * H_MS), (7 * H_MS - 1, MG, 7 * H_MS), (7 * H_MS, 1_500_000, 22 * H_MS)]
    cases += [(22 * H_MS, MG, MS_PER_DAY), (MS_PER_DAY - 1, MG, MS_PER_DAY)]
    for tod, rate, nxt in cases:
        assert rate_at(REF, tod) == rate
        assert next_change_ms(REF, tod) == nxt


def test_rule_dose_basal_integral_of_the_reference_day_is_1_3125_mg():
    # 1.0 mg/day x 7 h + 1.5 x 15 h + 1.0 x 2 h = 31.5 mg*h/day = 1.3125 mg.
    assert basal_integral_fg_ms(REF, 0, MS_PER_DAY) == 1_312_500 * FG_PER_NG * MS_PER_DAY
    assert basal_integral_fg_ms(REF, 5 * MS_PER_DAY, 8 * MS_PER_DAY) == 3 * 1_312_500 * FG_PER_NG * MS_PER_DAY


@settings(max_examples=scaled(100))
@given(schedules(), st.integers(0, 40 * MS_PER_DAY), st.integers(0, 3 * MS_PER_DAY))
def test_rule_dose_basal_integral_matches_the_reference_across_steps_and_days(steps, a, length):
    assert basal_integral_fg_ms(steps, a, a + length) == integral(steps, a, a + length)


# ---------------------------------------------------------------- the accumulator

# Rates that are not whole strokes per hour (nor per day), over odd step times.
ODD = (Step(0, 1_000_003), Step(6 * 3600 + 1800, 1_777_777), Step(47_831, 333_333), Step(22 * 3600, 1_234_567))


def run_accumulator(steps, start_ms: int, wakeups, cost: int) -> tuple[BasalAccumulator, int]:
    """Drive the accumulator as the controller does: accrue at each wake-up, make (pay)
    every stroke due. Returns the accumulator and the strokes made."""
    acc = BasalAccumulator(0, start_ms)
    made = 0
    for t in wakeups:
        acc.accrue(steps, t)
        while acc.strokes_due(cost) > 0:
            acc.pay(cost)
            made += 1
    return acc, made


def test_rule_basal_accumulator_exact_over_a_year_for_rates_not_whole_strokes_per_hour():
    start = 123_456_789  # not on a day boundary
    end = start + 365 * MS_PER_DAY + 4_321
    # Irregular wake-ups: every 7 min 13.7 s, then the end.
    wakeups = [*range(start + 433_700, end, 433_700), end]
    acc, made = run_accumulator(ODD, start, wakeups, COST)
    total = integral(ODD, start, end)
    assert made == total // COST
    assert acc.owed == total - made * COST
    assert 0 <= acc.owed < COST
    # By hand: the day's basal is not a whole number of strokes.
    assert cumulative(ODD, MS_PER_DAY) % COST != 0


@settings(max_examples=scaled(60))
@given(
    schedules(max_rate=15 * MG),
    st.integers(0, 10 * MS_PER_DAY),
    st.lists(st.integers(1, 6 * H_MS), min_size=1, max_size=60),
    st.integers(1, 5_000).map(lambda nl: nl * 5 * MG * MS_PER_DAY),
)
def test_rule_basal_accumulator_is_exact_for_any_schedule_and_wakeups(steps, start, gaps, cost):
    wakeups = []
    t = start
    for g in gaps:
        t += g
        wakeups.append(t)
    acc, made = run_accumulator(steps, start, wakeups, cost)
    total = integral(steps, start, t)
    assert made == total // cost  # strokes = floor(integral / cost)
    assert made * cost + acc.owed == total  # nothing lost, nothing invented
    assert 0 <= acc.owed < cost  # the remainder is less than one stroke


def test_rule_basal_accumulator_holds_basal_due_during_a_bolus_and_never_drops_it():
    acc = BasalAccumulator(0, 0)
    acc.accrue(REF, 8 * H_MS)
    # A 2 h bolus: no basal stroke is made, the accumulator keeps accruing.
    acc.accrue(REF, 10 * H_MS)
    owed = acc.strokes_due(COST)
    # By hand: 7 h at 1.0 mg/day + 3 h at 1.5 mg/day = 0.479166 mg = 191.67 strokes of 2500 ng.
    assert owed == integral(REF, 0, 10 * H_MS) // COST == 191
    for _ in range(owed):
        acc.pay(COST)
    assert 0 <= acc.owed < COST


def test_rule_basal_accumulator_clock_set_back_keeps_what_is_owed_and_accrues_from_the_new_time():
    acc = BasalAccumulator(0, 10 * H_MS)
    acc.accrue(REF, 11 * H_MS)
    owed = acc.owed
    acc.accrue(REF, 9 * H_MS)  # the clock went back two hours
    assert (acc.owed, acc.at_ms) == (owed, 9 * H_MS)
    acc.accrue(REF, 9 * H_MS + 600_000)  # ten minutes pass
    assert acc.owed == owed + integral(REF, 9 * H_MS, 9 * H_MS + 600_000)


def test_rule_basal_accumulator_due_at_is_exact_at_a_constant_rate():
    # 1 mg/day, 2500 ng strokes: stroke n falls due at ceil(n * 2500 ng / 1 mg * day).
    steps = (Step(0, MG),)
    acc = BasalAccumulator(0, 0)
    times = []
    for _ in range(500):
        t = acc.due_at_ms(steps, COST)
        acc.accrue(steps, t)
        assert acc.strokes_due(COST) == 1
        acc.pay(COST)
        times.append(t)
    rate = MG * FG_PER_NG
    assert times == [-(-n * COST // rate) for n in range(1, 501)]


@settings(max_examples=scaled(100))
@given(
    schedules(max_rate=15 * MG),
    st.integers(0, 5 * MS_PER_DAY),
    st.integers(1, 5_000).map(lambda nl: nl * 5 * MG * MS_PER_DAY),
    st.floats(0, 1),
)
def test_rule_basal_accumulator_due_at_is_never_early(steps, at, cost, fraction):
    owed = int(cost * fraction) - 1
    acc = BasalAccumulator(owed, at)
    due = acc.due_at_ms(steps, cost)
    if due is None:  # nothing falls due within a day: the schedule gives too little
        assert owed + integral(steps, at, at + MS_PER_DAY) < cost
        return
    assert due >= at
    assert owed + integral(steps, at, due) >= cost  # due by then
    if due > at:
        assert owed + integral(steps, at, due - 1) < cost  # and not a millisecond sooner


@settings(max_examples=scaled(100))
@given(
    schedules(max_rate=15 * MG),
    st.integers(0, 5 * MS_PER_DAY),
    st.integers(1, 20_000_000).map(lambda nl: nl * 5 * MG * MS_PER_DAY),
    st.integers(1, 400),
)
def test_rule_basal_accumulator_due_at_over_months_is_exact_to_the_millisecond(steps, at, cost, days):
    # (How the low-reservoir projection uses it: whole days are taken at once.)
    due = BasalAccumulator(0, at).due_at_ms(steps, cost, horizon_ms=days * MS_PER_DAY)
    if due is None:
        assert integral(steps, at, at + days * MS_PER_DAY) < cost
        return
    assert at < due <= at + days * MS_PER_DAY
    assert integral(steps, at, due) >= cost > integral(steps, at, due - 1)


def test_rule_basal_accumulator_due_at_is_now_when_already_owed_and_none_for_a_zero_rate():
    acc = BasalAccumulator(COST, 5_000)
    assert acc.due_at_ms(REF, COST) == 5_000
    assert BasalAccumulator(0, 5_000).due_at_ms((Step(0, 0),), COST) is None


# ---------------------------------------------------------------- the plan per minute


def test_bug_basal_plan_fg_lost_up_to_a_femtogram_a_minute():
    # At 1 mg/day a minute carries 694_444_444.4 fg: rounding every minute down lost
    # 0.4 fg a minute, so a day's plan came out ~600 fg short of the 1.3125 mg it holds.
    plan = basal_plan_fg(REF, 0, 0, 1440)
    assert sum(plan) == 1_312_500 * FG_PER_NG


@settings(max_examples=scaled(60))
@given(schedules(), st.integers(0, 20 * MS_PER_DAY), st.integers(1, 1441))
def test_rule_basal_plan_fg_sums_to_the_integral(steps, local, minutes):
    into = local % 60_000
    plan = basal_plan_fg(steps, local, into, minutes)
    assert len(plan) == minutes
    minute_end = local - into + 60_000
    # Any first k minutes sum to the exact integral over them, rounded down.
    for k in {1, minutes // 2 or 1, minutes}:
        end = minute_end + (k - 1) * 60_000
        assert sum(plan[:k]) == integral(steps, local, end) // MS_PER_DAY
    assert plan[0] == integral(steps, local, minute_end) // MS_PER_DAY
