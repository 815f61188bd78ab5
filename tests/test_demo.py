"""`thecal demo` over a real emulator process, for a day or two instead of 30: it
finishes, its figures agree with the ground truth and the event log (and with the same
therapy run in-process by tools.inprocess), it writes a PNG and a timeline, it prints
one JSON object with --json, and it leaves no emulator behind."""

from __future__ import annotations

import contextlib
import io
import json
import os

import pytest

from protocol.codes import BolusDecision, BolusKind, LogEvent
from tools import demo, plot
from tools.inprocess import LocalPump, run_reference

MG = 1_000_000
STROKE_NL = 500
REFERENCE_MG_PER_DAY = (7 * 1.0 + 15 * 1.5 + 2 * 1.0) / 24  # examples/morphine.toml's basal


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    """One --json run of two days, shared by the tests that read its figures."""
    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = demo.run_demo(days=2, out=out, as_json=True)
    captured = stdout.getvalue().splitlines()
    return rc, captured, out


def test_json_is_one_object_and_the_files_are_written(two_days):
    rc, printed, out = two_days
    assert rc == 0
    assert len(printed) == 1
    doc = json.loads(printed[0])
    assert doc["days"] == 2
    assert doc["png"] == str(out / "therapy.png") and is_png(out / "therapy.png")
    assert doc["timeline"] == str(out / "therapy.json")
    assert plot.Timeline.load(out / "therapy.json").end_s >= 2 * 86_400


def test_delivered_by_ground_truth_matches_the_prescription(two_days):
    _, printed, out = two_days
    doc = json.loads(printed[0])
    tl = plot.Timeline.load(out / "therapy.json")
    days = tl.end_s / 86_400
    # Basal over whole days is the schedule's integral (a last bolus may run a few
    # minutes past the end: the basal prescribed follows the real end).
    assert doc["prescribed_mg"]["basal"] == pytest.approx(REFERENCE_MG_PER_DAY * days, abs=1e-3)
    assert doc["prescribed_mg"]["patient_boluses"] == pytest.approx(0.1 * doc["boluses_granted"])
    delivered_ng = tl.truth[-1].delivered_ng - tl.truth[0].delivered_ng
    assert doc["delivered_mg_ground_truth"] == pytest.approx(delivered_ng / MG, abs=1e-4)
    # The model's strokes are 1 % off each (seeded), and the firmware counts whole
    # strokes: allow two strokes of drug and 0.3 % of the total.
    stroke_mg = STROKE_NL * 5 * MG / 1e6 / MG
    total = doc["prescribed_mg"]["total"]
    assert abs(doc["delivered_mg_ground_truth"] - total) <= 2 * stroke_mg + 0.003 * total


def test_bolus_counts_agree_with_the_event_log_and_the_in_process_run(two_days):
    _, printed, out = two_days
    doc = json.loads(printed[0])
    tl = plot.Timeline.load(out / "therapy.json")
    requests = [r for r in tl.log if r.event is LogEvent.BOLUS_REQUEST]
    assert doc["bolus_requests"] == len(requests) == 2 * demo.PRESSES_PER_DAY
    denied: dict[str, int] = {}
    for r in requests:
        if r.arg1 != BolusDecision.GRANTED:
            name = BolusDecision(r.arg1).name.lower()
            denied[name] = denied.get(name, 0) + 1
    assert doc["boluses_denied"] == denied
    assert denied, "the reference presses are dense enough that some are denied"
    started = [r for r in tl.log if r.event is LogEvent.BOLUS_STARTED and r.arg1 == BolusKind.PATIENT]
    assert doc["boluses_granted"] == len(started) == len(requests) - sum(denied.values())
    # The same presses against the same firmware in one process: the same decisions.
    ref = run_reference(LocalPump(seed=demo.SEED), 2, demo.SEED)
    assert (ref.granted, ref.denied) == (doc["boluses_granted"], doc["boluses_denied"])


def test_the_reservoir_estimate_follows_the_physical_volume(two_days):
    _, printed, out = two_days
    doc = json.loads(printed[0])
    tl = plot.Timeline.load(out / "therapy.json")
    assert len(tl.truth) == len(tl.status) >= 48  # hourly samples
    assert tl.truth[0].reservoir_nl == demo.FILL_NL
    res = doc["reservoir_ml"]
    assert res["physical"] == pytest.approx(res["firmware_estimate"], abs=0.01)
    assert doc["alarms"] == [] and doc["refills"] == []  # 12 mL lasts well past two days


def test_the_summary_for_people(tmp_path, capsys):
    assert demo.run_demo(days=1, out=tmp_path) == 0
    text = capsys.readouterr().out
    for words in ("prescribed", "delivered", "basal", "patient boluses", "granted", "denied: lockout", "alarms"):
        assert words in text
    assert f"wrote {tmp_path / 'therapy.png'}" in text
    assert is_png(tmp_path / "therapy.png")


def test_without_matplotlib_the_summary_still_comes(tmp_path, capsys, monkeypatch):
    def unavailable(*a, **kw):
        raise plot.PlotUnavailable(plot.INSTALL_HINT)

    monkeypatch.setattr(plot, "render_timeline", unavailable)
    assert demo.run_demo(days=1, out=tmp_path) == 0
    text = capsys.readouterr().out
    assert "granted" in text
    assert "pip install thecal[plot]" in text
    assert not (tmp_path / "therapy.png").exists()
    assert (tmp_path / "therapy.json").exists()


def test_an_interrupted_demo_leaves_no_emulator(tmp_path, capsys, monkeypatch):
    started: list[demo.EmulatorProcess] = []

    class Recorded(demo.EmulatorProcess):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            started.append(self)

    def interrupted(client, *a, **kw):
        client.request(demo.Status())  # the emulator is up and answering
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "EmulatorProcess", Recorded)
    monkeypatch.setattr(demo, "run_reference_over_pty", interrupted)
    assert demo.run_demo(days=1, out=tmp_path) == 130
    assert "interrupted" in capsys.readouterr().err
    (emu,) = started
    assert emu.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(emu.proc.pid, 0)


def test_days_must_be_positive(tmp_path, capsys):
    assert demo.run_demo(days=0, out=tmp_path) == 2
    assert "--days" in capsys.readouterr().err
