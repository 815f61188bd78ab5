"""tools/plot.py: the timeline's arithmetic (basal schedule, running spans, alarm spans),
its JSON form, the PNG, and `thecal plot` from a saved timeline and from a running pump."""

from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import sys

import pytest

from protocol.codes import AlarmId, BolusDecision, LogEvent, Priority, TherapyState
from tests.harness import Procs, firmware_pump
from tools import plot
from tools.plot import BasalStep, LogRecord, StatusSample, Thresholds, Timeline, TruthSample

MG = 1_000_000
DAY = 86_400
HOUR = 3_600
REFERENCE_BASAL = (BasalStep(0, MG), BasalStep(7 * HOUR, 3 * MG // 2), BasalStep(22 * HOUR, MG))
REFERENCE_MG_PER_DAY = (7 * 1.0 + 15 * 1.5 + 2 * 1.0) / 24  # 1.3125


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def state(t: int, old: TherapyState, new: TherapyState, seq: int = 0) -> LogRecord:
    return LogRecord(seq, t, LogEvent.THERAPY_STATE, old, new)


def synthetic(days: int = 2) -> Timeline:
    """Two days of a pump that runs, is refilled in place on day 1 (a pause of no
    length), gets granted and denied bolus requests and a low-reservoir alarm."""
    end = days * DAY
    log = [
        state(0, TherapyState.STOPPED, TherapyState.RUNNING),
        LogRecord(0, 3 * HOUR, LogEvent.BOLUS_REQUEST, 5, BolusDecision.GRANTED),
        LogRecord(0, 4 * HOUR, LogEvent.BOLUS_REQUEST, 6, BolusDecision.LOCKOUT),
        LogRecord(0, 20 * HOUR, LogEvent.BOLUS_REQUEST, 7, BolusDecision.COUNT_LIMIT),
        LogRecord(0, 30 * HOUR, LogEvent.ALARM_RAISED, AlarmId.LOW_RESERVOIR, Priority.MEDIUM),
        state(34 * HOUR, TherapyState.RUNNING, TherapyState.REFILL),
        LogRecord(0, 34 * HOUR, LogEvent.REFILL_COMPLETE, 1_900_000, 20_000_000),
        LogRecord(0, 34 * HOUR, LogEvent.ALARM_CLEARED, AlarmId.LOW_RESERVOIR),
        state(34 * HOUR, TherapyState.REFILL, TherapyState.RUNNING),
        LogRecord(0, 40 * HOUR, LogEvent.BOLUS_REQUEST, 8, BolusDecision.GRANTED),
    ]
    truth, status = [], []
    reservoir = 3_000_000
    for h in range(days * 24 + 1):
        if h == 34:
            truth.append(TruthSample(h * HOUR, reservoir, 0, 0))
            status.append(StatusSample(h * HOUR, reservoir - 2_000, MG, TherapyState.RUNNING))
            reservoir = 20_000_000
        truth.append(TruthSample(h * HOUR, reservoir, h * 55_000, h * 275_000))
        status.append(StatusSample(h * HOUR, reservoir - 500 - h * 10, MG, TherapyState.RUNNING))
        reservoir -= 55_000
    return Timeline(
        drug="morphine",
        concentration_ng_per_ml=5 * MG,
        basal=REFERENCE_BASAL,
        thresholds=Thresholds(low_reservoir_nl=2_000_000, empty_nl=1_000_000, capacity_nl=20_000_000),
        end_s=end,
        log=tuple(log),
        truth=tuple(truth),
        status=tuple(status),
        title="synthetic",
    )


# ============================================================ arithmetic


def test_prescribed_basal_over_whole_days_is_the_schedule_integral():
    tl = synthetic(days=3)
    assert plot.prescribed_basal_ng(tl) == pytest.approx(3 * REFERENCE_MG_PER_DAY * MG)
    assert plot.prescribed_basal_ng(tl, 0, 7 * HOUR) == pytest.approx(7 / 24 * MG)
    assert plot.prescribed_basal_ng(tl, 7 * HOUR, 8 * HOUR) == pytest.approx(1.5 / 24 * MG)


def test_the_schedule_follows_the_local_clock_not_pump_time():
    # Pump time 0 at 06:00 local: the 07:00 step comes one hour in.
    log = (state(0, TherapyState.STOPPED, TherapyState.RUNNING),)
    tl = Timeline("morphine", 5 * MG, REFERENCE_BASAL, synthetic().thresholds, end_s=DAY, log=log, day_start_s=6 * HOUR)
    times, rates = plot.basal_series(tl)
    assert (HOUR, 3 * MG // 2) in zip(times, rates, strict=True)
    assert (16 * HOUR, MG) in zip(times, rates, strict=True)
    assert plot.prescribed_basal_ng(tl) == pytest.approx(REFERENCE_MG_PER_DAY * MG)


def test_no_basal_is_prescribed_while_stopped():
    log = (
        state(0, TherapyState.STOPPED, TherapyState.RUNNING),
        state(2 * HOUR, TherapyState.RUNNING, TherapyState.STOPPED),
        state(5 * HOUR, TherapyState.STOPPED, TherapyState.RUNNING),
    )
    tl = Timeline("morphine", 5 * MG, REFERENCE_BASAL, synthetic().thresholds, end_s=6 * HOUR, log=log)
    assert plot.running_intervals(tl.log, tl.end_s) == [(0, 2 * HOUR), (5 * HOUR, 6 * HOUR)]
    assert plot.prescribed_basal_ng(tl) == pytest.approx(3 / 24 * MG)
    times, rates = plot.basal_series(tl)
    assert (2 * HOUR, 0) in zip(times, rates, strict=True)


def test_a_pause_of_no_length_is_no_gap_in_therapy():
    tl = synthetic()
    assert plot.running_intervals(tl.log, tl.end_s) == [(0, 2 * DAY)]
    _, rates = plot.basal_series(tl)
    assert 0 not in rates[1:]


def test_alarm_spans_and_bolus_decisions_come_from_the_log():
    tl = synthetic()
    (span,) = plot.alarm_spans(tl.log, tl.end_s)
    assert (span.alarm, span.priority, span.start_s, span.end_s, span.cleared) == (
        AlarmId.LOW_RESERVOIR,
        Priority.MEDIUM,
        30 * HOUR,
        34 * HOUR,
        True,
    )
    still_on = plot.alarm_spans((LogRecord(1, 100, LogEvent.ALARM_RAISED, AlarmId.OCCLUSION, Priority.HIGH),), 500)
    assert [(s.end_s, s.cleared) for s in still_on] == [(500, False)]
    assert [d for _, d in plot.bolus_requests(tl.log)] == [
        BolusDecision.GRANTED,
        BolusDecision.LOCKOUT,
        BolusDecision.COUNT_LIMIT,
        BolusDecision.GRANTED,
    ]
    assert plot.refills(tl.log) == [(34 * HOUR, 1_900_000, 20_000_000)]


def test_the_timeline_survives_json(tmp_path):
    tl = synthetic()
    tl.save(tmp_path / "t.json")
    assert Timeline.load(tmp_path / "t.json") == tl
    with pytest.raises(ValueError, match="not a Thecal timeline"):
        Timeline.from_dict({"format": 99})


# ============================================================ the picture


def test_render_timeline_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot.render_timeline(synthetic(), tmp_path / "t.png")
    width, height = png_size(out)
    assert width >= 1000 and height >= 800


def test_render_timeline_of_a_moment_only(tmp_path):
    """What `thecal plot` has from a live pump: the log, and one sample of each."""
    pytest.importorskip("matplotlib")
    full = synthetic()
    tl = dataclasses.replace(full, truth=full.truth[-1:], status=full.status[-1:])
    png_size(plot.render_timeline(tl, tmp_path / "t.png"))


def test_without_matplotlib_the_error_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(plot.PlotUnavailable, match=r"pip install thecal\[plot\]"):
        plot.render_timeline(synthetic(), tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()


# ============================================================ `thecal plot`


def plot_args(**kw) -> argparse.Namespace:
    base = {"output": "therapy.png", "state_dir": None, "port": None, "keys": None, "json": False, "from_file": None}
    return argparse.Namespace(**{**base, **kw})


def test_run_plot_from_a_saved_timeline(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    synthetic().save(tmp_path / "t.json")
    out = tmp_path / "again.png"
    assert plot.run_plot(plot_args(output=str(out), from_file=str(tmp_path / "t.json"), json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["output"] == str(out)
    png_size(out)


def test_run_plot_without_an_emulator_is_no_answer(tmp_path, capsys):
    assert plot.run_plot(plot_args(output=str(tmp_path / "x.png"), state_dir=str(tmp_path))) == 4
    assert "no emulator" in capsys.readouterr().err


def test_run_plot_from_a_running_pump(tmp_path, capsys):
    """The log gives the history (the bolus requests, the therapy states); the pump
    keeps no reservoir history, so the reservoir is a single point now."""
    pytest.importorskip("matplotlib")
    with Procs(tmp_path) as procs:
        pump = firmware_pump(procs)
        pump.fill(12_000_000, 5 * MG)
        pump.program(basal=((0, MG), (7 * HOUR, 3 * MG // 2)), bolus=(100_000, 600, 7_200, 6), max_dose_24h_ng=3 * MG)
        pump.start()
        pump.advance(3 * HOUR * 1000)
        assert pump.press().decision is BolusDecision.GRANTED
        pump.advance(HOUR * 1000)
        assert pump.press().decision is BolusDecision.LOCKOUT
        pump.advance(5 * HOUR * 1000)
        state_dir = procs.started[0].state_dir
        tl = plot.timeline_from_pump(pump.client)
        out = tmp_path / "live.png"
        assert plot.run_plot(plot_args(output=str(out), state_dir=str(state_dir))) == 0
    assert "wrote" in capsys.readouterr().out
    png_size(out)
    assert tl.end_s == 9 * HOUR
    assert [d for _, d in plot.bolus_requests(tl.log)] == [BolusDecision.GRANTED, BolusDecision.LOCKOUT]
    assert plot.running_intervals(tl.log, tl.end_s) == [(0, 9 * HOUR)]
    assert tl.basal == (BasalStep(0, MG), BasalStep(7 * HOUR, 3 * MG // 2))
    assert len(tl.truth) == len(tl.status) == 1
    # Prescribed basal over the 9 h against what really left the catheter, less the bolus.
    delivered_basal_ng = tl.truth[0].delivered_ng - 100_000
    assert abs(delivered_basal_ng - plot.prescribed_basal_ng(tl)) <= 2 * 2_500  # two strokes
