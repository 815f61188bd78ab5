"""`thecal demo`: 30 simulated days of the reference therapy on an emulated pump.

What it does, as a person would with the real tools:

  1. starts `thecal emulator` (lockstep clock, the controller firmware in-process) as a
     real process in a temporary state directory, and talks to it over its pty with the
     same signed frames a programmer, a PTM and a test harness send;
  2. records the pump's initial fill (12 mL of morphine 5 mg/mL: the firmware's estimate
     starts at zero), programs examples/morphine.toml and starts therapy;
  3. steps simulated time with SIM_ADVANCE to each of the patient's 8 presses a day
     (seeded pseudo-random times, so some are denied), sampling the ground truth and
     STATUS every simulated hour; when the low-reservoir alarm sounds it refills to
     20 mL at 10:00 the next day, withdrawing the physical residual;
  4. reads the event log, prints prescribed against delivered (by ground truth),
     boluses granted and denied by reason, alarms and refills, and writes therapy.png
     (tools/plot.py) with the timeline beside it as therapy.json.

The patient's schedule and the refill rule are those of tools.inprocess.run_reference
(the benchmark), so the two agree on what happened.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.codes import AlarmId, BolusDecision, Role
from protocol.messages import (
    AlarmRaised,
    BolusRequest,
    Hello,
    Program,
    RefillBegin,
    RefillComplete,
    SimAdvance,
    SimGroundTruth,
    SimRefill,
    Start,
    Status,
)
from protocol.vectors import reference_prescription
from tools import plot
from tools.client import Client, ClientError, NoAnswer, Refused, Unauthentic, load_keys

MG = 1_000_000  # ng
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PROGRAM_FILE = Path(__file__).resolve().parents[1] / "examples" / "morphine.toml"
SEED = 1
PRESSES_PER_DAY = 8
FILL_NL = 12_000_000  # the fresh pump's fill (emulator/model.py initial_fill_ul)
REFILL_TO_NL = 20_000_000
REFILL_AT_MS = 10 * HOUR_MS  # time of day of the refill visit
SAMPLE_EVERY_MS = HOUR_MS
START_TIMEOUT_S = 30.0  # a cold start on a loaded 2-core machine imports a lot
ADVANCE_TIMEOUT_S = 120.0


def reference_program(command_id: int) -> Program:
    """The reference therapy (../shared/domain.md), the same one the vectors carry."""
    return Program(command_id=command_id, **reference_prescription())


def press_times_ms(days: int, seed: int = SEED) -> list[int]:
    """The patient's PTM presses: 8 a day at seeded pseudo-random times (as run_reference)."""
    rng = random.Random(seed)
    return sorted(d * DAY_MS + rng.randrange(DAY_MS) for d in range(days) for _ in range(PRESSES_PER_DAY))


# ---------------------------------------------------------------- the emulator process


class EmulatorError(RuntimeError):
    pass


class EmulatorProcess:
    """`thecal emulator` in its own session (so a Ctrl-C at the terminal reaches only the
    demo, which then kills the emulator's whole process group), stopped when stdin closes."""

    def __init__(self, state_dir: Path, seed: int, extra: tuple[str, ...] = ()) -> None:
        self.state_dir = state_dir
        self.log_path = state_dir / "emulator.log"
        self._log = open(self.log_path, "wb")  # closed in close()
        # -P: a `tools` directory in the user's cwd must not shadow the installed package.
        argv = [sys.executable, "-P", "-m", "tools.cli", "emulator", "--state-dir", str(state_dir)]
        argv += ["--exit-on-stdin-eof", "--seed", str(seed), *extra]
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, start_new_session=True
        )
        try:
            fields = _read_line(self.proc.stdout.fileno(), START_TIMEOUT_S).decode(errors="replace").split()
        except EmulatorError:
            self.close()
            raise
        if not fields or fields[0] != "READY":
            self.close()
            raise EmulatorError(f"the emulator did not start:\n{self.stderr_tail()}")
        self.host_port = fields[1]

    def keys(self) -> dict[Role, bytes]:
        return load_keys(self.state_dir / "keys.json")

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        """Close stdin (the clean stop), then kill the group whatever it did, and reap."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_line(fd: int, timeout_s: float) -> bytes:
    from .hil import PumpStartError, read_line

    try:
        return read_line(fd, timeout_s)
    except PumpStartError:
        raise EmulatorError(f"no READY line from the emulator within {timeout_s:g} s") from None


# ---------------------------------------------------------------- the run


@dataclass
class Refill:
    time_s: float
    withdrawn_nl: int
    expected_nl: int
    discrepancy_nl: int
    added_nl: int


@dataclass
class DemoRun:
    days: int
    program: Program
    timeline: plot.Timeline | None = None
    refills: list[Refill] = field(default_factory=list)


class Progress:
    """A one-line text bar on stderr, redrawn in place; silent when stderr is no terminal."""

    def __init__(self, total_ms: int, enabled: bool) -> None:
        self.total_ms = total_ms
        self.enabled = enabled
        self._shown = -1

    def update(self, now_ms: int, granted: int, denied: int) -> None:
        if not self.enabled:
            return
        frac = min(1.0, now_ms / self.total_ms) if self.total_ms else 1.0
        width = 30
        cells = round(frac * width)
        if cells == self._shown and frac < 1.0:
            return
        self._shown = cells
        sys.stderr.write(
            f"\r  day {now_ms / DAY_MS:5.1f}/{self.total_ms // DAY_MS} [{'#' * cells}{'.' * (width - cells)}] "
            f"{frac:4.0%}  boluses: {granted} granted, {denied} denied "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._shown >= 0:
            sys.stderr.write("\n")
            sys.stderr.flush()


class Driver:
    """The clinician, the patient and the test harness, all on one client (one reader per pty)."""

    def __init__(self, client: Client) -> None:
        self.c = client
        self.cmd = itertools.count(1)
        self.now_ms = 0
        self.tones_seen = 0
        self.truth: list[plot.TruthSample] = []
        self.status: list[plot.StatusSample] = []
        self.log: list[plot.LogRecord] = []
        self.granted = 0
        self.denied = 0

    def advance_to(self, t_ms: int) -> None:
        if t_ms > self.now_ms:
            self.now_ms = self.c.sim(SimAdvance(duration_ms=t_ms - self.now_ms), timeout_s=ADVANCE_TIMEOUT_S).time_ms

    def sample(self) -> tuple[Any, Any]:
        gt = self.c.sim(SimGroundTruth(tones_from=self.tones_seen))
        self.tones_seen = gt.tones_total
        st = self.c.request(Status())
        t = gt.time_ms / 1000
        self.truth.append(plot.TruthSample(t, gt.reservoir_nl, gt.delivered_nl, gt.delivered_ng))
        self.status.append(plot.StatusSample(t, st.reservoir_nl, st.basal_rate_ng_per_day, st.state))
        return gt, st

    def read_log(self) -> None:
        self.log.extend(plot.read_log(self.c, self.log[-1].seq + 1 if self.log else 0))

    def alarms_raised(self) -> list[AlarmRaised]:
        out = []
        while self.c.events:
            ev = self.c.events.popleft()
            if isinstance(ev, Unauthentic):
                raise ev  # SR-058: never counted as an alarm
            if isinstance(ev, AlarmRaised):
                out.append(ev)
        return out

    def record_fill(self, added_nl: int, concentration: int, drug: str) -> None:
        """Tell the firmware what the pump was filled with (the fill itself is physical)."""
        self.c.request(RefillBegin(command_id=next(self.cmd)))
        self.c.request(
            RefillComplete(
                command_id=next(self.cmd),
                withdrawn_nl=0,
                added_nl=added_nl,
                drug=drug,
                concentration_ng_per_ml=concentration,
            )
        )

    def refill(self, truth: Any, added_nl: int, concentration: int, drug: str) -> Refill:
        """A refill visit: the clinician withdraws what is physically left and puts added_nl in."""
        withdrawn = truth.reservoir_nl
        begin = self.c.request(RefillBegin(command_id=next(self.cmd)))
        self.c.sim(
            SimRefill(withdraw_nl=withdrawn, add_nl=added_nl, concentration_ng_per_ml=concentration, into_pocket=False)
        )
        done = self.c.request(
            RefillComplete(
                command_id=next(self.cmd),
                withdrawn_nl=withdrawn,
                added_nl=added_nl,
                drug=drug,
                concentration_ng_per_ml=concentration,
            )
        )
        return Refill(truth.time_ms / 1000, withdrawn, begin.expected_reservoir_nl, done.discrepancy_nl, added_nl)


def run_reference_over_pty(client: Client, days: int, program_of: Any, progress: Progress, seed: int = SEED) -> DemoRun:
    """The reference therapy (see the module doc) through `client`; returns the run with
    its timeline (log, hourly ground truth and STATUS, prescription)."""
    d = Driver(client)
    program: Program = program_of(1)
    conc, drug = program.concentration_ng_per_ml, program.drug
    run = DemoRun(days=days, program=program)

    capacity_nl = client.request(Hello()).reservoir_capacity_ul * 1000
    # The pump was filled at implant: record that fill, then program and start.
    d.record_fill(FILL_NL, conc, drug)
    program = program_of(next(d.cmd))
    client.request(program)
    client.request(Start(command_id=next(d.cmd)))
    d.sample()

    end_ms = days * DAY_MS
    # At one time a sample is taken before a press, so it shows the state the press met.
    stops = sorted(
        [(t, 0) for t in range(SAMPLE_EVERY_MS, end_ms + 1, SAMPLE_EVERY_MS)]
        + [(t, 1) for t in press_times_ms(days, seed)]
    )
    refill_at: int | None = None
    for t, kind in stops:
        if refill_at is not None and refill_at <= t:
            d.advance_to(refill_at)
            gt, _ = d.sample()
            run.refills.append(d.refill(gt, REFILL_TO_NL, conc, drug))
            d.sample()
            refill_at = None
        d.advance_to(t)
        for ev in d.alarms_raised():
            if ev.alarm is AlarmId.LOW_RESERVOIR and refill_at is None:
                refill_at = (ev.time_s * 1000 // DAY_MS + 1) * DAY_MS + REFILL_AT_MS
        if kind == 0:
            d.sample()
            if t % DAY_MS == 0:
                d.read_log()
        else:
            reply = client.request(BolusRequest(command_id=next(d.cmd)), role=Role.PATIENT)
            if reply.decision is BolusDecision.GRANTED:
                d.granted += 1
            else:
                d.denied += 1
        progress.update(d.now_ms, d.granted, d.denied)

    # A bolus granted late on the last day is let finish, so prescribed and delivered
    # compare whole doses; the basal prescribed runs to wherever the run then ends.
    for _ in range(2 * max(1, program.bolus_duration_s // 60)):
        if not client.request(Status()).bolus_active:
            break
        d.advance_to(d.now_ms + 60_000)
    if not d.truth or d.truth[-1].time_s * 1000 != d.now_ms:
        d.sample()
    d.read_log()
    progress.done()

    final = client.request(Status())
    run.timeline = plot.Timeline(
        drug=program.drug,
        concentration_ng_per_ml=conc,
        basal=tuple(plot.BasalStep(s.start_s, s.rate_ng_per_day) for s in program.basal),
        thresholds=plot.Thresholds(
            low_reservoir_nl=program.low_reservoir_ul * 1000,
            empty_nl=plot._empty_nl(),
            capacity_nl=capacity_nl,
        ),
        end_s=d.now_ms / 1000,
        log=tuple(d.log),
        truth=tuple(d.truth),
        status=tuple(d.status),
        day_start_s=(final.clock_s - final.time_s) % plot.DAY_S,
        title=f"Thecal reference therapy: {drug} {conc / MG:g} mg/mL, {days} simulated days "
        "(emulated pump, controller firmware, lockstep)",
    )
    return run


# ---------------------------------------------------------------- the summary


def summarize(run: DemoRun) -> dict[str, Any]:
    """The figures the demo prints: prescribed vs delivered (ground truth), bolus
    decisions from the event log, alarms, refills, the reservoir at the end."""
    tl = run.timeline
    assert tl is not None
    requests = plot.bolus_requests(tl.log)
    decisions = Counter(d for _, d in requests)
    granted = decisions.pop(BolusDecision.GRANTED, 0)
    basal_ng = plot.prescribed_basal_ng(tl)
    bolus_ng = granted * run.program.bolus_dose_ng
    delivered_ng = tl.truth[-1].delivered_ng - tl.truth[0].delivered_ng
    prescribed_ng = basal_ng + bolus_ng
    return {
        "days": run.days,
        "simulated_s": tl.end_s,
        "drug": tl.drug,
        "concentration_mg_per_ml": tl.concentration_ng_per_ml / MG,
        "prescribed_mg": {
            "basal": round(basal_ng / MG, 4),
            "patient_boluses": round(bolus_ng / MG, 4),
            "total": round(prescribed_ng / MG, 4),
        },
        "delivered_mg_ground_truth": round(delivered_ng / MG, 4),
        "delivered_minus_prescribed_percent": round(100 * (delivered_ng - prescribed_ng) / prescribed_ng, 3)
        if prescribed_ng
        else None,
        "bolus_requests": len(requests),
        "boluses_granted": granted,
        "boluses_denied": {d.name.lower(): n for d, n in sorted(decisions.items())},
        "alarms": [
            {
                "alarm": getattr(s.alarm, "name", str(s.alarm)).lower(),
                "priority": getattr(s.priority, "name", str(s.priority)).lower(),
                "raised_day": round(s.start_s / plot.DAY_S, 3),
                "cleared_day": round(s.end_s / plot.DAY_S, 3) if s.cleared else None,
            }
            for s in plot.alarm_spans(tl.log, tl.end_s)
        ],
        "refills": [
            {
                "day": round(r.time_s / plot.DAY_S, 3),
                "withdrawn_ml": r.withdrawn_nl / plot.NL_PER_ML,
                "expected_ml": r.expected_nl / plot.NL_PER_ML,
                "discrepancy_ml": r.discrepancy_nl / plot.NL_PER_ML,
                "added_ml": r.added_nl / plot.NL_PER_ML,
            }
            for r in run.refills
        ],
        "reservoir_ml": {
            "physical": tl.truth[-1].reservoir_nl / plot.NL_PER_ML,
            "firmware_estimate": tl.status[-1].reservoir_nl / plot.NL_PER_ML,
        },
        "log_entries": len(tl.log),
    }


def _clock(t_s: float) -> str:
    day, rest = divmod(int(t_s), plot.DAY_S)
    return f"day {day} {rest // 3600:02d}:{rest % 3600 // 60:02d}"


def print_summary(s: dict[str, Any], wall_s: float) -> None:
    p, dl = s["prescribed_mg"], s["delivered_mg_ground_truth"]
    speed = s["simulated_s"] / wall_s if wall_s else 0
    print(
        f"\nThecal demo: {s['days']} simulated days of {s['drug']} {s['concentration_mg_per_ml']:g} mg/mL "
        f"in {wall_s:.1f} s ({speed:,.0f}x real time)\n"
    )
    granted = s["boluses_granted"]
    dose = p["patient_boluses"] / granted if granted else 0
    print(f"  {'drug (mg)':<34}{'prescribed':>12}{'delivered':>12}")
    print(f"  {'basal':<34}{p['basal']:>12.3f}")
    print(f"  {f'patient boluses ({granted} x {dose:g} mg)':<34}{p['patient_boluses']:>12.3f}")
    diff = s["delivered_minus_prescribed_percent"]
    note = f"  {diff:+.2f} %" if diff is not None else ""
    print(f"  {'total':<34}{p['total']:>12.3f}{dl:>12.3f}{note}")
    print("  (delivered: the drug that left the catheter tip, by the emulator's ground truth)\n")
    print(f"  {'patient bolus requests':<34}{s['bolus_requests']:>6}")
    print(f"  {'  granted':<34}{s['boluses_granted']:>6}")
    for reason, n in s["boluses_denied"].items():
        print(f"  {'  denied: ' + reason.replace('_', ' '):<34}{n:>6}")
    print()
    if not s["alarms"]:
        print("  alarms raised: none")
    for a in s["alarms"]:
        cleared = f"cleared day {a['cleared_day']:.2f}" if a["cleared_day"] is not None else "still active"
        print(f"  alarm raised: {a['alarm'].replace('_', ' ')} ({a['priority']}), day {a['raised_day']:.2f}, {cleared}")
    for r in s["refills"]:
        print(
            f"  refill day {r['day']:.2f}: withdrew {r['withdrawn_ml']:.3f} mL (firmware expected "
            f"{r['expected_ml']:.3f} mL, discrepancy {r['discrepancy_ml']:+.3f} mL), added {r['added_ml']:g} mL"
        )
    res = s["reservoir_ml"]
    print(f"  reservoir at the end: {res['physical']:.3f} mL physical, {res['firmware_estimate']:.3f} mL estimated")


# ---------------------------------------------------------------- `thecal demo`


def run_demo(days: int = 30, out: str | os.PathLike[str] | None = None, as_json: bool = False) -> int:
    """`thecal demo [--days N] [--out DIR] [--json]`. Exit status per the CLI contract."""
    if days < 1:
        print(f"thecal demo: --days must be at least 1, got {days}", file=sys.stderr)
        return 2
    out_dir = Path(out) if out is not None else Path()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"thecal demo: cannot use {out_dir}: {e}", file=sys.stderr)
        return 2
    program_of = _program_source()
    try:
        program_of(1)  # a therapy file that does not load is said before any process starts
    except (OSError, ValueError) as e:
        print(f"thecal demo: {PROGRAM_FILE}: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    progress = Progress(days * DAY_MS, enabled=sys.stderr.isatty())
    emu: EmulatorProcess | None = None
    old_term = _term_as_interrupt()
    with tempfile.TemporaryDirectory(prefix="thecal-demo-") as tmp:
        try:
            emu = EmulatorProcess(Path(tmp), SEED)
            with Client(emu.host_port, emu.keys(), timeout_s=10.0) as client:
                run = run_reference_over_pty(client, days, program_of, progress)
        except KeyboardInterrupt:
            progress.done()
            print("thecal demo: interrupted", file=sys.stderr)
            return 130
        except (EmulatorError, NoAnswer, Refused, ClientError) as e:
            progress.done()
            tail = emu.stderr_tail() if emu is not None else ""
            print(f"thecal demo: {e}" + (f"\nemulator stderr:\n{tail}" if tail else ""), file=sys.stderr)
            return 3 if isinstance(e, Refused) else 4
        finally:
            if emu is not None:
                emu.close()
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
    wall_s = time.monotonic() - t0

    assert run.timeline is not None
    summary = summarize(run)
    summary["wall_s"] = round(wall_s, 2)
    timeline_path = out_dir / "therapy.json"
    png_path = out_dir / "therapy.png"
    run.timeline.save(timeline_path)
    summary["timeline"] = str(timeline_path)
    try:
        plot.render_timeline(run.timeline, png_path)
        summary["png"] = str(png_path)
        summary["plot_error"] = None
    except plot.PlotUnavailable as e:
        summary["png"] = None
        summary["plot_error"] = str(e)
    if as_json:
        print(json.dumps(summary))
    else:
        print_summary(summary, wall_s)
        if summary["png"]:
            print(f"\n  wrote {png_path} (the timeline: {timeline_path}; `thecal plot --from` re-renders it)")
        else:
            print(f"\n  no plot: {summary['plot_error']}\n  wrote the timeline to {timeline_path}")
    if summary["plot_error"] and as_json:
        print(f"thecal demo: no plot: {summary['plot_error']}", file=sys.stderr)
    return 0


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _term_as_interrupt() -> Any:
    """SIGTERM unwinds like Ctrl-C, so the emulator is killed and the temporary state
    directory removed. Returns the handler to restore (None off the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _interrupted)
    except ValueError:  # signals can only be set from the main thread
        return None


def _program_source():
    """examples/morphine.toml through the CLI's program-file loader; an installed copy
    without the examples falls back to the same prescription built in."""
    if PROGRAM_FILE.exists():
        from tools.programfile import load_program

        return lambda command_id: load_program(PROGRAM_FILE, command_id)
    return reference_program
