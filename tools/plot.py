"""`thecal plot`: a therapy timeline as a PNG, from the event log and the ground truth.

The data lives in frozen dataclasses (`Timeline` and its samples) so the same picture
can come from three places:

  * `thecal demo`, which samples ground truth and STATUS every simulated hour and saves
    the timeline as JSON beside its PNG (`therapy.json`);
  * `thecal plot --from therapy.json`, which re-renders such a file;
  * `thecal plot` against a running emulator: the event log and the prescription give
    the whole history of basal steps, bolus decisions, alarms and refills, but the pump
    keeps no history of its reservoir, so the reservoir panel shows the present values
    only (one point each for the estimate and the physical volume).

Everything here but `render_timeline` works without matplotlib (an optional extra:
`pip install thecal[plot]`), so the demo can still print its summary without it.
"""

from __future__ import annotations

import bisect
import itertools
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from protocol.codes import AlarmId, BolusDecision, LogEvent, Priority, TherapyState

DAY_S = 86_400
NL_PER_ML = 1_000_000
NG_PER_MG = 1_000_000
INSTALL_HINT = "matplotlib is not installed: `pip install thecal[plot]` (or `make demo`) adds it"


class PlotUnavailable(RuntimeError):
    """matplotlib is missing; the message says how to install it."""


# ---------------------------------------------------------------- the data


@dataclass(frozen=True)
class LogRecord:
    """One event-log entry (LOG_READ), times in pump seconds."""

    seq: int
    time_s: int
    event: LogEvent
    arg0: int = 0
    arg1: int = 0


@dataclass(frozen=True)
class TruthSample:
    """What the emulated hardware really did, up to time_s (SIM_GROUND_TRUTH)."""

    time_s: float
    reservoir_nl: int
    delivered_nl: int
    delivered_ng: int


@dataclass(frozen=True)
class StatusSample:
    """What the firmware believed at time_s (STATUS)."""

    time_s: float
    reservoir_nl: int
    basal_rate_ng_per_day: int
    state: TherapyState


@dataclass(frozen=True)
class BasalStep:
    start_s: int  # time of day, s after local midnight
    rate_ng_per_day: int


@dataclass(frozen=True)
class Thresholds:
    low_reservoir_nl: int
    empty_nl: int
    capacity_nl: int


@dataclass(frozen=True)
class Timeline:
    drug: str
    concentration_ng_per_ml: int
    basal: tuple[BasalStep, ...]
    thresholds: Thresholds
    end_s: float
    log: tuple[LogRecord, ...] = ()
    truth: tuple[TruthSample, ...] = ()
    status: tuple[StatusSample, ...] = ()
    # Local time of day at pump time 0, s after midnight: the basal schedule follows the
    # pump's local clock, the plot's axis follows pump time.
    day_start_s: int = 0
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["log"] = [[r.seq, r.time_s, r.event.name, r.arg0, r.arg1] for r in self.log]
        d["truth"] = [[s.time_s, s.reservoir_nl, s.delivered_nl, s.delivered_ng] for s in self.truth]
        d["status"] = [[s.time_s, s.reservoir_nl, s.basal_rate_ng_per_day, s.state.name] for s in self.status]
        return {"format": 1, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timeline:
        if d.get("format") != 1:
            raise ValueError(f"not a Thecal timeline (format {d.get('format')!r})")
        return cls(
            drug=d["drug"],
            concentration_ng_per_ml=d["concentration_ng_per_ml"],
            basal=tuple(BasalStep(**s) for s in d["basal"]),
            thresholds=Thresholds(**d["thresholds"]),
            end_s=d["end_s"],
            log=tuple(LogRecord(q, t, LogEvent[e], a0, a1) for q, t, e, a0, a1 in d["log"]),
            truth=tuple(TruthSample(*s) for s in d["truth"]),
            status=tuple(StatusSample(t, r, b, TherapyState[s]) for t, r, b, s in d["status"]),
            day_start_s=d.get("day_start_s", 0),
            title=d.get("title", ""),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Timeline:
        return cls.from_dict(json.loads(Path(path).read_text()))


# ---------------------------------------------------------------- what the log and the schedule say


def running_intervals(log: Iterable[LogRecord], end_s: float) -> list[tuple[float, float]]:
    """Spans of pump time in the RUNNING state, from the log's THERAPY_STATE entries."""
    spans: list[tuple[float, float]] = []
    since: float | None = None
    for r in log:
        if r.event is not LogEvent.THERAPY_STATE:
            continue
        running = r.arg1 == TherapyState.RUNNING
        if running and since is None:
            since = r.time_s
            # A pause of no length (a refill visit in lockstep) is no gap in therapy.
            if spans and spans[-1][1] == since:
                since = spans.pop()[0]
        elif not running and since is not None:
            if r.time_s > since:
                spans.append((since, r.time_s))
            since = None
    if since is not None and end_s > since:
        spans.append((since, end_s))
    return spans


def _schedule_breaks(basal: Sequence[BasalStep], day_start_s: int, t0: float, t1: float) -> list[float]:
    """Pump times in (t0, t1) at which the daily schedule changes rate."""
    out: list[float] = []
    first_day = int((t0 + day_start_s) // DAY_S)
    last_day = int((t1 + day_start_s) // DAY_S)
    for day in range(first_day, last_day + 1):
        for step in basal:
            t = day * DAY_S + step.start_s - day_start_s
            if t0 < t < t1:
                out.append(t)
    return sorted(out)


def scheduled_rate(basal: Sequence[BasalStep], day_start_s: int, t: float) -> int:
    """The schedule's rate (ng/day) at pump time t."""
    if not basal:
        return 0
    tod = (t + day_start_s) % DAY_S
    starts = [s.start_s for s in basal]
    i = bisect.bisect_right(starts, tod) - 1
    return basal[i].rate_ng_per_day if i >= 0 else basal[-1].rate_ng_per_day


def basal_series(tl: Timeline) -> tuple[list[float], list[int]]:
    """The basal rate in force over [0, end_s] as step points (time s, ng/day), each
    rate holding until the next point: the schedule while RUNNING, zero otherwise."""
    times: list[float] = [0.0]
    rates: list[int] = [0]
    for a, b in running_intervals(tl.log, tl.end_s):
        for t in [a, *_schedule_breaks(tl.basal, tl.day_start_s, a, b)]:
            times.append(t)
            rates.append(scheduled_rate(tl.basal, tl.day_start_s, t))
        if b < tl.end_s:
            times.append(b)
            rates.append(0)
    times.append(tl.end_s)
    rates.append(rates[-1])
    return times, rates


def prescribed_basal_ng(tl: Timeline, t0: float = 0.0, t1: float | None = None) -> float:
    """Drug the basal schedule prescribes over [t0, t1] while therapy was RUNNING, ng."""
    t1 = tl.end_s if t1 is None else t1
    total = 0.0
    for a, b in running_intervals(tl.log, tl.end_s):
        a, b = max(a, t0), min(b, t1)
        if b <= a:
            continue
        edges = [a, *_schedule_breaks(tl.basal, tl.day_start_s, a, b), b]
        for x, y in itertools.pairwise(edges):
            total += scheduled_rate(tl.basal, tl.day_start_s, x) * (y - x) / DAY_S
    return total


def bolus_requests(log: Iterable[LogRecord]) -> list[tuple[int, BolusDecision]]:
    """(time s, decision) of every patient bolus request in the log."""
    out = []
    for r in log:
        if r.event is LogEvent.BOLUS_REQUEST:
            try:
                out.append((r.time_s, BolusDecision(r.arg1)))
            except ValueError:
                continue
    return out


@dataclass(frozen=True)
class AlarmSpan:
    alarm: AlarmId
    priority: Priority
    start_s: float
    end_s: float
    cleared: bool


def alarm_spans(log: Iterable[LogRecord], end_s: float) -> list[AlarmSpan]:
    """Raised-to-cleared spans of every alarm in the log (open ones run to end_s)."""
    open_: dict[int, tuple[float, int]] = {}
    spans: list[AlarmSpan] = []
    for r in log:
        if r.event is LogEvent.ALARM_RAISED and r.arg0 not in open_:
            open_[r.arg0] = (r.time_s, r.arg1)
        elif r.event is LogEvent.ALARM_CLEARED and r.arg0 in open_:
            t, prio = open_.pop(r.arg0)
            spans.append(AlarmSpan(_enum(AlarmId, r.arg0), _enum(Priority, prio), t, r.time_s, True))
    for alarm, (t, prio) in open_.items():
        spans.append(AlarmSpan(_enum(AlarmId, alarm), _enum(Priority, prio), t, end_s, False))
    return sorted(spans, key=lambda s: s.start_s)


def _enum(cls, value: int):
    try:
        return cls(value)
    except ValueError:
        return value


def refills(log: Iterable[LogRecord]) -> list[tuple[int, int, int]]:
    """(time s, withdrawn nL, added nL) of every recorded refill."""
    return [(r.time_s, r.arg0, r.arg1) for r in log if r.event is LogEvent.REFILL_COMPLETE]


# ---------------------------------------------------------------- the picture

_DENIAL_STYLE = {
    BolusDecision.LOCKOUT: ("x", "#d95f02"),
    BolusDecision.COUNT_LIMIT: ("X", "#7570b3"),
    BolusDecision.DOSE_LIMIT: ("D", "#e7298a"),
    BolusDecision.BOLUS_IN_PROGRESS: ("s", "#a6761d"),
    BolusDecision.RESERVOIR: ("v", "#e31a1c"),
    BolusDecision.ALARM_ACTIVE: ("P", "#b10026"),
    BolusDecision.NOT_RUNNING: ("o", "#666666"),
    BolusDecision.NO_PATIENT_BOLUS: ("o", "#999999"),
}
_PRIORITY_COLOUR = {Priority.LOW: "#fdd835", Priority.MEDIUM: "#fb8c00", Priority.HIGH: "#e53935"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _label(name: str) -> str:
    return name.lower().replace("_", " ")


def render_timeline(tl: Timeline, path: str | Path) -> Path:
    """Draw the timeline to a PNG at path: basal rate, bolus requests, reservoir, with
    alarm spans shaded across all three. Raises PlotUnavailable without matplotlib."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    days = tl.end_s / DAY_S
    fig, (ax_rate, ax_bolus, ax_res, ax_err) = plt.subplots(
        4, 1, figsize=(13, 11), sharex=True, gridspec_kw={"height_ratios": [3, 2, 4, 1.6]}, layout="constrained"
    )
    fig.suptitle(tl.title or f"Thecal therapy timeline: {tl.drug}", fontsize=14)

    # A little room past the end: a pump read live has its only samples there.
    x_end = max(days, 1 / 24) * 1.015
    spans = alarm_spans(tl.log, tl.end_s)
    for ax in (ax_rate, ax_bolus, ax_res, ax_err):
        for s in spans:
            # An alarm raised and cleared within a second still gets a visible sliver.
            width = max((s.end_s - s.start_s) / DAY_S, x_end / 400)
            ax.axvspan(
                s.start_s / DAY_S,
                s.start_s / DAY_S + width,
                color=_PRIORITY_COLOUR.get(s.priority, "#bbbbbb"),
                alpha=0.3,
            )
        ax.grid(True, axis="both", alpha=0.3)

    # Basal rate in force, and what really left the catheter each whole day.
    times, rates = basal_series(tl)
    ax_rate.step(
        [t / DAY_S for t in times],
        [r / NG_PER_MG for r in rates],
        where="post",
        color="#1f77b4",
        lw=1.4,
        label="basal rate programmed (in force while running)",
    )
    daily = _daily_delivered_mg(tl.truth, tl.end_s)
    if daily:
        ax_rate.bar(
            [d + 0.5 for d, _ in daily],
            [mg for _, mg in daily],
            width=0.8,
            color="#2ca02c",
            alpha=0.35,
            label="delivered that day, basal + boluses (ground truth)",
        )
    ax_rate.set_ylabel("drug rate (mg/day)")
    ax_rate.set_ylim(bottom=0)
    ax_rate.set_title("Basal rate in force, and drug delivered each day", loc="left", fontsize=11)
    ax_rate.legend(loc="lower left", fontsize=9, framealpha=0.9)

    # Bolus requests: one row for granted, one per denial reason seen.
    reqs = bolus_requests(tl.log)
    decisions = [BolusDecision.GRANTED, *sorted({d for _, d in reqs} - {BolusDecision.GRANTED})]
    for row, decision in enumerate(decisions):
        ts = [t / DAY_S for t, d in reqs if d is decision]
        marker, colour = ("^", "#2ca02c") if decision is BolusDecision.GRANTED else _DENIAL_STYLE[decision]
        ax_bolus.scatter(ts, [row] * len(ts), marker=marker, color=colour, s=36, zorder=3)
    ax_bolus.set_yticks(range(len(decisions)))
    counts = Counter(d for _, d in reqs)
    ax_bolus.set_yticklabels(
        [f"{'granted' if d is BolusDecision.GRANTED else 'denied: ' + _label(d.name)} ({counts[d]})" for d in decisions]
    )
    ax_bolus.set_ylim(-0.6, len(decisions) - 0.4)
    ax_bolus.invert_yaxis()
    ax_bolus.set_ylabel("patient requests")
    ax_bolus.set_title("Patient bolus requests (PTM presses), by decision (count)", loc="left", fontsize=11)

    # Reservoir: the firmware's estimate against the physical volume, with thresholds.
    if tl.truth:
        ax_res.plot(
            [s.time_s / DAY_S for s in tl.truth],
            [s.reservoir_nl / NL_PER_ML for s in tl.truth],
            color="#000000",
            lw=2.2,
            marker="o" if len(tl.truth) == 1 else None,
            ms=10,
            label="physical volume (ground truth)",
        )
    if tl.status:
        ax_res.plot(
            [s.time_s / DAY_S for s in tl.status],
            [s.reservoir_nl / NL_PER_ML for s in tl.status],
            color="#17becf",
            lw=1.4,
            ls="--",
            marker="s" if len(tl.status) == 1 else None,
            label="firmware estimate (STATUS)",
        )
    th = tl.thresholds
    ax_res.axhline(
        th.low_reservoir_nl / NL_PER_ML,
        color="#fb8c00",
        ls=":",
        lw=1.6,
        label=f"low-reservoir alarm level ({th.low_reservoir_nl / NL_PER_ML:g} mL)",
    )
    ax_res.axhline(
        th.empty_nl / NL_PER_ML,
        color="#e53935",
        ls=":",
        lw=1.6,
        label=f"empty level, delivery stops ({th.empty_nl / NL_PER_ML:g} mL)",
    )
    for i, (t, withdrawn, added) in enumerate(refills(tl.log)):
        ax_res.axvline(t / DAY_S, color="#9467bd", lw=1, ls="-.", label="refill" if i == 0 else None)
        if t > 0:
            ax_res.annotate(
                f"refill: -{withdrawn / NL_PER_ML:.2f} mL, +{added / NL_PER_ML:.0f} mL",
                (t / DAY_S, added / NL_PER_ML),
                xytext=(-8, -4),
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=9,
                color="#9467bd",
            )
    ax_res.set_ylim(0, th.capacity_nl / NL_PER_ML * 1.05)
    ax_res.set_ylabel("reservoir volume (mL)")
    ax_res.set_title("Reservoir: firmware estimate vs physical volume", loc="left", fontsize=11)
    handles, labels = ax_res.get_legend_handles_labels()
    seen: set[str] = set()
    for s in spans:
        name = f"alarm: {_label(getattr(s.alarm, 'name', str(s.alarm)))}"
        if name not in seen:
            seen.add(name)
            handles.append(Patch(color=_PRIORITY_COLOUR.get(s.priority, "#bbbbbb"), alpha=0.35))
            labels.append(name + ("" if s.cleared else " (active)"))
    ax_res.legend(handles, labels, loc="upper left", fontsize=9, framealpha=0.9, ncols=2)

    # The two reservoir lines lie on top of each other at this scale: their difference
    # is what shows the firmware's accounting drifting from the hardware.
    err = _estimate_error_ul(tl.truth, tl.status)
    if err:
        ax_err.plot(
            [t for t, _ in err],
            [e for _, e in err],
            color="#17becf",
            lw=1.4,
            marker="s" if len(err) == 1 else None,
            label="firmware estimate minus physical volume",
        )
        ax_err.legend(loc="best", fontsize=9, framealpha=0.9)
    ax_err.axhline(0, color="#000000", lw=0.8)
    ax_err.set_ylabel("difference (µL)")
    ax_err.set_title("Reservoir estimate error", loc="left", fontsize=11)

    ax_err.set_xlim(0, x_end)
    if days > 2:
        ax_err.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=16))
        ax_err.xaxis.set_minor_locator(MultipleLocator(1))
    ax_err.set_xlabel("simulated time since the pump started (days)")
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _estimate_error_ul(truth: Sequence[TruthSample], status: Sequence[StatusSample]) -> list[tuple[float, float]]:
    """(day, estimate minus physical in uL) where a STATUS and a truth sample were taken
    together. Pairs go in order, not by time: a refill takes two samples at one time."""
    out = []
    j = 0
    for st in status:
        while j < len(truth) and truth[j].time_s < st.time_s:
            j += 1
        if j < len(truth) and truth[j].time_s == st.time_s:
            out.append((st.time_s / DAY_S, (st.reservoir_nl - truth[j].reservoir_nl) / 1000))
            j += 1
    return out


def _daily_delivered_mg(truth: Sequence[TruthSample], end_s: float) -> list[tuple[int, float]]:
    """(day, mg delivered that day) for every whole day the samples cover at both ends."""
    if len(truth) < 2:
        return []
    times = [s.time_s for s in truth]
    out = []
    for day in range(int(end_s // DAY_S)):
        a, b = day * DAY_S, (day + 1) * DAY_S
        if a < times[0] or b > times[-1]:
            continue
        out.append((day, (_interp(truth, b) - _interp(truth, a)) / NG_PER_MG))
    return out


def _interp(truth: Sequence[TruthSample], t: float) -> float:
    times = [s.time_s for s in truth]
    i = bisect.bisect_left(times, t)
    if i < len(times) and times[i] == t:
        return truth[i].delivered_ng
    lo, hi = truth[i - 1], truth[i]
    return lo.delivered_ng + (hi.delivered_ng - lo.delivered_ng) * (t - lo.time_s) / (hi.time_s - lo.time_s)


# ---------------------------------------------------------------- `thecal plot`


def timeline_from_pump(client, empty_nl: int | None = None) -> Timeline:
    """What a running pump can tell: the whole event log and the prescription in force,
    and the reservoir (estimate and, with the sim key, physical) as it is now."""
    from protocol.codes import Role
    from protocol.messages import Hello, ReadPrescription, SimGroundTruth, Status

    hello = client.request(Hello())
    rx = client.request(ReadPrescription(), role=Role.CLINICIAN)
    status = client.request(Status())
    log = read_log(client)
    truth: tuple[TruthSample, ...] = ()
    try:
        gt = client.sim(SimGroundTruth(tones_from=0))
    except Exception:  # noqa: BLE001 - no sim key, or not an emulator: plot what the pump says
        gt = None
    if gt is not None:
        truth = (TruthSample(gt.time_ms / 1000, gt.reservoir_nl, gt.delivered_nl, gt.delivered_ng),)
    return Timeline(
        drug=rx.drug if rx.present else "(no prescription)",
        concentration_ng_per_ml=rx.concentration_ng_per_ml,
        basal=tuple(BasalStep(s.start_s, s.rate_ng_per_day) for s in rx.basal),
        thresholds=Thresholds(
            low_reservoir_nl=rx.low_reservoir_ul * 1000,
            empty_nl=_empty_nl() if empty_nl is None else empty_nl,
            capacity_nl=hello.reservoir_capacity_ul * 1000,
        ),
        end_s=status.time_s,
        log=tuple(log),
        truth=truth,
        status=(StatusSample(status.time_s, status.reservoir_nl, status.basal_rate_ng_per_day, status.state),),
        day_start_s=(status.clock_s - status.time_s) % DAY_S,
        title=f"{hello.serial}: {rx.drug} {rx.concentration_ng_per_ml / NG_PER_MG:g} mg/mL, "
        f"day {status.time_s / DAY_S:.1f} (reservoir history not kept by the pump: now only)",
    )


def _empty_nl() -> int:
    # The empty level is firmware configuration, not on the wire: take the shipped default.
    from firmware.config import FirmwareConfig

    return FirmwareConfig().empty_reservoir_ul * 1000


def read_log(client, from_seq: int = 0, page: int = 32) -> list[LogRecord]:
    """Every event-log entry from from_seq on (LOG_READ, page by page, as clinician)."""
    from protocol.codes import Role
    from protocol.messages import LogRead

    out: list[LogRecord] = []
    seq = from_seq
    while True:
        ack = client.request(LogRead(from_seq=seq, max_entries=page), role=Role.CLINICIAN)
        out.extend(LogRecord(e.seq, e.time_s, e.event, e.arg0, e.arg1) for e in ack.entries)
        if not ack.entries or ack.entries[-1].seq + 1 >= ack.next_seq:
            return out
        seq = ack.entries[-1].seq + 1


def run_plot(args: Any) -> int:
    """`thecal plot [-o FILE] [--from TIMELINE.json]`: render a saved timeline, or what
    the pump on --port / --state-dir can tell. Exit status per the CLI contract (0, 2
    usage, 3 refused, 4 no answer), and 1 when matplotlib is missing."""
    from tools.client import ClientError, NoAnswer, Refused

    output = getattr(args, "output", None) or "therapy.png"
    source = getattr(args, "from_file", None)
    try:
        if source:
            tl = Timeline.load(source)
        else:
            with _connect(args) as client:
                tl = timeline_from_pump(client)
        render_timeline(tl, output)
    except PlotUnavailable as e:
        return _fail(args, str(e), 1, {"plot_unavailable": True})
    except Refused as e:
        return _fail(args, f"refused: {e}", 3, {"refused": True, "reason": e.reason.name.lower()})
    except NoAnswer as e:
        return _fail(args, str(e), 4, {"no_answer": True})
    except (ClientError, OSError, ValueError, KeyError) as e:
        return _fail(args, f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else str(e), 2, {"usage_error": True})
    if getattr(args, "json", False):
        print(json.dumps({"output": str(output), "end_s": tl.end_s, "log_entries": len(tl.log)}))
    else:
        print(f"wrote {output} ({tl.end_s / DAY_S:.1f} days, {len(tl.log)} log entries)")
    return 0


def _fail(args: Any, message: str, code: int, data: dict[str, Any]) -> int:
    print(f"thecal plot: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, **data}))
    return code


def _connect(args: Any):
    import os

    from tools.client import Client, NoAnswer, load_keys

    state_dir = Path(getattr(args, "state_dir", None) or os.environ.get("THECAL_STATE_DIR") or ".thecal")
    port = getattr(args, "port", None)
    if port is None:
        try:
            port = (state_dir / "port").read_text().strip()
        except FileNotFoundError:
            raise NoAnswer(f"no emulator has written {state_dir / 'port'}") from None
    keys_path = Path(getattr(args, "keys", None) or state_dir / "keys.json")
    try:
        keys = load_keys(keys_path)
    except FileNotFoundError:
        raise NoAnswer(f"no keys at {keys_path} (start `thecal emulator --state-dir DIR` or give --keys)") from None
    timeout = getattr(args, "timeout", None)
    return Client(port, keys, timeout_s=timeout) if timeout else Client(port, keys)
