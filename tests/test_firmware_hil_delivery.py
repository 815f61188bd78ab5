"""The controller firmware over real ptys: basal accuracy, bridging, reservoir alarms,
split mode (issue 4's "done when").

Every test starts `thecal emulator` (the firmware in-process by default, or in split mode
`thecal firmware` as a third process) and talks to the pump only through tools.client,
as a clinician, the patient's PTM or the simulator. The emulator's ground truth (what
left the catheter tip, the tones that sounded) is the oracle the firmware is held to.
Time is lockstep, so days of therapy cost a second or so. Tests named test_bug_* are
regressions for bugs these tests found.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import pytest

from protocol.codes import AlarmId, BeepPattern, BolusDecision, BolusOutcome, Priority, TherapyState
from protocol.messages import (
    AlarmRaised,
    BolusFinished,
    ClinicianBolus,
    Prime,
    RefillBegin,
    RefillComplete,
    SetClock,
    SimPowerCycle,
    SimRefill,
    Stop,
)
from tests.harness import Procs, PumpHost, firmware_pump

MG = 1_000_000  # ng
CONC = 5 * MG  # the fresh pump's drug: morphine 5 mg/mL
FILL_NL = 12_000_000  # and its fill
STROKE_NL = 500
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def stroke_ng(conc: int) -> int:
    return STROKE_NL * conc // 1_000_000


def basal_ng(steps, from_ms: int, to_ms: int, local0_ms: int = 0) -> Fraction:
    """The schedule's integral over pump time [from_ms, to_ms), exactly (the test's own
    arithmetic, not the firmware's). local0_ms: local time of day at pump time 0."""
    starts = [s * 1000 for s, _ in steps]
    rates = [r for _, r in steps]
    total = Fraction(0)
    t = from_ms
    while t < to_ms:
        tod = (t + local0_ms) % DAY
        i = max(k for k, s in enumerate(starts) if s <= tod)
        nxt = starts[i + 1] if i + 1 < len(starts) else DAY
        end = min(to_ms, t + nxt - tod)
        total += Fraction(rates[i] * (end - t), DAY)
        t = end
    return total


def local0_ms(pump: PumpHost) -> int:
    st = pump.status()
    return (st.clock_s - st.time_s) % 86_400 * 1000


def refill(pump: PumpHost, add_nl: int, conc: int, withdraw_nl: int | None = None, pocket_nl: int = 0):
    """A whole refill: REFILL_BEGIN, the needle (SimRefill: withdraw the physical residual
    unless told otherwise, inject add_nl of which pocket_nl misses the reservoir), then
    REFILL_COMPLETE reporting what was withdrawn and added. Returns the two ACKs."""
    begin = pump.request(RefillBegin(command_id=pump.next_id()))
    if withdraw_nl is None:
        withdraw_nl = pump.truth().reservoir_nl
    got = pump.sim(
        SimRefill(withdraw_nl=withdraw_nl, add_nl=add_nl - pocket_nl, concentration_ng_per_ml=conc, into_pocket=False)
    )
    if pocket_nl:
        pump.sim(SimRefill(withdraw_nl=0, add_nl=pocket_nl, concentration_ng_per_ml=conc, into_pocket=True))
    done = pump.request(
        RefillComplete(
            command_id=pump.next_id(),
            withdrawn_nl=got.withdrawn_nl,
            added_nl=add_nl,
            drug="morphine",
            concentration_ng_per_ml=conc,
        )
    )
    return begin, done


# ============================================================ basal accuracy


@pytest.mark.req("SR-014")
def test_basal_accuracy_over_7_days_two_step_schedule(procs):
    """Ground truth within one stroke of the schedule's integral at every day boundary
    for a week; rates that are not whole strokes per hour, a step at an odd second."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    steps = ((0, 1_300_000), (8 * 3600 + 1_234, 2_170_000))
    pump.program(basal=steps, max_dose_24h_ng=3 * MG)
    assert pump.start().state is TherapyState.RUNNING
    local0 = local0_ms(pump)
    gt0 = pump.truth()
    t0 = gt0.time_ms
    day_start = gt0
    for day in range(1, 8):
        pump.advance(DAY)
        gt = pump.truth()
        expected = basal_ng(steps, t0, gt.time_ms, local0)
        delivered = gt.delivered_ng - gt0.delivered_ng
        assert abs(delivered - expected) <= stroke_ng(CONC), f"day {day}: {delivered} ng vs {float(expected):.0f} ng"
        assert gt.delivered_nl - gt0.delivered_nl == (gt.strokes_total - gt0.strokes_total) * STROKE_NL
        st = pump.status()
        assert st.state is TherapyState.RUNNING and st.alarms == ()
        # The firmware counts what the mechanism made: its estimate is the physical volume.
        assert st.reservoir_nl == gt.reservoir_nl
        # Its rolling 24 h errs on the side of too much, by at most the oldest minute.
        truth_24h = gt.delivered_ng - day_start.delivered_ng
        assert 0 <= st.dose_24h_ng - truth_24h <= stroke_ng(CONC), (day, st.dose_24h_ng, truth_24h)
        day_start = gt
    assert gt.tones_total == 0


# ============================================================ bridging


@pytest.mark.parametrize("new_conc", [10 * MG, 5 * MG // 2], ids=["raised", "lowered"])
@pytest.mark.req("SR-010")
def test_concentration_change_at_refill_is_bridged(procs, new_conc):
    """After a refill at a new concentration the catheter (200 uL) still holds the old
    drug: the firmware strokes at the old concentration until it is pushed out, so what
    the patient receives (ground truth, ng) follows the prescribed basal throughout:
    neither twice nor half the dose."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    rate = 2 * MG
    pump.program(basal=((0, rate),), max_dose_24h_ng=4 * MG)
    pump.start()
    pump.advance(DAY)
    residual = pump.truth().reservoir_nl
    begin, done = refill(pump, 10_000_000, new_conc)
    assert begin.expected_reservoir_nl == residual
    assert done.discrepancy_nl == 0 and done.reservoir_nl == 10_000_000
    st = pump.status()
    assert (st.state, st.concentration_ng_per_ml, st.alarms) == (TherapyState.RUNNING, new_conc, ())
    gt0 = pump.truth()
    t0 = gt0.time_ms
    tol = max(stroke_ng(CONC), stroke_ng(new_conc))
    dead_strokes = 200_000 // STROKE_NL
    bridge_ms = dead_strokes * stroke_ng(CONC) * DAY // rate  # old drug out after 12 h
    last = gt0
    for h in (3, 6, 9, 11, 13, 18, 24, 36, 48):
        pump.advance_to(t0 + h * HOUR)
        gt = pump.truth()
        delivered = gt.delivered_ng - gt0.delivered_ng
        expected = Fraction(rate * h, 24)
        assert abs(delivered - expected) <= tol, f"{h} h after the refill: {delivered} ng, expected {expected} ng"
        strokes = gt.strokes_total - gt0.strokes_total
        if h * HOUR < bridge_ms:  # still the old drug at the tip: strokes at the old size
            assert strokes * stroke_ng(CONC) == delivered
        if h in (24, 48):
            st = pump.status()
            truth_24h = gt.delivered_ng - (gt0.delivered_ng if h == 24 else last.delivered_ng)
            assert 0 <= st.dose_24h_ng - truth_24h <= tol, (h, st.dose_24h_ng, truth_24h)
            last = gt
    # The old drug was pushed out by exactly the dead volume's strokes.
    assert st.reservoir_nl == gt.reservoir_nl


# ============================================================ low and empty reservoir


def alarm_events(pump: PumpHost) -> list[tuple[AlarmId, Priority, int]]:
    return [(e.alarm, e.priority, e.time_s) for e in pump.events(AlarmRaised)]


def run_to_empty(procs, fill_nl: int, hours: int = 6):
    """1 mg/mL at 12 mg/day (half a mL an hour) from a small fill: low (2 mL) after
    about 1.2 h, empty (1 mL) after about 3.2 h. Returns the pump and (time, truth,
    status) samples every 10 minutes."""
    pump = firmware_pump(procs, initial_fill_ul=fill_nl // 1000, initial_concentration_ng_per_ml=MG)
    if fill_nl % 1000:  # the model fills in whole uL: top up the rest physically
        pump.sim(SimRefill(withdraw_nl=0, add_nl=fill_nl % 1000, concentration_ng_per_ml=MG, into_pocket=False))
    pump.fill(fill_nl, MG)
    pump.program(concentration_ng_per_ml=MG, basal=((0, 12 * MG),), max_dose_24h_ng=15 * MG, low_reservoir_ul=2_000)
    pump.start()
    samples = []
    for _ in range(hours * 6):
        pump.advance(10 * MINUTE)
        samples.append((pump.truth(), pump.status()))
    return pump, samples


@pytest.mark.req("SR-016", "SR-022")
def test_low_then_empty_reservoir_alarms_tones_and_delivery_stops(procs):
    pump, samples = run_to_empty(procs, 2_600_000)
    raised = alarm_events(pump)
    assert [(a, p) for a, p, _ in raised] == [
        (AlarmId.LOW_RESERVOIR, Priority.MEDIUM),
        (AlarmId.EMPTY_RESERVOIR, Priority.HIGH),
    ]
    low_s, empty_s = raised[0][2], raised[1][2]
    # 600 uL to the low level and 1600 uL to the empty one, at 500 uL an hour.
    assert abs(low_s - 4_320) <= 4 and abs(empty_s - 11_520) <= 4
    tones = pump.tones()
    single = [t.time_ms for t in tones if t.pattern is BeepPattern.SINGLE_TONE]
    double = [t.time_ms for t in tones if t.pattern is BeepPattern.TWO_TONE]
    assert single and double
    assert low_s * 1000 <= single[0] < low_s * 1000 + 1000  # medium: single tone at once
    assert len([t for t in single if t < empty_s * 1000]) >= 2  # and again about hourly
    assert all(b - a <= HOUR for a, b in pairwise(single) if b < empty_s * 1000)
    assert empty_s * 1000 <= double[0] < empty_s * 1000 + 1000  # high: two-tone at once
    assert all(b - a <= 5 * MINUTE for a, b in pairwise(double))  # and often
    assert max(double) >= samples[-1][0].time_ms - 5 * MINUTE  # still sounding
    # Delivery stopped at the empty level: the ground truth never rose again.
    after = [(gt, st) for gt, st in samples if gt.time_ms >= empty_s * 1000]
    assert len(after) >= 12
    assert {gt.delivered_ng for gt, _ in after} == {1_600_000}  # 1.6 mL at 1 mg/mL
    assert {gt.reservoir_nl for gt, _ in after} == {1_000_000}
    for _, st in after:
        assert st.state is TherapyState.HALTED
        assert {a.alarm: a.priority for a in st.alarms} == {
            AlarmId.LOW_RESERVOIR: Priority.MEDIUM,
            AlarmId.EMPTY_RESERVOIR: Priority.HIGH,
        }
    before = [gt for gt, _ in samples if gt.time_ms < low_s * 1000]
    assert all(st.alarms == () for gt, st in samples if gt.time_ms < low_s * 1000) and before


@pytest.mark.parametrize("fill_nl", [2_610_000, 2_600_200], ids=["run-does-not-fit", "stroke-does-not-fit"])
@pytest.mark.req("SR-016")
def test_bug_delivery_stopped_silently_just_above_the_empty_level(procs, fill_nl):
    """Bug: a basal run that would have crossed the empty level was refused whole, and
    the controller looked again a minute later, for ever: with a fill that is not a
    whole number of 64-stroke runs above the empty level, delivery stopped a few strokes
    short of it with therapy RUNNING, no EMPTY alarm and no tone (a silent stop: the
    patient gets nothing and nobody is told). And with less than one stroke above the
    empty level left, nothing could ever be delivered, yet the reservoir was not called
    empty. Now runs are cut to what fits above the empty level, and a reservoir that
    cannot give one more stroke above it is empty: EMPTY alarm, halted, two-tone."""
    pump, samples = run_to_empty(procs, fill_nl)
    gt, st = samples[-1]
    assert st.state is TherapyState.HALTED
    assert AlarmId.EMPTY_RESERVOIR in {a.alarm for a in st.alarms}
    assert BeepPattern.TWO_TONE in {t.pattern for t in pump.tones()}
    assert 1_000_000 <= gt.reservoir_nl < 1_000_000 + STROKE_NL  # as far as it can go
    assert gt.reservoir_nl == st.reservoir_nl


@pytest.mark.req("SR-010")
def test_bug_runs_went_on_past_the_bridge_end(procs):
    """Bug: a stroke run planned while the old drug was at the catheter tip went on after
    the old drug was out, at the old stroke spacing: with the stronger drug each stroke
    carried twice the dose, so basal ran at twice the prescribed rate for up to a
    64-stroke run (about 110 ug over the schedule two hours after the bridge ended), and
    a bolus that straddled the bridge end overshot its dose. Now every run (basal or
    bolus) ends where the old drug runs out, and the next one is planned at the new
    concentration."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    rate = 2 * MG
    pump.program(basal=((0, rate),), max_dose_24h_ng=4 * MG)
    pump.start()
    pump.advance(DAY)
    refill(pump, 10_000_000, 10 * MG)
    gt0 = pump.truth()
    t0 = gt0.time_ms
    bridge_end = t0 + 12 * HOUR  # 400 strokes of 108 s push the 200 uL out
    for t in range(bridge_end - 2 * HOUR, bridge_end + 3 * HOUR, 10 * MINUTE):
        pump.advance_to(t)
        delivered = pump.truth().delivered_ng - gt0.delivered_ng
        assert abs(delivered - Fraction(rate * (t - t0), DAY)) <= stroke_ng(10 * MG), (t - t0) / HOUR
    # A clinician bolus straddling the bridge end delivers its dose, not more.
    # (A fresh pump: the same history up to 5 minutes before the bridge ends.)
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, rate),), max_dose_24h_ng=4 * MG)
    pump.start()
    pump.advance(DAY)
    refill(pump, 10_000_000, 10 * MG)
    start = pump.truth().time_ms
    pump.advance_to(start + 12 * HOUR - 5 * MINUTE)
    before = pump.truth()
    pump.request(ClinicianBolus(command_id=pump.next_id(), dose_ng=100_000, duration_s=600))
    pump.advance(30 * MINUTE)
    after = pump.truth()
    (done,) = pump.events(BolusFinished)
    assert done.outcome is BolusOutcome.COMPLETED
    assert abs(done.delivered_ng - 100_000) <= stroke_ng(10 * MG) // 2
    basal = Fraction(rate * (after.time_ms - before.time_ms), DAY)
    assert abs(after.delivered_ng - before.delivered_ng - basal - 100_000) <= stroke_ng(10 * MG)


# ============================================================ split mode


def test_split_mode_firmware_process_basal_and_bolus(procs):
    """`thecal emulator --split` and `thecal firmware --port ... --state-dir ...` as two
    processes (three with the test): the same flex basal and patient bolus, held to the
    ground truth just as with the firmware inside the emulator."""
    pump = firmware_pump(procs, split=True)
    assert [type(p).__name__ for p in procs.started] == ["EmulatorProcess", "FirmwareProcess"]
    pump.fill(FILL_NL, CONC)
    steps = ((0, MG), (7 * 3600, 3 * MG // 2), (22 * 3600, MG))
    dose, lockout = 100_000, 1_800
    pump.program(basal=steps, bolus=(dose, 600, lockout, 6), max_dose_24h_ng=3 * MG)
    pump.start()
    local0 = local0_ms(pump)
    t0 = pump.truth().time_ms
    assert pump.press().decision is BolusDecision.LOCKOUT  # a lockout after programming
    pump.advance(6 * HOUR)
    ack = pump.press()
    assert ack.decision is BolusDecision.GRANTED and ack.dose_ng == dose
    assert pump.press().decision is BolusDecision.BOLUS_IN_PROGRESS
    pump.advance(18 * HOUR)
    gt = pump.truth()
    expected = basal_ng(steps, t0, gt.time_ms, local0) + dose
    assert abs(gt.delivered_ng - expected) <= stroke_ng(CONC)
    st = pump.status()
    assert (st.state, st.boluses_24h, st.reservoir_nl) == (TherapyState.RUNNING, 1, gt.reservoir_nl)
    assert st.last_command_id == pump.command_id
    assert 0 <= st.dose_24h_ng - gt.delivered_ng <= stroke_ng(CONC)  # all of it in the last 24 h
    assert all(p.alive for p in procs.started)


# ============================================================ changes while running


@pytest.mark.parametrize("change", ["reprogram", "set-clock"])
@pytest.mark.req("SR-013")
def test_bug_basal_run_went_on_at_the_old_rate_after_a_change(procs, change):
    """Bug: a basal run is planned at the rate in force up to the next schedule step (64
    strokes at most); when the clinician lowered the rate (4 to 1 mg/day), or set the
    clock into another step, the run went on at the old spacing: 155 ug in the hour
    after the rate was cut to 42 ug an hour, then nothing for three hours. Now a change
    of schedule or clock ends the basal run, and the next is planned at the new rate."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    if change == "reprogram":
        pump.program(basal=((0, 4 * MG),))
    else:
        pump.program(basal=((0, 4 * MG), (12 * 3600, MG)))
    pump.start()
    pump.advance(HOUR)  # 01:00, a quarter into a 64-stroke run at 4 mg/day
    if change == "reprogram":
        pump.program(basal=((0, MG),))
    else:
        st = pump.status()
        pump.request(SetClock(command_id=pump.next_id(), clock_s=st.clock_s + 12 * 3600))  # 13:00
        assert pump.status().basal_rate_ng_per_day == MG
    gt0 = pump.truth()
    for k in range(1, 9):
        pump.advance(30 * MINUTE)
        delivered = pump.truth().delivered_ng - gt0.delivered_ng
        # (one stroke of the old schedule may still have been owed at the change)
        assert abs(delivered - Fraction(MG * k, 48)) <= stroke_ng(CONC), f"{k / 2} h after the change"


@pytest.mark.req("SR-009")
def test_bug_strokes_closer_than_the_mechanism_allows_across_runs(procs):
    """Bug: the mechanism's fastest pace (HW_INFO min_stroke_interval_ms, 1.8 s) was kept
    within a run only: a bolus ordered just after a basal stroke made its first stroke at
    once, and when a bolus ended the basal held back was paid out at once after its last
    stroke. Now no run starts sooner than that interval after the last stroke. (Sampled
    every 1.7 s: never two strokes in one sample.)"""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, 4 * MG),))  # a stroke every 54 s from the start
    pump.start()
    pump.advance(3 * 54_000 + 1)  # 1 ms after the third basal stroke
    assert pump.truth().strokes_total == 3
    pump.request(ClinicianBolus(command_id=pump.next_id(), dose_ng=20 * stroke_ng(CONC), duration_s=600))
    last = 3
    for _ in range(12 * MINUTE // 1_700):  # the bolus, then the basal held back during it
        pump.advance(1_700)
        strokes = pump.truth().strokes_total
        assert strokes - last <= 1, f"{strokes - last} strokes within 1.7 s at {pump.truth().time_ms} ms"
        last = strokes
    assert last >= 3 + 20 + 11  # all of it was given meanwhile
    (done,) = pump.events(BolusFinished)
    assert done.outcome is BolusOutcome.COMPLETED


@pytest.mark.req("SR-035")
def test_bug_a_reset_forgot_the_oldest_minute_of_the_rolling_24h(procs):
    """Bug: NVM kept 1440 minutes of delivery history while a rolling 24 h touches 1441:
    after a reset the oldest minute, still inside the window, was forgotten, and
    dose_24h_ng (and the hard-limit check) counted a stroke short. Now every minute the
    window touches is kept."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, 4 * MG),))  # strokes at 54 s, 108 s, ...
    pump.start()
    pump.advance(30_000)
    early = pump.truth()
    pump.advance_to(DAY + 30_000)  # the window (30 s, now] still holds the stroke at 54 s
    gt = pump.truth()
    before = pump.status().dose_24h_ng
    assert before >= gt.delivered_ng - early.delivered_ng
    pump.sim(SimPowerCycle(off_ms=0))
    after = pump.status().dose_24h_ng
    assert after == before
    assert after >= gt.delivered_ng - early.delivered_ng


@pytest.mark.parametrize("when", ["before-the-first-start", "after-a-stop"])
@pytest.mark.req("SR-039")
def test_bug_priming_while_stopped_made_basal_owed_for_the_time_stopped(procs, when):
    """Bug: a priming bolus runs while therapy is stopped, and the delivery step then
    also accrued basal, from the time therapy stopped (or from pump time 0): START found
    hours of basal owed and paid it out at the payout pace (here 10 hours of 4 mg/day in
    minutes). Now no basal accrues while therapy is not running."""
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(basal=((0, 4 * MG),))
    if when == "after-a-stop":
        pump.start()
        pump.advance(HOUR)
        pump.request(Stop(command_id=pump.next_id()))
    pump.advance(10 * HOUR)
    pump.request(Prime(command_id=pump.next_id(), volume_nl=200_000))
    pump.advance(HOUR)
    (primed,) = pump.events(BolusFinished)
    assert primed.outcome is BolusOutcome.COMPLETED and primed.delivered_nl == 200_000
    made = pump.truth().strokes_total
    pump.start()
    pump.advance(HOUR)
    assert pump.truth().strokes_total - made <= HOUR // 54_000 + 1  # an hour of basal, not eleven
