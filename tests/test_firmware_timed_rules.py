"""The rules of timed boluses (SR-053) and of the worst-case refill date (SR-054), pure:
when each timed bolus falls due, what becomes of it, how the projections count it, and
the prescription's validation. Figures are worked by hand in the comments, never read
back from the module under test."""

from __future__ import annotations

import dataclasses

import pytest

from firmware.board.druglib import load_library
from firmware.dose import FG_PER_NG, MS_PER_DAY
from firmware.prescription import BasalStep, HwLimits, PatientBolus, Prescription, TimedBolus
from firmware.rules import limit24h, reservoir, timed_bolus
from firmware.rules.prescription import PrescriptionError, validate
from firmware.rules.timed_bolus import Occurrence, TimedFacts
from protocol.codes import TimedBolusOutcome

MG = 1_000_000  # ng
H = 3_600  # s
HOUR = 3_600_000  # ms
MINUTE = 60_000
DAY = MS_PER_DAY
HW = HwLimits(stroke_nl=500, min_stroke_interval_ms=1_800, reservoir_capacity_ul=20_000, max_strokes_per_run=64)
DRUGS = load_library()
STROKE_FG = 500 * 5 * MG  # 0.5 uL of 5 mg/mL: 2500 ng

TWO = (TimedBolus(8 * H, MG // 4, 900), TimedBolus(20 * H, MG // 4, 900))


def reference(**changes: object) -> Prescription:
    """The reference therapy (1.0 / 1.5 / 1.0 mg/day, 0.1 mg patient bolus, 3 mg hard
    limit) with 0.25 mg at 08:00 and 20:00."""
    p = Prescription(
        drug="morphine",
        concentration_ng_per_ml=5 * MG,
        basal=(BasalStep(0, MG), BasalStep(7 * H, 1_500_000), BasalStep(22 * H, MG)),
        patient_bolus=PatientBolus(100_000, 600, 2 * H, 6),
        max_dose_24h_ng=3 * MG,
        low_reservoir_ul=2_000,
        timed=TWO,
    )
    return dataclasses.replace(p, **changes)


def refusal(p: Prescription) -> PrescriptionError:
    with pytest.raises(PrescriptionError) as e:
        validate(p, DRUGS, HW, 1_000)
    return e.value


# ================================================================ when they fall due


def test_rule_timed_next_after_is_strictly_after_and_wraps_to_the_next_day():
    assert timed_bolus.next_after(TWO, 0) == Occurrence(0, 8 * HOUR)
    assert timed_bolus.next_after(TWO, 8 * HOUR - 1) == Occurrence(0, 8 * HOUR)
    assert timed_bolus.next_after(TWO, 8 * HOUR) == Occurrence(1, 20 * HOUR)
    assert timed_bolus.next_after(TWO, 20 * HOUR) == Occurrence(0, DAY + 8 * HOUR)
    assert timed_bolus.next_after(TWO, 5 * DAY + 21 * HOUR) == Occurrence(0, 6 * DAY + 8 * HOUR)
    assert timed_bolus.next_after((), 0) is None


def test_rule_timed_occurrences_in_order_between_two_times():
    got = list(timed_bolus.occurrences(TWO, 8 * HOUR, 2 * DAY + 8 * HOUR))
    assert got == [
        Occurrence(1, 20 * HOUR),
        Occurrence(0, DAY + 8 * HOUR),
        Occurrence(1, DAY + 20 * HOUR),
        Occurrence(0, 2 * DAY + 8 * HOUR),
    ]


def test_rule_timed_first_pending_looks_back_one_day_at_most():
    # Dealt with up to 08:00 on day 0; at 21:00 the 20:00 one is pending.
    assert timed_bolus.first_pending(TWO, 8 * HOUR, 21 * HOUR) == Occurrence(1, 20 * HOUR)
    assert timed_bolus.first_pending(TWO, 20 * HOUR, 21 * HOUR) is None
    # Five days later (a clock set far forward): only the last day's are looked at.
    assert timed_bolus.first_pending(TWO, 8 * HOUR, 5 * DAY + 9 * HOUR) == Occurrence(1, 4 * DAY + 20 * HOUR)


def test_rule_timed_given_fg_is_whole_strokes_or_the_dose_in_full_whichever_is_more():
    assert timed_bolus.given_fg(MG // 4, STROKE_FG) == MG // 4 * FG_PER_NG  # exactly 100 strokes
    # 0.2512 mg is 100.48 strokes: given as 100 (0.25 mg) but counted in full if abandoned.
    assert timed_bolus.given_fg(251_200, STROKE_FG) == 251_200 * FG_PER_NG
    # 0.2488 mg is 99.52 strokes: given as 100.
    assert timed_bolus.given_fg(248_800, STROKE_FG) == 100 * STROKE_FG


def test_rule_timed_plan_puts_a_held_one_at_now_and_leaves_out_those_dealt_with_or_missed():
    grace = HOUR
    # 08:30, the 08:00 one not yet dealt with (held by a bolus in progress): planned now.
    after = timed_bolus.planned_after(0, 8 * HOUR + 30 * MINUTE, grace)
    plan = timed_bolus.planned_fg(TWO, after, 8 * HOUR + 30 * MINUTE, 2 * DAY, STROKE_FG)
    assert [t for t, _ in plan] == [
        0,
        11 * HOUR + 30 * MINUTE,
        DAY - 30 * MINUTE,
        DAY + 11 * HOUR + 30 * MINUTE,
        2 * DAY - 30 * MINUTE,
    ]
    assert {fg for _, fg in plan} == {MG // 4 * FG_PER_NG}
    # 09:30: more than the grace late, it is missed, never planned.
    after = timed_bolus.planned_after(0, 9 * HOUR + 30 * MINUTE, grace)
    assert timed_bolus.planned_fg(TWO, after, 9 * HOUR + 30 * MINUTE, DAY, STROKE_FG)[0][0] == 10 * HOUR + 30 * MINUTE
    # Dealt with (given) at 08:00: not planned again.
    after = timed_bolus.planned_after(8 * HOUR, 8 * HOUR + 30 * MINUTE, grace)
    assert timed_bolus.planned_fg(TWO, after, 8 * HOUR + 30 * MINUTE, DAY, STROKE_FG)[0][0] == 11 * HOUR + 30 * MINUTE


# ================================================================ what becomes of one


def window(limit_fg: int, timed_fg: tuple[tuple[int, int], ...] = (), past_fg: int = 0) -> limit24h.Window:
    past = [0] * 1441
    past[-1] = past_fg
    return limit24h.Window(
        now_ms=0,
        local_ms=0,
        past_per_minute_fg=tuple(past),
        basal=(),
        owed_fg=0,
        max_dose_24h_fg=limit_fg,
        stroke_fg=1,
        timed_fg=timed_fg,
    )


def facts(**changes: object) -> TimedFacts:
    f = TimedFacts(
        late_ms=0,
        grace_ms=HOUR,
        running=True,
        high_alarm=False,
        bolus_active=False,
        dose_fg=5,
        window=window(10),
        reservoir_nl=3_000_000,
        volume_nl=50_000,
        empty_level_nl=1_000_000,
    )
    return dataclasses.replace(f, **changes)


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [
        ({}, TimedBolusOutcome.STARTED),
        ({"running": False}, TimedBolusOutcome.NOT_RUNNING),
        ({"high_alarm": True}, TimedBolusOutcome.NOT_RUNNING),
        ({"running": False, "late_ms": 2 * HOUR}, TimedBolusOutcome.NOT_RUNNING),
        ({"late_ms": HOUR}, TimedBolusOutcome.STARTED),
        ({"late_ms": HOUR + 1}, TimedBolusOutcome.MISSED),
        ({"late_ms": HOUR + 1, "bolus_active": True}, TimedBolusOutcome.MISSED),
        ({"bolus_active": True}, None),  # held until it ends
        ({"window": window(10, past_fg=6)}, TimedBolusOutcome.DOSE_LIMIT),  # 6 + 5 > 10
        ({"window": window(10, past_fg=5)}, TimedBolusOutcome.STARTED),  # 5 + 5 fits
        ({"window": window(10, timed_fg=((HOUR, 6),))}, TimedBolusOutcome.DOSE_LIMIT),  # the next one counts
        ({"window": window(10, timed_fg=((25 * HOUR, 6),))}, TimedBolusOutcome.STARTED),  # beyond the day
        ({"reservoir_nl": 1_049_999}, TimedBolusOutcome.RESERVOIR),
        ({"reservoir_nl": 1_050_000}, TimedBolusOutcome.STARTED),
    ],
)
def test_rule_timed_decide(changes, outcome):
    assert timed_bolus.decide(facts(**changes)) is outcome


def test_rule_limit24h_a_bolus_projection_counts_the_timed_boluses_of_the_coming_day():
    w = window(10, timed_fg=((10 * MINUTE, 5),))
    assert limit24h.max_window_with_fg(w, 5) == 10
    assert limit24h.max_window_with_fg(w, 6) == 11
    # The patient's 6 cannot come while the timed 5 is in any window with it: not within
    # the day looked at. Without the timed bolus it could come now.
    assert limit24h.lifts_at_ms(dataclasses.replace(w, past_per_minute_fg=(5, *[0] * 1440)), 6) is None
    assert limit24h.lifts_at_ms(dataclasses.replace(w, timed_fg=(), past_per_minute_fg=(5, *[0] * 1440)), 6) == MINUTE


# ================================================================ the low-reservoir projections


def test_rule_reservoir_low_projection_with_timed_boluses():
    """3 mL, low at 2 mL: 5 mg to go at 1 mg/day and 0.5 mg at 08:00 and 20:00: by day 2
    08:00, 2.33 mg of basal and five boluses (4.83 mg); the rest by 12:00."""
    daily = ((8 * HOUR, MG // 2 * FG_PER_NG), (20 * HOUR, MG // 2 * FG_PER_NG))
    at = reservoir.low_at_local_ms((BasalStep(0, MG),), 0, 3_000_000, 2_000, 5 * MG, daily, 0)
    assert at == 2 * DAY + 12 * HOUR
    # Basal alone: 5 days.
    assert reservoir.low_at_local_ms((BasalStep(0, MG),), 0, 3_000_000, 2_000, 5 * MG) == 5 * DAY
    # One already due and held at now counts now: from 08:30, the 08:00 one not yet given,
    # six boluses (3 mg) and 59.5 h of basal (2.48 mg) by day 2 20:00, which the sixth
    # takes over 5 mg; five (2.5 mg) and the basal are 4.98 mg just before.
    held = reservoir.low_at_local_ms((BasalStep(0, MG),), 8 * HOUR + 30 * MINUTE, 3_000_000, 2_000, 5 * MG, daily, 0)
    assert held == 2 * DAY + 20 * HOUR
    # Given (dealt with) at 08:00: counted no more: five boluses by day 2 20:00 leave
    # 0.02 mg, half an hour of basal.
    given = reservoir.low_at_local_ms(
        (BasalStep(0, MG),), 8 * HOUR + 30 * MINUTE, 3_000_000, 2_000, 5 * MG, daily, 8 * HOUR
    )
    assert given == 2 * DAY + 20 * HOUR + 30 * MINUTE


@pytest.mark.parametrize("local_ms", [0, 7 * HOUR + 12_345, 3 * DAY + 23 * HOUR + 59 * MINUTE])
def test_rule_reservoir_low_projection_by_bisection_is_the_basal_walk_when_nothing_else_counts(local_ms):
    basal = (BasalStep(0, MG), BasalStep(7 * H, 1_500_000), BasalStep(22 * H, MG))
    walk = reservoir.low_at_local_ms(basal, local_ms, 11_987_654, 2_000, 5 * MG)
    assert reservoir.low_at_local_ms(basal, local_ms, 11_987_654, 2_000, 5 * MG, ((0, 0),), local_ms) == walk


def test_rule_every_bolus_allowed_by_lockout_and_count():
    """Lockout 2 h, 4 a day from 0: at 0, 2, 4, 6 h, then 24, 26, 28, 30 h ..."""
    e = reservoir.EveryBolus(first_local_ms=0, dose_fg=1, lockout_ms=2 * HOUR, max_per_24h=4)
    counts = [e.count(t) for t in (-1, 0, 2 * HOUR - 1, 2 * HOUR, 6 * HOUR, 23 * HOUR, 24 * HOUR, 30 * HOUR, 48 * HOUR)]
    assert counts == [0, 1, 1, 2, 4, 4, 5, 8, 9]
    # Lockout 8 h, 6 a day: the lockout allows only 3 a day.
    e = reservoir.EveryBolus(first_local_ms=0, dose_fg=1, lockout_ms=8 * HOUR, max_per_24h=6)
    assert [e.count(t) for t in (0, 8 * HOUR, 24 * HOUR, 25 * HOUR)] == [1, 2, 4, 4]


def test_rule_reservoir_worst_case_refill_date():
    """5 mg to go at 1 mg/day with 0.5 mg boluses every 2 h, 4 a day, the first at 02:00:
    02:00-08:00 give 2 mg, 26:00-30:00 1.5 mg more, 32:00 reaches it (basal 1.33 mg)."""
    e = reservoir.EveryBolus(first_local_ms=2 * HOUR, dose_fg=MG // 2 * FG_PER_NG, lockout_ms=2 * HOUR, max_per_24h=4)
    at = reservoir.low_at_local_ms((BasalStep(0, MG),), 0, 3_000_000, 2_000, 5 * MG, every_bolus=e)
    assert at == 32 * HOUR


# ================================================================ validation


def test_rule_prescription_timed_boluses_valid_and_round_trip():
    validate(reference(), DRUGS, HW, 1_000)
    p = reference()
    assert Prescription.from_dict(p.to_dict()) == p
    # A prescription committed before timed boluses existed has none.
    old = {k: v for k, v in p.to_dict().items() if k != "timed"}
    assert Prescription.from_dict(old).timed == ()


def test_rule_prescription_timed_hard_limit_as_the_pump_measures_it():
    """Basal 1.3125 mg/day, its highest minute 1.0417 ug, a stroke 2.5 ug, the two boluses
    0.5 mg, and one again, 0.25 mg, with the basal it holds back for 15 min at up to
    1.5 mg/day, 15.625 ug: 2.081666667 mg. 2081667 ng is enough, 2081666 is not, and the
    refusal names the second bolus's dose."""
    validate(reference(max_dose_24h_ng=2_081_667), DRUGS, HW, 1_000)
    e = refusal(reference(max_dose_24h_ng=2_081_666))
    assert e.field == "timed_bolus[1].dose_ng"
    assert "at least 2.08167 mg, not 2.08167 mg" in e.error


def test_rule_prescription_timed_against_the_drugs_daily_maximum():
    """Morphine at most 15 mg a day: 1.3125 mg of basal and 1.75 mg every 3 h reach
    15.31 mg with the eighth."""
    eight = tuple(TimedBolus(k * 3 * H, 1_750_000, 1_800) for k in range(8))
    e = refusal(reference(timed=eight, max_dose_24h_ng=15 * MG))
    assert e.field == "timed_bolus[7].dose_ng" and "maximum daily dose 15 mg" in e.error


@pytest.mark.parametrize(
    ("timed", "field", "says"),
    [
        (tuple(TimedBolus(k * 2 * H, MG // 10, 600) for k in range(9)), "timed_bolus", "at most 8"),
        ((TimedBolus(20 * H, MG // 4, 900), TimedBolus(8 * H, MG // 4, 900)), "timed_bolus[1].start_s", "08:00 comes"),
        ((TimedBolus(8 * H, MG // 4, 900), TimedBolus(8 * H, MG // 4, 900)), "timed_bolus[1].start_s", "duplicates"),
        ((TimedBolus(86_400, MG // 4, 900),), "timed_bolus[0].start_s", "not a time of day"),
        ((TimedBolus(8 * H, 0, 900),), "timed_bolus[0].dose_ng", "needs a dose"),
        ((TimedBolus(8 * H, 3 * MG + 1, 3_600),), "timed_bolus[0].dose_ng", "larger than the 24 h hard limit"),
        ((TimedBolus(8 * H, 2_499, 900),), "timed_bolus[0].dose_ng", "less than one stroke"),
        ((TimedBolus(8 * H, MG // 4, 59),), "timed_bolus[0].duration_s", "outside 60..3600"),
        ((TimedBolus(8 * H, MG // 4, 3_601),), "timed_bolus[0].duration_s", "outside 60..3600"),
        ((TimedBolus(8 * H, MG // 4, 89),), "timed_bolus[0].duration_s", "100 strokes in 89 s"),
        (
            (TimedBolus(8 * H, MG // 4, 900), TimedBolus(8 * H + 899, MG // 4, 900)),
            "timed_bolus[1].start_s",
            "before timed_bolus[0] (08:00 for 900 s) has ended",
        ),
        (
            (TimedBolus(300, MG // 4, 900), TimedBolus(23 * H + 55 * 60, MG // 4, 900)),
            "timed_bolus[0].start_s",
            "00:05 is before timed_bolus[1] (23:55 for 900 s) has ended",
        ),
    ],
)
def test_rule_prescription_timed_refusals_name_the_field(timed, field, says):
    e = refusal(reference(timed=timed))
    assert e.field == field
    assert says in e.error, e.error


def test_rule_prescription_timed_boluses_back_to_back_are_valid():
    """One ends as the next starts, also across midnight."""
    back = (TimedBolus(300, MG // 4, 900), TimedBolus(1_200, MG // 4, 900), TimedBolus(23 * H + 55 * 60, MG // 4, 600))
    validate(reference(timed=back), DRUGS, HW, 1_000)
