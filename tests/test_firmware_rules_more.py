"""Rules of firmware/rules/ not covered in tests/test_firmware_rules.py: the rolling 24 h
hard limit (fits, drug out of the catheter tip, the bolus projections with a basal
schedule), the lockout, catch-up, the odometer bound, the NVM and the clock doubted at
boot, and the requests: PROGRAM, START, PRIME, CLINICIAN_BOLUS, REFILL_COMPLETE and
command ids. Fixed inputs, brute-force references written here and the real drug
library only: no ports, no processes, no controller.

Every refusal is checked for its reason, its field and the part of its detail a
clinician acts on; every limit exactly at it and one over; every list of refusals in the
order the rule checks them (each reason wins over all the later ones at once).
"""

from __future__ import annotations

import calendar
import dataclasses
from itertools import accumulate, pairwise

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from firmware.board.druglib import load_library
from firmware.catheter import Catheter
from firmware.delivery import Fill
from firmware.prescription import BasalStep, HwLimits, PatientBolus, Prescription
from firmware.rules import (
    Refusal,
    catchup,
    catheter,
    clinician_bolus,
    command_id,
    lockout,
    memory,
    prime,
    program,
    ready,
    refill,
    start,
)
from firmware.rules.clock import BootTime, at_boot, set_clock_refusal
from firmware.rules.limit24h import Window, drug_out_fg, fits, lifts_at_ms, max_window_with_fg
from firmware.rules.odometer import Outstanding, unreported_bound
from protocol.codes import MemoryProof, NakReason, TherapyState
from tests.strategies import scaled

FG = 1_000_000  # fg per ng
MG = 1_000_000  # ng per mg
MCG = 1_000  # ng per mcg
MIN = 60_000
H = 3_600_000
DAY = 86_400_000
N = 24 * 60 + 1  # minutes the pump's rolling 24 h touches

OUT_OF_RANGE, WRONG_STATE = NakReason.OUT_OF_RANGE, NakReason.WRONG_STATE
BOOT, STOPPED, RUNNING, REFILL, HALTED = (
    TherapyState.BOOT,
    TherapyState.STOPPED,
    TherapyState.RUNNING,
    TherapyState.REFILL,
    TherapyState.HALTED,
)

# The emulator's default pump model: 0.5 uL strokes, at most one per 1.8 s; morphine at
# 5 mg/mL puts 2500 ng in a stroke.
HW = HwLimits(stroke_nl=500, min_stroke_interval_ms=1_800, reservoir_capacity_ul=20_000, max_strokes_per_run=64)
EMPTY_UL = 1_000
DRUGS = load_library()
STROKE_FG = 500 * 5 * MG


def reference(**changes: object) -> Prescription:
    """domain.md's reference therapy (as tests/test_firmware_prescription.py): morphine
    5 mg/mL, basal 1.0 / 1.5 / 1.0 mg/day at 00:00 / 07:00 / 22:00, bolus 0.1 mg over
    10 min, lockout 2 h, 6 per 24 h, hard limit 3 mg, low-reservoir alarm at 2 mL."""
    p = Prescription(
        drug="morphine",
        concentration_ng_per_ml=5 * MG,
        basal=(BasalStep(0, 1 * MG), BasalStep(7 * 3_600, 1_500_000), BasalStep(22 * 3_600, 1 * MG)),
        patient_bolus=PatientBolus(dose_ng=100_000, duration_s=600, lockout_s=7_200, max_per_24h=6),
        max_dose_24h_ng=3 * MG,
        low_reservoir_ul=2_000,
        catheter_volume_nl=200_000,
    )
    return dataclasses.replace(p, **changes)


RX = reference()
HELD_MORPHINE = "the reservoir holds morphine at 5 mg/mL (recorded at the last refill)"


def assert_refused(r: Refusal | None, reason: NakReason, field: str, *words: str) -> None:
    assert r is not None, "accepted, expected a refusal"
    assert (r.reason, r.field) == (reason, field), r
    for w in words:
        assert w in r.detail, (w, r.detail)


def first_of_all_later(refusals: list, i: int) -> dict:
    """The changes of refusal i and of every one after it, at once."""
    changes: dict = {}
    for *_, c in refusals[i:]:
        changes.update(c)
    return changes


# ================================================================ limit24h: fits


@pytest.mark.parametrize(
    ("window", "add", "limit", "ok"),
    [
        (0, 0, 0, True),
        (2 * MG * FG, MG * FG, 3 * MG * FG, True),  # reaches the limit exactly: within it
        (2 * MG * FG, MG * FG + 1, 3 * MG * FG, False),  # one fg over
        (2 * MG * FG + 1, MG * FG, 3 * MG * FG, False),
        (3 * MG * FG, 0, 3 * MG * FG, True),  # at the limit, adding nothing
        (3 * MG * FG + 1, 0, 3 * MG * FG, False),  # already over: even nothing does not fit
    ],
)
def test_rule_limit24h_fits_up_to_the_limit_and_not_one_fg_over(window, add, limit, ok):
    assert fits(window, add, limit) is ok


# ================================================================ limit24h: drug out of the tip


def reference_drug_out(catheter, reservoir: int, stroke_nl: int, strokes: int) -> int:
    """nL by nL: the fluid column from the tip back, then the reservoir's drug behind it."""
    column = [conc for nl, conc in catheter for _ in range(nl)]
    volume = stroke_nl * strokes
    column += [reservoir] * max(0, volume - len(column))
    return sum(column[:volume])


def test_rule_limit24h_drug_out_no_strokes_push_nothing():
    assert drug_out_fg([(200_000, 5 * MG)], 10 * MG, 500, 0) == 0
    assert drug_out_fg([], 10 * MG, 500, 0) == 0


def test_rule_limit24h_drug_out_without_a_catheter_is_the_reservoirs_drug():
    assert drug_out_fg([], 5 * MG, 500, 7) == 7 * 500 * 5 * MG


def test_rule_limit24h_drug_out_comes_from_the_tip_first():
    cath = [(1_000, 5 * MG), (199_000, 10 * MG)]  # old drug at the tip, new behind it
    assert drug_out_fg(cath, 20 * MG, 500, 1) == 500 * 5 * MG
    assert drug_out_fg(cath, 20 * MG, 500, 2) == 1_000 * 5 * MG  # exactly the tip segment
    assert drug_out_fg(cath, 20 * MG, 500, 3) == 1_000 * 5 * MG + 500 * 10 * MG  # into the next one


def test_rule_limit24h_drug_out_a_stroke_straddling_segments_carries_both():
    cath = [(750, 5 * MG), (1_000, 10 * MG)]
    assert drug_out_fg(cath, 1, 500, 2) == 750 * 5 * MG + 250 * 10 * MG


def test_rule_limit24h_drug_out_beyond_the_catheter_comes_from_the_reservoir():
    cath = [(1_000, 5 * MG), (1_000, 10 * MG)]
    # 5 strokes = 2500 nL: the whole catheter, then 500 nL of reservoir drug.
    assert drug_out_fg(cath, 20 * MG, 500, 5) == 1_000 * 5 * MG + 1_000 * 10 * MG + 500 * 20 * MG
    # Exactly the catheter: nothing of the reservoir's yet.
    assert drug_out_fg(cath, 20 * MG, 500, 4) == 1_000 * 5 * MG + 1_000 * 10 * MG


def test_rule_limit24h_drug_out_an_empty_catheter_carries_nothing_until_the_drug_reaches_the_tip():
    empty = [(200_000, 0)]  # 400 strokes of nothing (a new catheter being primed)
    assert drug_out_fg(empty, 5 * MG, 500, 400) == 0
    assert drug_out_fg(empty, 5 * MG, 500, 401) == 500 * 5 * MG
    # A primed catheter (its drug at the reservoir's concentration) carries drug at once.
    assert drug_out_fg([(200_000, 5 * MG)], 5 * MG, 500, 400) == 200_000 * 5 * MG


segments = st.lists(st.tuples(st.integers(0, 700), st.sampled_from([0, 1, 5 * MG, 10 * MG, 20 * MG])), max_size=5)


@settings(max_examples=scaled(100))
@given(segments, st.sampled_from([0, 5 * MG, 20 * MG]), st.integers(1, 600), st.integers(0, 8))
def test_rule_limit24h_drug_out_matches_the_fluid_column_nl_by_nl(cath, reservoir, stroke_nl, strokes):
    assert drug_out_fg(cath, reservoir, stroke_nl, strokes) == reference_drug_out(cath, reservoir, stroke_nl, strokes)


@settings(max_examples=scaled(50))
@given(
    st.lists(st.tuples(st.integers(1, 5_000), st.sampled_from([0, 5 * MG, 10 * MG])), max_size=4),
    st.sampled_from([5 * MG, 20 * MG]),
    st.integers(0, 40),
)
def test_rule_limit24h_drug_out_is_what_the_catheter_then_counts_stroke_by_stroke(cath, reservoir, strokes):
    # The guard's prediction for a run and the engine's count of its strokes agree.
    vol = sum(nl for nl, _ in cath)
    c = Catheter.from_data([vol, 0, [[nl, conc] for nl, conc in cath]])
    predicted = drug_out_fg(c.segments_tip_first(), reservoir, 500, strokes)
    assert predicted == sum(c.push(500, reservoir) for _ in range(strokes))


# ================================================================ limit24h: the bolus projections


def cumulative(steps, t_ms: int) -> int:
    """Reference: the schedule's integral from local time 0 to t_ms in fg*ms/day units
    (rate ng/day x ms x 1e6): whole days first, then each step's overlap with [0, tod)."""
    days, tod = divmod(t_ms, DAY)
    bounds = [s.start_s * 1000 for s in steps] + [DAY]
    per_day = sum(s.rate_ng_per_day * (bounds[i + 1] - bounds[i]) for i, s in enumerate(steps))
    part = sum(s.rate_ng_per_day * max(0, min(tod, bounds[i + 1]) - bounds[i]) for i, s in enumerate(steps))
    return (days * per_day + part) * FG


def reference_plan(steps, local_ms: int, into_ms: int, minutes: int) -> list[int]:
    """Planned basal per minute (fg): minute 0 the rest of the current minute; the first k
    minutes sum to the exact integral over them rounded down."""
    if not steps:
        return [0] * minutes
    base = cumulative(steps, local_ms)
    ends = [local_ms - into_ms + (k + 1) * MIN for k in range(minutes)]
    totals = [0] + [(cumulative(steps, e) - base) // DAY for e in ends]
    return [b - a for a, b in pairwise(totals)]


def timeline(w: Window, minutes: int) -> dict[int, int]:
    """Drug in each minute relative to the current one (0), past and planned: the
    current minute holds what was delivered in it so far, the rest of it planned, and
    what is owed."""
    n = len(w.past_per_minute_fg)
    plan = reference_plan(w.basal, w.local_ms, w.now_ms % MIN, minutes)
    out = {m: w.past_per_minute_fg[m + n - 1] for m in range(-(n - 1), 0)}
    out[0] = w.past_per_minute_fg[-1] + plan[0] + w.owed_fg
    out.update({m: plan[m] for m in range(1, minutes)})
    return out


def window_ending(t: dict[int, int], n: int, j: int) -> int:
    return sum(t[m] for m in range(j - n + 1, j + 1))


def reference_max_window_with(w: Window, dose: int) -> int:
    """Brute force: every window from the one ending in the current minute to the one
    ending n - 1 minutes on, the whole dose in the current minute."""
    n = len(w.past_per_minute_fg)
    t = timeline(w, n)
    return max(window_ending(t, n, j) for j in range(n)) + dose


def reference_lifts_at(w: Window, dose: int) -> int | None:
    """Brute force of the rule as its docstring states it: the first minute a (1..n on)
    in which every window holding minute a stays within the limit with the whole dose in
    it; windows that end n or more minutes on (they dropped minutes between now and a)
    with a stroke in hand."""
    n = len(w.past_per_minute_fg)
    t = timeline(w, 2 * n)
    for a in range(1, n + 1):
        if all(
            window_ending(t, n, j) + dose + (w.stroke_fg if j >= n else 0) <= w.max_dose_24h_fg for j in range(a, a + n)
        ):
            return w.now_ms // MIN * MIN + a * MIN
    return None


# 1.44 mg/day is exactly 1000 ng (1e9 fg) a minute: figures by hand are whole.
FLAT = (BasalStep(0, 1_440_000),)
PER_MIN = 10**9
T0 = 40 * DAY  # a minute boundary


def flat_window(**changes: object) -> Window:
    w = Window(
        now_ms=T0,
        local_ms=T0 + 9 * H,
        past_per_minute_fg=(PER_MIN,) * (N - 1) + (0,),  # basal flowing all day; the current minute just began
        basal=FLAT,
        owed_fg=0,
        max_dose_24h_fg=3 * MG * FG,
        stroke_fg=STROKE_FG,
    )
    return dataclasses.replace(w, **changes)


def test_rule_limit24h_projection_with_basal_counts_the_whole_day_of_it_and_the_dose():
    # A full day of basal (1441 minutes: the pump's window errs high) and the dose.
    w = flat_window()
    assert max_window_with_fg(w, 0) == N * PER_MIN
    assert max_window_with_fg(w, 1_559 * MCG * FG) == 3 * MG * FG  # at the limit
    assert max_window_with_fg(dataclasses.replace(w, owed_fg=7), 5) == N * PER_MIN + 12  # owed counts now


def test_rule_limit24h_projection_part_way_into_a_minute_plans_only_the_rest_of_it():
    # 30 s into the minute with nothing delivered yet: the current minute plans half a
    # minute of basal, and the window ending a day on holds it and 1440 whole minutes.
    w = flat_window(now_ms=T0 + 30_000, local_ms=T0 + 30_000, past_per_minute_fg=(0,) * N)
    assert max_window_with_fg(w, 0) == 1_440 * PER_MIN + PER_MIN // 2


def test_rule_limit24h_projection_follows_the_schedule_steps():
    # Nothing until 12:00, then 1.44 mg/day until midnight: from 11:00 the next 1441
    # minutes hold 12:00..24:00 at the rate, 720 minutes.
    steps = (BasalStep(0, 0), BasalStep(12 * 3_600, 1_440_000))
    w = flat_window(local_ms=T0 + 11 * H, past_per_minute_fg=(0,) * N, basal=steps)
    assert max_window_with_fg(w, 0) == 720 * PER_MIN
    # From 23:30: 23:30..24:00 and, the next day, 12:00..23:31 (the pump's extra minute).
    assert max_window_with_fg(dataclasses.replace(w, local_ms=T0 + 23 * H + 30 * MIN), 0) == 721 * PER_MIN


def test_rule_limit24h_lifts_when_old_delivery_leaves_with_a_stroke_in_hand():
    # Basal flows all day; 2 mg more went in 100 minutes into the window, so a 1 mg bolus
    # is over the limit now. Once that minute leaves (minute 101 from now), every window
    # is a day of basal plus the dose: it is granted if a stroke more still fits.
    past = list(flat_window().past_per_minute_fg)
    past[100] += 2 * MG * FG
    dose = 1 * MG * FG
    room = N * PER_MIN + dose + STROKE_FG
    w = flat_window(past_per_minute_fg=tuple(past), max_dose_24h_fg=room)
    assert max_window_with_fg(w, dose) > room  # refused now
    assert lifts_at_ms(w, dose) == T0 + 101 * MIN
    # One fg less room: the windows that end a day on and later have no stroke in hand.
    assert lifts_at_ms(dataclasses.replace(w, max_dose_24h_fg=room - 1), dose) is None


def test_rule_limit24h_lifts_at_is_on_a_minute_boundary_after_now():
    past = [0] * N
    past[0] = 2 * MG * FG
    w = flat_window(now_ms=T0 + 12_345, local_ms=T0 + 12_345, past_per_minute_fg=tuple(past), basal=())
    assert lifts_at_ms(w, 1_500_000 * FG) == T0 + MIN  # the oldest minute leaves at the next one


@st.composite
def schedules(draw) -> tuple[BasalStep, ...]:
    starts = sorted(draw(st.sets(st.integers(1, 86_399), max_size=3)))
    rates = draw(st.lists(st.integers(0, 3_000_001), min_size=len(starts) + 1, max_size=len(starts) + 1))
    return tuple(BasalStep(s, r) for s, r in zip([0, *starts], rates, strict=True))


@st.composite
def windows(draw, near_grant: bool = False, max_minutes: int = 25) -> tuple[Window, int]:
    """A short window (n minutes stand for the day: the rules hold for any n) around a
    change of the schedule, with its past, what is owed, a stroke and a dose; the limit
    anywhere up to all of it, or (only, when near_grant) about where a bolus starts to be
    granted at some minute of the next n."""
    n = draw(st.integers(1, max_minutes))
    steps = draw(st.one_of(st.just(()), schedules()))
    anchor = draw(st.sampled_from([s.start_s * 1000 for s in steps] + [DAY] if steps else [DAY]))
    local = 3 * DAY + anchor + draw(st.integers(-2 * n * MIN, n * MIN))
    now = 50 * DAY + draw(st.integers(0, 10 * MIN))
    local += now % MIN - local % MIN  # the same alignment within a minute as the pump's time
    past = tuple(draw(st.lists(st.integers(0, 3 * 10**9), min_size=n, max_size=n)))
    owed = draw(st.integers(0, 3 * 10**9))
    stroke = draw(st.integers(1, 3 * 10**9))
    dose = draw(st.integers(0, 5 * 10**9))
    # Under a limit below the planned basal of the next n minutes (any later "day") and
    # the dose, no bolus is ever granted; the most anything now could need is all of it.
    plan = reference_plan(steps, local, now % MIN, 2 * n)
    least = max(sum(plan[j - n + 1 : j + 1]) for j in range(n, 2 * n)) + dose
    most = sum(past) + owed + sum(plan) + dose + stroke
    near = st.one_of(st.integers(least - stroke, least + 2 * stroke), st.integers(least, max(least, most)))
    limit = draw(near if near_grant else st.one_of(st.integers(0, most), near))
    return Window(now, local, past, steps, owed, limit, stroke), dose


@settings(max_examples=scaled(100))
@given(windows())
def test_rule_limit24h_max_window_with_matches_brute_force(case):
    w, dose = case
    assert max_window_with_fg(w, dose) == reference_max_window_with(w, dose)


@settings(max_examples=scaled(100))
@given(windows())
def test_rule_limit24h_lifts_at_matches_brute_force(case):
    w, dose = case
    assert lifts_at_ms(w, dose) == reference_lifts_at(w, dose)


@settings(max_examples=scaled(100))
@given(windows(near_grant=True))
def test_rule_limit24h_a_bolus_requested_when_lifts_at_says_passes_the_projection(case):
    # The basal planned meanwhile is delivered in whole strokes, never ahead of what is
    # due (so up to a stroke behind it), and nothing else is given. At the time lifts_at
    # said, the window's past is the old past still in it and that delivery, what is still
    # owed is owed, and the same bolus request passes the projection.
    w, dose = case
    n = len(w.past_per_minute_fg)
    at = lifts_at_ms(w, dose)
    assume(at is not None)
    minute0 = w.now_ms // MIN * MIN
    a = (at - minute0) // MIN
    assert at == minute0 + a * MIN and 1 <= a <= n
    due = list(accumulate(timeline(w, a)[m] - (w.past_per_minute_fg[-1] if m == 0 else 0) for m in range(a)))
    made = [d // w.stroke_fg * w.stroke_fg for d in due]  # whole strokes, never ahead
    delivered = [made[0], *(y - x for x, y in pairwise(made))]
    minute = {m: w.past_per_minute_fg[m + n - 1] for m in range(-(n - 1), 1)}
    minute[0] += delivered[0]
    minute.update({m: delivered[m] for m in range(1, a)})
    minute[a] = 0  # the current minute has just begun
    later = Window(
        now_ms=at,
        local_ms=w.local_ms + (at - w.now_ms),
        past_per_minute_fg=tuple(minute[m] for m in range(a - n + 1, a + 1)),
        basal=w.basal,
        owed_fg=due[-1] - made[-1],
        max_dose_24h_fg=w.max_dose_24h_fg,
        stroke_fg=w.stroke_fg,
    )
    assert max_window_with_fg(later, dose) <= w.max_dose_24h_fg


# ================================================================ lockout


@pytest.mark.parametrize(
    ("until", "expect"),
    [
        (0, T0 + 7_200_000),  # none running: the lockout from now
        (T0 + 7_200_000 - 1, T0 + 7_200_000),
        (T0 + 7_200_000, T0 + 7_200_000),
        (T0 + 7_200_001, T0 + 7_200_001),  # a longer one running is kept
        (T0 + DAY, T0 + DAY),
    ],
)
def test_rule_lockout_after_patient_bolus_and_after_change_never_shorten(until, expect):
    assert lockout.after_patient_bolus(T0, 7_200, until) == expect
    assert lockout.after_change(T0, 7_200, until) == expect


@pytest.mark.parametrize("until", [0, T0 - 1, T0 + 5 * MIN, T0 + 3 * DAY])
def test_rule_lockout_after_change_without_patient_bolus_leaves_the_lockout(until):
    assert lockout.after_change(T0, None, until) == until


@pytest.mark.parametrize(
    ("until", "expect"),
    [(0, T0 + DAY), (T0 + DAY - 1, T0 + DAY), (T0 + DAY + 1, T0 + DAY + 1)],
)
def test_rule_lockout_after_memory_loss_is_a_whole_day_or_longer(until, expect):
    assert lockout.after_memory_loss(T0, until) == expect


@settings(max_examples=scaled(50))
@given(st.integers(0, 100 * DAY), st.integers(900, 86_400), st.integers(0, 200 * DAY))
def test_rule_lockout_only_ever_lengthens(now, lockout_s, until):
    for got, least in [
        (lockout.after_patient_bolus(now, lockout_s, until), now + lockout_s * 1000),
        (lockout.after_change(now, lockout_s, until), now + lockout_s * 1000),
        (lockout.after_memory_loss(now, until), now + DAY),
    ]:
        assert got >= until and got >= least
        assert got in (until, least)


# ================================================================ catch-up


# 2 h at 1.5 mg/day is 125 mcg: the catch-up limit's worth, in the accumulator's fg*ms/day.
KEEP = 125 * MCG * FG * DAY
COST = STROKE_FG * DAY  # one 2500 ng stroke


@pytest.mark.parametrize(
    ("owed", "forfeit"),
    [
        (0, 0),
        (KEEP - 1, 0),
        (KEEP, 0),  # exactly the limit's worth is kept
        (KEEP + 1, 0),
        (KEEP + COST - 1, 0),  # less than a whole stroke over
        (KEEP + COST, 1),  # one stroke over
        (KEEP + 3 * COST + COST // 2, 3),
        (-5 * COST, 0),  # delivery ahead of the schedule owes nothing
    ],
)
def test_rule_catchup_forfeits_whole_strokes_beyond_the_limit(owed, forfeit):
    assert catchup.strokes_to_forfeit(owed, COST, 1_500_000, 2 * H) == forfeit


@pytest.mark.parametrize("cost", [0, -COST])
def test_rule_catchup_a_stroke_without_drug_forfeits_nothing(cost):
    assert catchup.strokes_to_forfeit(KEEP + 100 * COST, cost, 1_500_000, 2 * H) == 0


def test_rule_catchup_a_schedule_of_zero_rates_keeps_nothing():
    assert catchup.strokes_to_forfeit(3 * COST + 7, COST, 0, 2 * H) == 3


@settings(max_examples=scaled(50))
@given(st.integers(0, 10**22), st.integers(1, 10**18), st.integers(0, 5_000_000), st.integers(0, 10 * H))
def test_rule_catchup_keeps_the_limits_worth_plus_less_than_a_stroke(owed, cost, rate, catchup_ms):
    n = catchup.strokes_to_forfeit(owed, cost, rate, catchup_ms)
    keep = rate * FG * catchup_ms
    assert n >= 0
    if owed <= keep:
        assert n == 0
    else:
        assert keep <= owed - n * cost < keep + cost


# ================================================================ odometer


def test_rule_odometer_no_runs_no_unreported_strokes():
    assert unreported_bound([], T0) == 0


@pytest.mark.parametrize(
    ("elapsed", "bound"),
    [
        (0, 1),  # the first stroke comes at once
        (1_799, 1),
        (1_800, 2),
        (5 * 1_800 - 1, 5),
        (5 * 1_800, 6),
        (-10 * MIN, 1),  # a report newer than now (time before since): still the first stroke
    ],
)
def test_rule_odometer_no_faster_than_the_interval(elapsed, bound):
    assert unreported_bound([Outstanding(strokes_left=64, interval_ms=1_800, since_ms=T0)], T0 + elapsed) == bound


@pytest.mark.parametrize(("left", "bound"), [(0, 0), (1, 1), (6, 6), (7, 7), (8, 7)])
def test_rule_odometer_no_more_than_the_strokes_left(left, bound):
    # 6 intervals since: at most 7 strokes could be made.
    assert unreported_bound([Outstanding(left, 3_000, T0)], T0 + 6 * 3_000) == bound


def test_rule_odometer_several_runs_are_summed_each_bounded_by_itself():
    runs = [
        Outstanding(strokes_left=3, interval_ms=1_800, since_ms=T0 - H),  # long done: its 3
        Outstanding(strokes_left=64, interval_ms=10_000, since_ms=T0 - 25_000),  # 2 intervals: 3
        Outstanding(strokes_left=0, interval_ms=1_800, since_ms=T0 - H),  # nothing left
        Outstanding(strokes_left=10, interval_ms=1_800, since_ms=T0 + MIN),  # since after now: 1
    ]
    assert unreported_bound(runs, T0) == 3 + 3 + 0 + 1
    assert unreported_bound(iter(runs), T0) == 7  # any iterable, read once


# ================================================================ memory


def mem(**changes: object) -> memory.MemoryFacts:
    f = memory.MemoryFacts(
        nvm_blank=False,
        hw_boot_count=8,
        nvm_boot_count=7,
        hw_odometer=1_000,
        nvm_odometer=990,
        unreported_bound=10,
    )
    return dataclasses.replace(f, **changes)


def test_rule_memory_an_ordinary_boot_is_neither_outdated_nor_older():
    assert memory.outdated(mem()) is None
    assert not memory.hardware_older(mem())


@pytest.mark.parametrize(("boots", "by"), [(0, None), (1, None), (2, 1), (9, 8)])
def test_rule_memory_blank_nvm_is_outdated_only_after_earlier_boots(boots, by):
    f = mem(nvm_blank=True, hw_boot_count=boots, nvm_boot_count=None, nvm_odometer=None, unreported_bound=0)
    expect = None if by is None else memory.Outdated(MemoryProof.BLANK_AFTER_BOOTS, by)
    assert memory.outdated(f) == expect
    assert not memory.hardware_older(f)  # a blank NVM saw nothing to be behind of


def test_rule_memory_blank_nvm_is_judged_on_the_boot_count_alone():
    f = mem(nvm_blank=True, hw_boot_count=1, hw_odometer=10**6, nvm_odometer=0, unreported_bound=0)
    assert memory.outdated(f) is None
    assert not memory.hardware_older(mem(nvm_blank=True, hw_boot_count=1, nvm_boot_count=5, hw_odometer=0))


@pytest.mark.parametrize(("hw_odometer", "by"), [(999, None), (1_000, None), (1_001, 1), (1_100, 100)])
def test_rule_memory_odometer_ahead_of_every_stroke_the_runs_could_make(hw_odometer, by):
    # NVM saw 990 and its runs could have made 10 more: 1000 is exactly the bound.
    expect = None if by is None else memory.Outdated(MemoryProof.ODOMETER_AHEAD, by)
    assert memory.outdated(mem(hw_odometer=hw_odometer)) == expect


def test_rule_memory_without_an_odometer_recorded_nothing_proves_the_nvm_older():
    assert memory.outdated(mem(nvm_odometer=None, hw_odometer=10**9)) is None
    assert not memory.hardware_older(mem(nvm_odometer=None, hw_odometer=0))


def test_rule_memory_boots_the_nvm_did_not_record_prove_nothing():
    assert memory.outdated(mem(hw_boot_count=500)) is None
    assert not memory.hardware_older(mem(hw_boot_count=500))


@pytest.mark.parametrize(("hw_boots", "older"), [(6, True), (7, True), (8, False)])
def test_rule_memory_hardware_older_when_its_boot_count_did_not_move_on(hw_boots, older):
    assert memory.hardware_older(mem(hw_boot_count=hw_boots)) is older


@pytest.mark.parametrize(("hw_odometer", "older"), [(989, True), (990, False), (991, False)])
def test_rule_memory_hardware_older_when_its_odometer_is_behind(hw_odometer, older):
    assert memory.hardware_older(mem(hw_odometer=hw_odometer)) is older
    assert memory.hardware_older(mem(hw_odometer=hw_odometer, nvm_boot_count=None)) is older


# ================================================================ clock


def boot_time(**changes: object) -> BootTime:
    b = BootTime(
        pump_ms=5_000_000,
        rtc_s=1_700_000_000,
        skew_ms=1_000,
        offset_s=3_600,
        seen_ms=5_001_000,  # exactly the pump's time plus the skew: it did not go back
        seen_local_ms=(1_700_000_000 + 3_600) * 1000,
    )
    return dataclasses.replace(b, **changes)


def test_rule_clock_a_new_pump_keeps_its_time_and_nothing_went_back():
    v = at_boot(boot_time(seen_ms=None, seen_local_ms=None, pump_ms=0, rtc_s=0))
    assert (v.skew_ms, v.offset_s, v.pump_back_ms, v.rtc_back_ms, v.went_back) == (1_000, 3_600, 0, 0, False)


def test_rule_clock_time_that_went_on_changes_nothing():
    v = at_boot(boot_time(pump_ms=9_000_000, rtc_s=1_700_000_100))
    assert (v.skew_ms, v.offset_s, v.went_back) == (1_000, 3_600, False)


@pytest.mark.parametrize("back", [1, 999, 12 * H])
def test_rule_clock_pump_time_back_grows_the_skew_by_exactly_that(back):
    b = boot_time(pump_ms=5_000_000 - back)
    v = at_boot(b)
    assert (v.pump_back_ms, v.skew_ms, v.went_back) == (back, 1_000 + back, True)
    assert b.pump_ms + v.skew_ms == b.seen_ms  # controller time goes on from where it was
    assert (v.offset_s, v.rtc_back_ms) == (3_600, 0)


@pytest.mark.parametrize(("back_ms", "rtc_back", "offset_s"), [(1, 0, 3_600), (999, 0, 3_600), (1_000, 1_000, 3_601)])
def test_rule_clock_rtc_back_by_less_than_a_second_is_ignored(back_ms, rtc_back, offset_s):
    v = at_boot(boot_time(seen_local_ms=(1_700_000_000 + 3_600) * 1000 + back_ms))
    assert (v.rtc_back_ms, v.offset_s, v.went_back) == (rtc_back, offset_s, rtc_back > 0)
    assert (v.skew_ms, v.pump_back_ms) == (1_000, 0)


@pytest.mark.parametrize(("back_ms", "grows_s"), [(1_001, 2), (1_999, 2), (2_000, 2), (2_001, 3), (3_600_000, 3_600)])
def test_rule_clock_rtc_back_grows_the_offset_by_whole_seconds_rounding_up(back_ms, grows_s):
    b = boot_time(seen_local_ms=(1_700_000_000 + 3_600) * 1000 + back_ms)
    v = at_boot(b)
    assert (v.rtc_back_ms, v.offset_s) == (back_ms, 3_600 + grows_s)
    assert (b.rtc_s + v.offset_s) * 1000 >= b.seen_local_ms  # local time does not go back


def test_rule_clock_both_back_at_once_are_both_kept_from_going_back():
    v = at_boot(boot_time(pump_ms=5_000_000 - H, rtc_s=1_700_000_000 - 3_600))
    assert (v.pump_back_ms, v.skew_ms) == (H, 1_000 + H)
    assert (v.rtc_back_ms, v.offset_s) == (H, 7_200)
    assert v.went_back


def test_rule_clock_the_skew_never_shrinks():
    # The pump's time far ahead of what NVM saw: the skew stays, it does not pull time back.
    v = at_boot(boot_time(pump_ms=10**12, rtc_s=2_000_000_000))
    assert (v.skew_ms, v.offset_s) == (1_000, 3_600)


@settings(max_examples=scaled(100))
@given(
    st.integers(0, 10**12),
    st.integers(0, 4 * 10**9),
    st.integers(0, 10**10),
    st.integers(-(10**8), 10**8),
    st.one_of(st.none(), st.integers(0, 2 * 10**12)),
    st.one_of(st.none(), st.integers(0, 5 * 10**12)),
)
def test_rule_clock_neither_time_goes_back_across_a_boot(pump, rtc, skew, offset, seen, seen_local):
    v = at_boot(BootTime(pump, rtc, skew, offset, seen, seen_local))
    assert v.skew_ms >= skew and v.offset_s >= offset
    if seen is not None:
        assert pump + v.skew_ms >= seen
        assert v.pump_back_ms == max(0, seen - pump - skew)
    else:
        assert (v.skew_ms, v.pump_back_ms) == (skew, 0)
    if seen_local is not None:
        assert (rtc + v.offset_s) * 1000 > seen_local - 1_000  # back by less than a second at most
        assert v.offset_s - offset <= max(0, seen_local - (rtc + offset) * 1000) // 1000 + 1
    else:
        assert (v.offset_s, v.rtc_back_ms) == (offset, 0)
    assert v.went_back is (v.pump_back_ms > 0 or v.rtc_back_ms > 0)


Y2000 = calendar.timegm((2000, 1, 1, 0, 0, 0))
Y2100 = calendar.timegm((2100, 1, 1, 0, 0, 0))


@pytest.mark.parametrize(("clock_s", "ok"), [(Y2000 - 1, False), (Y2000, True), (Y2100 - 1, True), (Y2100, False)])
def test_rule_clock_setting_must_lie_in_this_century(clock_s, ok):
    r = set_clock_refusal(clock_s)
    if ok:
        assert r is None
    else:
        assert_refused(r, OUT_OF_RANGE, "clock_s", "2000..2099")


# ================================================================ command ids


def test_rule_command_id_a_new_id_runs():
    assert command_id.refusal(8, [1, 2, 7]) is None
    assert command_id.refusal(1, []) is None


def test_rule_command_id_zero_is_refused_first():
    assert_refused(command_id.refusal(0, []), OUT_OF_RANGE, "command_id", "start at 1")
    assert_refused(command_id.refusal(0, {0}), OUT_OF_RANGE, "command_id", "start at 1")


def test_rule_command_id_a_repeat_is_refused_and_says_ask_status():
    assert_refused(
        command_id.refusal(7, (5, 6, 7)), WRONG_STATE, "command_id", "command 7", "already accepted", "STATUS"
    )


# ================================================================ PROGRAM

FILL = Fill("morphine", 5 * MG)
PROGRAM_OK = program.ProgramFacts(
    state=RUNNING,
    bolus_active=False,
    prescription=RX,
    drugs=DRUGS,
    limits=HW,
    empty_reservoir_ul=EMPTY_UL,
    fill=FILL,
)
# Each refusal in the order the rule checks them: (reason, field, words, changes).
PROGRAM_REFUSALS = [
    (WRONG_STATE, "", ["state boot"], {"state": BOOT}),
    (WRONG_STATE, "", ["bolus is in progress"], {"bolus_active": True}),
    (OUT_OF_RANGE, "low_reservoir_ul", ["empty level"], {"prescription": reference(low_reservoir_ul=EMPTY_UL)}),
    (OUT_OF_RANGE, "concentration_ng_per_ml", ["morphine at 10 mg/mL"], {"fill": Fill("morphine", 10 * MG)}),
]


def programmed(**changes: object) -> Refusal | None:
    return program.refusal(dataclasses.replace(PROGRAM_OK, **changes))


@pytest.mark.parametrize("state", [STOPPED, RUNNING, HALTED])
def test_rule_program_the_reservoirs_drug_and_concentration_is_accepted(state):
    assert programmed(state=state) is None


@pytest.mark.parametrize("i", range(len(PROGRAM_REFUSALS)))
def test_rule_program_each_refusal_in_order(i):
    reason, field, words, changes = PROGRAM_REFUSALS[i]
    assert_refused(programmed(**changes), reason, field, *words)
    assert_refused(programmed(**first_of_all_later(PROGRAM_REFUSALS, i)), reason, field, *words)


@pytest.mark.parametrize(("state", "name"), [(BOOT, "boot"), (REFILL, "refill")])
def test_rule_program_refused_while_starting_up_or_in_a_refill(state, name):
    assert_refused(programmed(state=state), WRONG_STATE, "", f"cannot program in state {name}")


def test_rule_program_an_invalid_prescription_names_its_field_before_the_fill_is_asked():
    # Not in the library: the validator's refusal, not "the reservoir holds".
    r = programmed(prescription=reference(drug="heroin"))
    assert_refused(r, OUT_OF_RANGE, "drug", "not in the drug library")
    assert "reservoir holds" not in r.detail
    assert_refused(
        programmed(prescription=reference(concentration_ng_per_ml=20 * MG + 1), fill=Fill("morphine", 20 * MG + 1)),
        OUT_OF_RANGE,
        "concentration_ng_per_ml",
        "maximum 20 mg/mL",
    )


@pytest.mark.parametrize("state", [STOPPED, RUNNING, HALTED])
def test_rule_program_another_concentration_is_refused_in_every_state_refill_to_change_it(state):
    # SR-041's case: 1 mg/mL programmed over a reservoir of 5 mg/mL.
    r = programmed(state=state, prescription=reference(concentration_ng_per_ml=1 * MG))
    assert_refused(r, OUT_OF_RANGE, "concentration_ng_per_ml", HELD_MORPHINE, "refill")


def test_rule_program_names_a_mcg_drugs_concentration_in_mcg():
    zico = Prescription("ziconotide", 50 * MCG, (BasalStep(0, 2_400),), None, 19_200, 2_000)
    r = programmed(prescription=zico, fill=Fill("ziconotide", 25 * MCG))
    assert_refused(r, OUT_OF_RANGE, "concentration_ng_per_ml", "ziconotide at 25 mcg/mL", "refill")


@pytest.mark.parametrize("state", [RUNNING, HALTED])
def test_rule_program_another_drug_is_refused_unless_therapy_is_stopped(state):
    other = reference(drug="hydromorphone")
    assert_refused(programmed(state=state, prescription=other), OUT_OF_RANGE, "drug", HELD_MORPHINE, "stop therapy")


def test_rule_program_another_drug_is_accepted_while_stopped_at_any_concentration():
    assert programmed(state=STOPPED, prescription=reference(drug="hydromorphone")) is None
    assert (
        programmed(state=STOPPED, prescription=reference(drug="hydromorphone", concentration_ng_per_ml=2 * MG)) is None
    )


@pytest.mark.parametrize("state", [STOPPED, RUNNING, HALTED])
def test_rule_program_on_a_pump_never_filled_anything_valid_is_accepted(state):
    for rx in (RX, reference(concentration_ng_per_ml=1 * MG), reference(drug="hydromorphone")):
        assert programmed(state=state, prescription=rx, fill=None) is None
    assert_refused(
        programmed(state=state, prescription=reference(drug="heroin"), fill=None), OUT_OF_RANGE, "drug", "heroin"
    )


def test_rule_program_matches_fill():
    assert program.matches_fill(RX, None)
    assert program.matches_fill(RX, FILL)
    assert not program.matches_fill(RX, Fill("morphine", 5 * MG + 1))
    assert not program.matches_fill(RX, Fill("hydromorphone", 5 * MG))


def test_rule_program_holds_says_what_the_reservoir_holds_in_the_drugs_unit():
    assert program.holds(None, DRUGS) is None
    assert program.holds(FILL, DRUGS) == HELD_MORPHINE
    assert program.holds(Fill("fentanyl", 50 * MCG), DRUGS) == (
        "the reservoir holds fentanyl at 50 mcg/mL (recorded at the last refill)"
    )
    assert "holds oldstuff at 2.5 mg/mL" in program.holds(Fill("oldstuff", 2_500_000), DRUGS)  # not in the library: mg


# ================================================================ CATHETER_REPLACED

REPLACED_OK = catheter.ReplacedFacts(
    state=STOPPED,
    has_prescription=True,
    catheter_volume_nl=200_000,
    bolus_active=False,
    now_ms=10 * 86_400_000,
    last_replaced_ms=None,
)
REPLACED_REFUSALS = [
    (["therapy stopped", "running"], {"state": RUNNING}),
    (["catheter's volume"], {"has_prescription": False}),
    (["catheter's volume"], {"catheter_volume_nl": 0}),
    (["bolus is in progress"], {"bolus_active": True}),
    (["less than 24 h ago", "counts as drug", "in 1 h"], {"last_replaced_ms": 9 * 86_400_000 + 3_600_000}),
]


def test_rule_catheter_replaced_with_everything_in_place_is_taken():
    assert catheter.replaced_refusal(REPLACED_OK) is None
    # A day after the last declaration, another is believed again.
    assert catheter.replaced_refusal(dataclasses.replace(REPLACED_OK, last_replaced_ms=9 * 86_400_000)) is None


@pytest.mark.parametrize("i", range(len(REPLACED_REFUSALS)))
def test_rule_catheter_replaced_each_refusal_in_order(i):
    words, changes = REPLACED_REFUSALS[i]
    assert_refused(catheter.replaced_refusal(dataclasses.replace(REPLACED_OK, **changes)), WRONG_STATE, "", *words)
    later = first_of_all_later(REPLACED_REFUSALS, i)
    assert_refused(catheter.replaced_refusal(dataclasses.replace(REPLACED_OK, **later)), WRONG_STATE, "", *words)


def test_rule_catheter_replaced_after_time_went_back_is_refused():
    """Pump time earlier than the last declaration: it cannot show a day has passed."""
    r = catheter.replaced_refusal(dataclasses.replace(REPLACED_OK, last_replaced_ms=REPLACED_OK.now_ms + 1))
    assert_refused(r, WRONG_STATE, "", "less than 24 h ago")


# ================================================================ START

READY_OK = ready.ReadyFacts(
    has_prescription=True,
    holds_another_drug=None,
    high_alarm=False,
    holding=(),
    reservoir_known=True,
    catheter_empty=False,
)
READY_FIELDS = {f.name for f in dataclasses.fields(ready.ReadyFacts)}


def changed(facts, **changes: object):
    """facts with changes, those of its ready facts made there."""
    inner = {k: v for k, v in changes.items() if k in READY_FIELDS}
    outer = {k: v for k, v in changes.items() if k not in READY_FIELDS}
    if inner:
        outer["ready"] = dataclasses.replace(facts.ready, **inner)
    return dataclasses.replace(facts, **outer)


READY_REFUSALS = [
    (["no prescription"], {"has_prescription": False}),
    ([HELD_MORPHINE, "refill with the drug programmed before starting"], {"holds_another_drug": HELD_MORPHINE}),
    (["high-priority alarm", "deal with it first"], {"high_alarm": True}),
    (["not known", "record the fill"], {"reservoir_known": False}),
    (["catheter is empty", "prime it"], {"catheter_empty": True}),
]


@pytest.mark.parametrize("i", range(len(READY_REFUSALS)))
def test_rule_ready_each_refusal_in_order(i):
    """What START and a clinician bolus both need, one rule (rules/ready.py)."""
    words, changes = READY_REFUSALS[i]
    assert ready.refusal(READY_OK, "starting") is None
    assert_refused(ready.refusal(dataclasses.replace(READY_OK, **changes), "starting"), WRONG_STATE, "", *words)
    later = first_of_all_later(READY_REFUSALS, i)
    assert_refused(ready.refusal(dataclasses.replace(READY_OK, **later), "starting"), WRONG_STATE, "", *words)


START_OK = start.StartFacts(state=STOPPED, ready=READY_OK, reservoir_empty=False)
START_REFUSALS = [
    (["start needs state stopped, not running"], {"state": RUNNING}),
    *READY_REFUSALS,
    (["empty level", "refill"], {"reservoir_empty": True}),
]


def test_rule_start_with_everything_in_place_starts():
    assert start.refusal(START_OK) is None


@pytest.mark.parametrize("i", range(len(START_REFUSALS)))
def test_rule_start_each_refusal_in_order(i):
    words, changes = START_REFUSALS[i]
    assert_refused(start.refusal(changed(START_OK, **changes)), WRONG_STATE, "", *words)
    later = first_of_all_later(START_REFUSALS, i)
    assert_refused(start.refusal(changed(START_OK, **later)), WRONG_STATE, "", *words)


@pytest.mark.parametrize(
    ("state", "name"), [(BOOT, "boot"), (RUNNING, "running"), (REFILL, "refill"), (HALTED, "halted")]
)
def test_rule_start_needs_therapy_stopped(state, name):
    assert_refused(start.refusal(dataclasses.replace(START_OK, state=state)), WRONG_STATE, "", f"not {name}")


# ================================================================ PRIME

PRIME_OK = prime.PrimeFacts(
    stopped=True,
    has_prescription=True,
    holds_another_drug=None,
    bolus_active=False,
    volume_nl=200_000,
    stroke_nl=500,
    catheter_volume_nl=200_000,
    drug_fg=1 * MG * FG,  # 200 uL of 5 mg/mL out of a primed catheter
    window_fg=1_500_000 * FG,
    max_dose_24h_fg=3 * MG * FG,
    drug_unit="mg",
    reservoir_known=True,
    reservoir_nl=5_000_000,
    empty_level_nl=1_000_000,
)
PRIME_REFUSALS = [
    (WRONG_STATE, ["therapy stopped"], {"stopped": False}),
    (WRONG_STATE, ["program the drug"], {"has_prescription": False}),
    (WRONG_STATE, [HELD_MORPHINE, "refill"], {"holds_another_drug": HELD_MORPHINE}),
    (WRONG_STATE, ["bolus is in progress"], {"bolus_active": True}),
    (WRONG_STATE, ["not known", "record the fill"], {"reservoir_known": False}),
    (WRONG_STATE, ["catheter's volume", "prescription"], {"catheter_volume_nl": 0}),
    (OUT_OF_RANGE, ["500..400000 nL"], {"volume_nl": 499}),
    (OUT_OF_RANGE, ["hard limit"], {"window_fg": 2 * MG * FG + 1}),
    (OUT_OF_RANGE, ["empty level"], {"reservoir_nl": 1_200_000 - 1}),
]


def primed(**changes: object) -> Refusal | None:
    return prime.refusal(dataclasses.replace(PRIME_OK, **changes))


def test_rule_prime_with_everything_in_place_primes():
    assert primed() is None


@pytest.mark.parametrize("i", range(len(PRIME_REFUSALS)))
def test_rule_prime_each_refusal_in_order(i):
    reason, words, changes = PRIME_REFUSALS[i]
    field = "volume_nl" if reason is OUT_OF_RANGE else ""
    assert_refused(primed(**changes), reason, field, *words)
    assert_refused(primed(**first_of_all_later(PRIME_REFUSALS, i)), reason, field, *words)


@pytest.mark.parametrize(("volume", "ok"), [(499, False), (500, True), (400_000, True), (400_001, False)])
def test_rule_prime_volume_from_a_stroke_to_twice_the_catheter(volume, ok):
    r = primed(volume_nl=volume, reservoir_nl=10_000_000)
    if ok:
        assert r is None
    else:
        assert_refused(r, OUT_OF_RANGE, "volume_nl", "500..400000 nL")


@pytest.mark.parametrize(
    ("catheter", "volumes_ok", "volumes_refused"), [(1, [500], [499, 501]), (300, [500, 600], [601])]
)
def test_rule_prime_a_catheter_smaller_than_a_stroke_still_allows_one(catheter, volumes_ok, volumes_refused):
    for v in volumes_ok:
        assert primed(catheter_volume_nl=catheter, volume_nl=v) is None
    for v in volumes_refused:
        assert_refused(primed(catheter_volume_nl=catheter, volume_nl=v), OUT_OF_RANGE, "volume_nl", "nL")


def test_rule_prime_over_the_hard_limit_says_the_total_and_the_limit():
    assert primed(window_fg=2 * MG * FG) is None  # reaches the limit exactly
    r = primed(window_fg=2_500_000 * FG)
    assert_refused(r, OUT_OF_RANGE, "volume_nl", "out of the catheter tip", "3.5 mg", "over the hard limit 3 mg")


def test_rule_prime_over_the_hard_limit_in_mcg_for_a_mcg_drug():
    r = primed(drug_unit="mcg", window_fg=900 * MCG * FG, drug_fg=200 * MCG * FG, max_dose_24h_fg=1_000 * MCG * FG)
    assert_refused(r, OUT_OF_RANGE, "volume_nl", "1100 mcg", "hard limit 1000 mcg")


def test_rule_prime_into_an_empty_catheter_pushes_no_drug_so_passes_a_full_window():
    assert primed(drug_fg=0, window_fg=3 * MG * FG) is None
    assert_refused(primed(drug_fg=1, window_fg=3 * MG * FG), OUT_OF_RANGE, "volume_nl", "hard limit")


def test_rule_prime_the_reservoir_must_hold_it_above_the_empty_level():
    assert primed(reservoir_nl=1_200_000) is None  # leaves exactly the empty level
    assert_refused(primed(reservoir_nl=1_199_999), OUT_OF_RANGE, "volume_nl", "empty level")


# ================================================================ CLINICIAN_BOLUS

EMPTY_WINDOW = Window(
    now_ms=T0,
    local_ms=T0,
    past_per_minute_fg=(0,) * N,
    basal=(),
    owed_fg=0,
    max_dose_24h_fg=3 * MG * FG,
    stroke_fg=STROKE_FG,
)
CB_OK = clinician_bolus.ClinicianBolusFacts(
    state=TherapyState.RUNNING,
    ready=READY_OK,
    bolus_active=False,
    dose_ng=500_000,  # 0.5 mg: 200 strokes of 2500 ng over 10 min, one per 3 s
    dose_fg=500_000 * FG,
    duration_s=600,
    max_dose_24h_ng=3 * MG,
    strokes=200,
    min_stroke_interval_ms=1_800,
    window=EMPTY_WINDOW,
    volume_nl=100_000,
    reservoir_nl=5_000_000,
    empty_level_nl=1_000_000,
)


def past_with(fg: int) -> Window:
    past = [0] * N
    past[0] = fg
    return dataclasses.replace(EMPTY_WINDOW, past_per_minute_fg=tuple(past))


CB_REFUSALS = [
    (WRONG_STATE, "", ["running or stopped", "halted"], {"state": TherapyState.HALTED}),
    (WRONG_STATE, "", ["no prescription"], {"has_prescription": False}),
    (WRONG_STATE, "", ["holds ziconotide", "before a bolus"], {"holds_another_drug": "the reservoir holds ziconotide"}),
    (WRONG_STATE, "", ["high-priority alarm"], {"high_alarm": True}),
    (WRONG_STATE, "", ["record the fill"], {"reservoir_known": False}),
    (WRONG_STATE, "", ["catheter is empty", "prime it"], {"catheter_empty": True}),
    (WRONG_STATE, "", ["bolus is in progress"], {"bolus_active": True}),
    (OUT_OF_RANGE, "dose_ng", ["1..3000000 ng", "hard limit"], {"dose_ng": 0}),
    (OUT_OF_RANGE, "duration_s", ["60..3600 s"], {"duration_s": 59}),
    (OUT_OF_RANGE, "duration_s", ["faster than the mechanism"], {"strokes": 334}),
    (OUT_OF_RANGE, "dose_ng", ["rolling 24 h hard limit"], {"window": past_with(2_500_000 * FG + 1)}),
    (OUT_OF_RANGE, "dose_ng", ["empty level"], {"reservoir_nl": 1_100_000 - 1}),
]


def ordered(**changes: object) -> Refusal | None:
    return clinician_bolus.refusal(changed(CB_OK, **changes))


def test_rule_clinician_bolus_with_everything_in_place_is_given():
    assert ordered() is None


@pytest.mark.parametrize("i", range(len(CB_REFUSALS)))
def test_rule_clinician_bolus_each_refusal_in_order(i):
    reason, field, words, changes = CB_REFUSALS[i]
    assert_refused(ordered(**changes), reason, field, *words)
    assert_refused(ordered(**first_of_all_later(CB_REFUSALS, i)), reason, field, *words)


def test_rule_clinician_bolus_needs_a_window_as_well_as_a_prescription():
    assert_refused(ordered(window=None), WRONG_STATE, "", "no prescription")


@pytest.mark.parametrize(
    ("state", "ok"),
    [
        (TherapyState.RUNNING, True),
        (TherapyState.STOPPED, True),  # SR-048: a single bolus
        (TherapyState.HALTED, False),
        (TherapyState.REFILL, False),
        (TherapyState.BOOT, False),
    ],
)
def test_rule_clinician_bolus_given_running_or_stopped_never_halted_or_in_a_refill(state, ok):
    r = ordered(state=state)
    if ok:
        assert r is None
    else:
        assert_refused(r, WRONG_STATE, "", state.name.lower())


@pytest.mark.parametrize(("dose_ng", "ok"), [(-1, False), (0, False), (1, True), (3 * MG, True), (3 * MG + 1, False)])
def test_rule_clinician_bolus_dose_from_one_ng_to_the_hard_limit(dose_ng, ok):
    # Long enough for the strokes; the window empty, so only the dose range can refuse.
    r = ordered(dose_ng=dose_ng, dose_fg=max(0, dose_ng) * FG, duration_s=3_600, strokes=1_200)
    if ok:
        assert r is None
    else:
        assert_refused(r, OUT_OF_RANGE, "dose_ng", "1..3000000 ng")


@pytest.mark.parametrize(("duration_s", "ok"), [(59, False), (60, True), (3_600, True), (3_601, False)])
def test_rule_clinician_bolus_duration_in_the_bolus_range(duration_s, ok):
    r = ordered(duration_s=duration_s, strokes=1)
    if ok:
        assert r is None
    else:
        assert_refused(r, OUT_OF_RANGE, "duration_s", "60..3600 s")


@pytest.mark.parametrize(
    ("duration_s", "strokes", "ok"),
    [
        (90, 50, True),  # exactly one stroke per 1.8 s
        (90, 51, False),
        (60, 33, True),  # 1818 ms a stroke
        (60, 34, False),  # 1764 ms a stroke
    ],
)
def test_rule_clinician_bolus_no_faster_than_the_mechanism(duration_s, strokes, ok):
    r = ordered(duration_s=duration_s, strokes=strokes)
    if ok:
        assert r is None
    else:
        assert_refused(r, OUT_OF_RANGE, "duration_s", "faster than the mechanism")


def test_rule_clinician_bolus_the_projection_counts_past_delivery_up_to_the_limit():
    assert ordered(window=past_with(2_500_000 * FG)) is None  # reaches the limit exactly
    assert_refused(ordered(window=past_with(2_500_000 * FG + 1)), OUT_OF_RANGE, "dose_ng", "rolling 24 h")


def test_rule_clinician_bolus_the_projection_counts_planned_basal():
    # A day of 1.44 mg/day basal ahead (1441 minutes: 1.441 mg) leaves 1.559 mg of 3 mg.
    w = dataclasses.replace(EMPTY_WINDOW, basal=FLAT)
    dose = 1_559 * MCG
    assert ordered(window=w, dose_ng=dose, dose_fg=dose * FG, duration_s=3_600, strokes=624) is None
    r = ordered(window=w, dose_ng=dose + 1, dose_fg=(dose + 1) * FG, duration_s=3_600, strokes=624)
    assert_refused(r, OUT_OF_RANGE, "dose_ng", "with basal")


def test_rule_clinician_bolus_the_reservoir_must_hold_it_above_the_empty_level():
    assert ordered(reservoir_nl=1_100_000) is None
    assert_refused(ordered(reservoir_nl=1_099_999), OUT_OF_RANGE, "dose_ng", "empty level")


# ================================================================ REFILL_COMPLETE

REFILL_OK = refill.RefillFacts(
    state=TherapyState.REFILL,
    volume_nl=3_000_000,
    capacity_nl=20_000_000,
    withdrawn_nl=3_000_000,
    added_nl=18_000_000,
    drug="morphine",
    concentration_ng_per_ml=5 * MG,
    prescription=RX,
    drugs=DRUGS,
    limits=HW,
    empty_reservoir_ul=EMPTY_UL,
)


def refilled(**changes: object) -> refill.RefillVerdict:
    return refill.decide(dataclasses.replace(REFILL_OK, **changes))


def assert_refill_refused(v: refill.RefillVerdict, field: str, *words: str) -> None:
    assert v.prescription is None  # a refusal changes nothing
    assert_refused(v.refusal, OUT_OF_RANGE, field, *words)


def test_rule_refill_the_same_drug_and_concentration_keeps_the_prescription():
    v = refilled()
    assert (v.refusal, v.prescription) == (None, RX)


def test_rule_refill_a_new_concentration_becomes_the_prescriptions_keeping_its_doses():
    v = refilled(concentration_ng_per_ml=10 * MG)
    assert v.refusal is None
    assert v.prescription == reference(concentration_ng_per_ml=10 * MG)
    assert (v.prescription.basal, v.prescription.patient_bolus, v.prescription.max_dose_24h_ng) == (
        RX.basal,
        RX.patient_bolus,
        RX.max_dose_24h_ng,
    )


@pytest.mark.parametrize(
    ("volume", "withdrawn", "added", "ok"),
    [
        (3_000_000, 3_000_000, 20_000_000, True),  # all withdrawn, filled to capacity
        (3_000_000, 3_000_000, 20_000_001, False),
        # Less withdrawn than the estimate says is there: the withdrawal empties the
        # reservoir all the same (a few nL of estimate is no reason to refuse the record).
        (3_000_000, 2_999_997, 20_000_000, True),
        (3_000_000, 2_000_000, 20_000_000, True),
        (3_000_000, 2_000_000, 20_000_001, False),
        (3_000_000, 5_000_000, 20_000_000, True),  # more withdrawn than the estimate: none left
        (3_000_000, 5_000_000, 20_000_001, False),  # still never more than the capacity
    ],
)
def test_rule_refill_must_not_overfill(volume, withdrawn, added, ok):
    v = refilled(volume_nl=volume, withdrawn_nl=withdrawn, added_nl=added)
    if ok:
        assert v.refusal is None
    else:
        assert_refill_refused(v, "added_nl", f"{added} nL would overfill the 20000000 nL reservoir")


def test_rule_refill_overfill_is_refused_before_the_drug_is_asked():
    assert_refill_refused(refilled(added_nl=20_000_001, drug="heroin"), "added_nl", "overfill")
    assert_refill_refused(refilled(added_nl=20_000_001, drug="heroin", prescription=None), "added_nl", "overfill")


@pytest.mark.parametrize("state", [s for s in TherapyState if s is not TherapyState.REFILL])
def test_rule_refill_completes_only_after_refill_begin(state):
    v = refilled(state=state, added_nl=10**12)  # (before the overfill is even looked at)
    assert v.refusal is not None and v.refusal.reason is NakReason.WRONG_STATE and "REFILL_BEGIN" in v.refusal.detail


def test_rule_refill_with_a_drug_not_programmed_is_refused():
    v = refilled(drug="hydromorphone")
    assert_refill_refused(v, "drug", "programmed for morphine", "reprogram first")


def test_rule_refill_without_a_prescription_needs_a_drug_of_the_library():
    v = refilled(prescription=None, drug="hydromorphone", concentration_ng_per_ml=2 * MG)
    assert (v.refusal, v.prescription) == (None, None)
    assert_refill_refused(refilled(prescription=None, drug="heroin"), "drug", "'heroin' is not in the drug library")


@pytest.mark.parametrize(("conc", "ok"), [(0, False), (1, True), (15 * MG, True), (15 * MG + 1, False)])
def test_rule_refill_without_a_prescription_records_only_a_concentration_the_library_allows(conc, ok):
    # Hydromorphone: at most 15 mg/mL. A first fill recorded at 0 or above the maximum
    # would only be found out when the PROGRAM that must state it is refused.
    v = refilled(prescription=None, drug="hydromorphone", concentration_ng_per_ml=conc)
    if ok:
        assert v.refusal is None
    else:
        assert_refill_refused(v, "concentration_ng_per_ml", "15 mg/mL")


@pytest.mark.parametrize(
    ("conc", "field", "words"),
    [
        (20 * MG + 1, "concentration_ng_per_ml", ["20 mg/mL"]),  # morphine's maximum
        (0, "concentration_ng_per_ml", ["above zero"]),
        # 0.05 mg/mL: the 1.5 mg/day step needs 30 mL/day, beyond the mechanism's 24.
        (50_000, "basal[1].rate_ng_per_day", ["24 mL/day"]),
        # 0.2 mg/mL: the 0.1 mg bolus is 1000 strokes in 10 min, faster than the mechanism.
        (200_000, "bolus_duration_s", ["faster than the mechanism"]),
    ],
)
def test_rule_refill_a_concentration_the_prescription_is_invalid_at_is_refused_naming_the_field(conc, field, words):
    assert_refill_refused(refilled(concentration_ng_per_ml=conc), field, *words)


def test_rule_refill_at_the_drugs_maximum_concentration_is_accepted():
    v = refilled(concentration_ng_per_ml=20 * MG)
    assert v.refusal is None and v.prescription.concentration_ng_per_ml == 20 * MG
