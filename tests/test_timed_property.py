"""Property test of SR-053 on the whole rig in this process (tools.inprocess.LocalPump, the
real firmware and emulated pump, every request through the codec): a prescription the
pump accepts with its hard limit at the very least it allows for its timed boluses gives
every one of them at its time, day after day, when nothing else is given. The
validation's bound (firmware/rules/prescription.py) is then enough for the check each
timed bolus meets at its time (firmware/rules/timed_bolus.py), and the hard limit holds
by ground truth."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from math import ceil, floor

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.model import PumpModel
from protocol.codes import LogEvent, NakReason, Role, TherapyState, TimedBolusOutcome
from protocol.messages import LogRead, Nak, RefillBegin, RefillComplete, SimAdvance, SimGroundTruth, Start
from tests.harness import program_message
from tests.strategies import scaled
from tools.inprocess import LocalPump

MG = 1_000_000
FG_PER_NG = 1_000_000
ML = 1_000_000
DAY = 86_400_000
MODEL = replace(PumpModel(), stroke_error_sd_ppm=0, initial_fill_ul=20_000)
STROKE_NL = MODEL.stroke_nl


def least_limit_ng(basal, timed, conc: int) -> int:
    """The test's own arithmetic of the bound: basal over a day and a minute, a stroke,
    each bolus as given (whole strokes, or the dose if more), and one again with the
    basal (at the highest rate) it holds back while it runs."""
    ends = [s for s, _ in basal[1:]] + [86_400]
    day = sum((Fraction(r * (e - s), 86_400) for (s, r), e in zip(basal, ends, strict=True)), Fraction(0))
    top = max(r for _, r in basal)
    stroke = STROKE_NL * conc
    # Whole strokes nearest the dose, a half rounded up as the pump does (Python's round()
    # rounds it to even: 252.5 strokes gave 252, one stroke less than the pump's 253).
    nearest = [max(1, floor(Fraction(d * FG_PER_NG, stroke) + Fraction(1, 2))) for _, d, _ in timed]
    given_ = [Fraction(max(d * FG_PER_NG, n * stroke), FG_PER_NG) for (_, d, _), n in zip(timed, nearest, strict=True)]
    again = max(g + Fraction(top * t, 86_400) for g, (_, _, t) in zip(given_, timed, strict=True))
    return ceil(day + Fraction(top, 1440) + Fraction(stroke, FG_PER_NG) + sum(given_) + again)


@st.composite
def prescriptions(draw):
    conc = draw(st.sampled_from([5 * MG, 2 * MG, 10 * MG, MG]))
    least = -(-MODEL.min_flow_nl_per_day * conc // ML)
    n = draw(st.integers(1, 3))
    starts = [0, *sorted(draw(st.sets(st.integers(1, 95).map(lambda q: q * 900), min_size=n - 1, max_size=n - 1)))]
    rates = [draw(st.integers(max(least, MG // 5), 3 * MG)) for _ in range(n)]
    basal = tuple(zip(starts, rates, strict=True))
    hours = sorted(draw(st.sets(st.integers(0, 23), min_size=1, max_size=4)))
    timed = []
    for h in hours:
        dose = draw(st.integers(STROKE_NL * conc // ML, MG // 2))
        strokes = -(-(dose * ML // conc) // STROKE_NL)
        duration = max(60, -(-strokes * MODEL.min_stroke_interval_ms // 1000), draw(st.sampled_from([600, 900, 1_800])))
        timed.append((h * 3_600 + draw(st.sampled_from([0, 900, 1_800])), dose, min(duration, 1_800)))
    return conc, basal, tuple(timed)


@settings(max_examples=scaled(12), deadline=None)
@given(rx=prescriptions(), days=st.integers(2, 4))
def test_at_the_least_hard_limit_it_allows_every_timed_bolus_is_given(rx, days):
    conc, basal, timed = rx
    limit = least_limit_ng(basal, timed, conc)
    with LocalPump(replace(MODEL, initial_concentration_ng_per_ml=conc)) as pump:

        def ok(msg, role=Role.CLINICIAN):
            reply = pump.request(msg, role)
            assert not isinstance(reply, Nak), (reply, rx, limit)
            return reply

        ok(RefillBegin(command_id=1))
        ok(
            RefillComplete(
                command_id=2, withdrawn_nl=0, added_nl=20 * ML, drug="morphine", concentration_ng_per_ml=conc
            )
        )
        # One ng less is refused, naming a timed bolus's dose; the least is accepted.
        below = pump.request(
            program_message(3, concentration_ng_per_ml=conc, basal=basal, timed_bolus=timed, max_dose_24h_ng=limit - 1)
        )
        assert isinstance(below, Nak) and below.reason is NakReason.OUT_OF_RANGE, below
        assert below.field.startswith("timed_bolus[") and below.field.endswith("].dose_ng"), below
        ok(program_message(4, concentration_ng_per_ml=conc, basal=basal, timed_bolus=timed, max_dose_24h_ng=limit))
        assert ok(Start(command_id=5)).state is TherapyState.RUNNING
        samples = []
        for _ in range(days * 24 * 4):
            pump.request(SimAdvance(duration_ms=DAY // 96), Role.SIM)
            gt = pump.request(SimGroundTruth(tones_from=0), Role.SIM)
            samples.append((gt.time_ms, gt.delivered_ng))
        outcomes = []
        seq = 0
        while True:
            page = ok(LogRead(from_seq=seq, max_entries=32))
            outcomes += [TimedBolusOutcome(e.arg1) for e in page.entries if e.event is LogEvent.TIMED_BOLUS]
            if not page.entries or page.entries[-1].seq + 1 >= page.next_seq:
                break
            seq = page.entries[-1].seq + 1
        per_day = len(timed)
        assert len(outcomes) >= per_day * (days - 1), outcomes
        assert set(outcomes) == {TimedBolusOutcome.STARTED}, (outcomes, rx, limit)
        # The hard limit by ground truth, over every 24 h sampled (a stroke of slack: a
        # sampled window may start mid-stroke).
        times = [t for t, _ in samples]
        for t, d in samples:
            first = next(i for i, u in enumerate(times) if u > t - DAY)
            assert d - samples[max(0, first - 1)][1] <= limit + STROKE_NL * conc // ML, (rx, limit)
