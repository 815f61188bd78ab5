"""Stateful property test: random sequences of host actions against a real rig.

A hypothesis RuleBasedStateMachine drives tools.inprocess.LocalPump (the emulator's Rig
and the real firmware in one process, every request signed and relayed through the
codec) with patient and clinician boluses, programs (valid, invalid ones that must be
refused and change nothing, and valid ones stating another concentration or drug than
the last refill recorded, which must be refused too), start and stop, priming (PRIME
with therapy stopped, any volume, sometimes several an hour apart), refills (begin, the
physical act, complete; withdrawn volume right or wrong, sometimes into the pocket,
sometimes at a new concentration), clock changes, time advances from seconds to days,
injected faults (occlusion, motor stall, battery, stroke-volume error within tolerance),
alarm acknowledgements, power cycles, and the pump hardware restarting from its physical
state of an hour to two days before (its time, odometer and fluid gone back, the
firmware's NVM not). A fresh pump per example.

After every step (docs/campaigns.md, "Stateful property test", says why each is exact):

  * hard limit: ground-truth drug out of the catheter tip in any rolling 24 h stays within
    the hard limit in force plus one stroke, checked at every stroke the mechanism makes
    (priming strokes included), on the real timeline: when the hardware goes back in
    time, later strokes are shifted by all it went back, since the patient does not;
  * lockout: no patient bolus starts inside its lockout (after the previous patient bolus,
    a programming or a refill), nor beyond the allotted count per rolling 24 h, from the
    event log;
  * no delivery while stopped, in refill or halted (at every stroke, and step by step over
    the wire), except the strokes of an accepted PRIME while stopped, no more than its
    volume and only until it ends;
  * reservoir: the firmware's estimate follows the physical volume up to the mechanism's
    own volume error (measured stroke by stroke), from an offset the refill explains
    (not after a restart from older state until the next refill: the fluid went back);
  * event log: sequence numbers strictly increase with no gaps, across resets and
    restarts from older state;
  * after a restart from older state, CLOCK_ERROR stands until acknowledged;
  * a halted pump is held by an alarm (a stall that went, under its recovery policy
    resume, lets it go by itself); a pump with a prescription and a fill that has not run
    for the reminder time, stopped or in a refill, shows the therapy_stopped alarm, and a
    running one never does.

The strokes are seen through the emulated hardware's stroke tap (PumpHardware.add_stroke_tap).
Failing examples are saved in hypothesis' example database (.hypothesis/ by default) and
replayed first on the next run; the report prints the steps as code and a
@reproduce_failure blob.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from emulator.model import PumpModel
from emulator.pump import StrokeEvent
from protocol.codes import (
    AlarmId,
    BeepPattern,
    BolusDecision,
    BolusKind,
    BolusOutcome,
    Fault,
    Link,
    LogEvent,
    NakReason,
    Priority,
    Role,
    TherapyState,
    TimedBolusOutcome,
)
from protocol.messages import (
    AlarmAck,
    BasalStep,
    BolusFinished,
    BolusRequest,
    ClinicianBolus,
    LogRead,
    Message,
    Nak,
    Prime,
    Program,
    ReadPrescription,
    RefillBegin,
    RefillComplete,
    SetClock,
    SimAdvance,
    SimClearFault,
    SimGroundTruth,
    SimInjectFault,
    SimPowerCycle,
    SimRefill,
    Start,
    Status,
    Stop,
    TimedBolus,
)
from protocol.schema import NONE_I32, NONE_U32
from tests.strategies import scaled
from tools.inprocess import LocalPump

MG = 1_000_000  # ng
FG_PER_NG = 1_000_000
ML = 1_000_000  # nL
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
MODEL = PumpModel()
STROKE_NL = MODEL.stroke_nl
CAP_NL = MODEL.reservoir_capacity_ul * 1000
EMPTY_NL = 1_000_000  # firmware/config.py empty_reservoir_ul
DISCREPANCY_NL = 1_000_000  # 20 mL pump: 1 mL
MIN_INTERVAL_MS = MODEL.min_stroke_interval_ms
DEAD_NL = MODEL.catheter_dead_volume_nl
DRUG = "morphine"
MAX_CONC = 20 * MG  # firmware/drugs.toml: morphine
MAX_DAILY = 15 * MG
OTHER_DRUG = "hydromorphone"
DRUG_LIMITS = {DRUG: (MAX_CONC, MAX_DAILY), OTHER_DRUG: (15 * MG, 10 * MG)}  # firmware/drugs.toml
CONCENTRATIONS = (5 * MG, 2 * MG, 10 * MG, 20 * MG)  # the first is the simplest example's
RUNNING_OR_HALTED = (TherapyState.RUNNING, TherapyState.HALTED)
REMINDER_S = 3_600  # firmware/config.py therapy_stopped_alarm_ms: a pump left stopped reminds

LONG = settings.get_current_profile_name() == "long"
EXAMPLES = scaled(20)
STEPS = 150 if LONG else 50
# Per example (PumpCampaign.within_budget): time stops going on once it has made this many
# strokes or bolus requests.
STROKE_BUDGET = 40_000 if LONG else 5_000
PRESS_BUDGET = 3_000 if LONG else 300
# Time before each step: none, minutes, hours or days (see PumpCampaign.wait).
WAIT = st.one_of(
    st.just(0),
    st.sampled_from([HOUR, DAY, 10 * MINUTE]),
    st.integers(1, 10 * MINUTE),
    st.integers(10 * MINUTE, 6 * HOUR),
    st.integers(6 * HOUR, 3 * DAY),
)


# ================================================================ prescriptions


@dataclass(frozen=True)
class Rx:
    """A prescription as the host sends it (wire fields)."""

    concentration: int
    basal: tuple[tuple[int, int], ...]  # (start_s, rate ng/day)
    bolus: tuple[int, int, int, int] | None  # dose ng, duration s, lockout s, max per 24 h
    limit: int
    low_ul: int
    drug: str = DRUG
    timed: tuple[tuple[int, int, int], ...] = ()  # (start_s, dose ng, duration s), a bolus every day

    def message(self, command_id: int) -> Program:
        dose, duration, lockout, most = self.bolus or (0, 0, 0, 0)
        return Program(
            command_id=command_id,
            drug=self.drug,
            concentration_ng_per_ml=self.concentration,
            basal=tuple(BasalStep(start_s=s, rate_ng_per_day=r) for s, r in self.basal),
            bolus_dose_ng=dose,
            bolus_duration_s=duration,
            bolus_lockout_s=lockout,
            bolus_max_per_24h=most,
            max_dose_24h_ng=self.limit,
            low_reservoir_ul=self.low_ul,
            catheter_volume_nl=DEAD_NL,
            timed_bolus=tuple(TimedBolus(start_s=s, dose_ng=d, duration_s=t) for s, d, t in self.timed),
        )

    @property
    def lockout_ms(self) -> int | None:
        return self.bolus[2] * 1000 if self.bolus else None


def daily_basal(basal: tuple[tuple[int, int], ...]) -> Fraction:
    """ng of basal in a day, exactly."""
    ends = [s for s, _ in basal[1:]] + [86_400]
    return sum((Fraction(r * (e - s), 86_400) for (s, r), e in zip(basal, ends, strict=True)), Fraction(0))


def bolus_fits(bolus: tuple[int, int, int, int], conc: int) -> bool:
    """The patient bolus is deliverable at this concentration (firmware/prescription.py's rules)."""
    dose, duration, _, _ = bolus
    nl = dose * ML // conc
    if nl < STROKE_NL:
        return False
    strokes = -(-nl // STROKE_NL)
    return duration * 1000 // strokes >= MIN_INTERVAL_MS


def timed_floor(basal: tuple[tuple[int, int], ...], timed: tuple[tuple[int, int, int], ...], conc: int) -> Fraction:
    """The least hard limit (ng) that takes basal and these timed boluses as the pump
    measures it (firmware/rules/prescription.py, SR-053): basal over 24 h + 1 min, a
    stroke, each bolus as given, and one again with the basal it holds back."""
    stroke_fg = STROKE_NL * conc
    top = max(r for _, r in basal)
    given = [max(d * FG_PER_NG, max(1, (d * FG_PER_NG + stroke_fg // 2) // stroke_fg) * stroke_fg) for _, d, _ in timed]
    again = max(
        (g + Fraction(top * t * FG_PER_NG, 86_400) for g, (_, _, t) in zip(given, timed, strict=True)), default=0
    )
    extra = (stroke_fg + sum(given) + again) / FG_PER_NG if timed else 0
    return daily_basal(basal) + Fraction(top, 1440) + extra


def least_rate(conc: int) -> int:
    """The slowest basal rate (ng/day) the pump takes at a concentration: its minimum flow."""
    return -(-MODEL.min_flow_nl_per_day * conc // ML)


def rx_valid(rx: Rx) -> bool:
    """The rules of firmware/prescription.py that depend on the drug and concentration,
    for a prescription that keeps every other rule (one valid at another concentration)."""
    max_conc, max_daily = DRUG_LIMITS[rx.drug]
    if not 0 < rx.concentration <= max_conc or rx.limit > max_daily or daily_basal(rx.basal) > max_daily:
        return False
    if any(rate * ML * MIN_INTERVAL_MS > STROKE_NL * DAY * rx.concentration for _, rate in rx.basal):
        return False  # more volume a day than the mechanism can move
    if any(rate < least_rate(rx.concentration) for _, rate in rx.basal):
        return False  # less than the pump's minimum flow
    if rx.timed and (
        not all(bolus_fits((d, t, 0, 0), rx.concentration) for _, d, t in rx.timed)
        or timed_floor(rx.basal, rx.timed, rx.concentration) > rx.limit
    ):
        return False
    return rx.bolus is None or bolus_fits(rx.bolus, rx.concentration)


@st.composite
def valid_rx(draw, conc: int) -> Rx:
    """A prescription the firmware must accept, in realistic ranges, with the hard limit
    often only a little above basal so that the limits bite. Each draw lists a typical
    value first: hypothesis starts from (and shrinks to) the first, so the simplest
    example is a therapy that runs, with a patient bolus and a tight limit."""
    n = draw(st.integers(1, 3))
    starts = [0, *sorted(draw(st.sets(st.integers(1, 95).map(lambda q: q * 900), min_size=n - 1, max_size=n - 1)))]
    # Basal up to 1 mL/day (2000 strokes) and 8 mg/day, at least the pump's minimum flow.
    top = min(8 * MG, conc)
    least = least_rate(conc)
    typical = st.sampled_from([MG, 3 * MG // 2, MG // 2, 2 * MG, 3 * MG, MG // 5]).map(
        lambda r: max(least, min(r, top))
    )
    rates = [draw(st.one_of(typical, st.integers(least, top), st.just(least) if i else typical)) for i in range(n)]
    basal = tuple(zip(starts, rates, strict=True))
    floor = int(daily_basal(basal) + Fraction(max(rates), 1440)) + 1  # basal fits the 24 h + 1 min window
    bolus = None
    if draw(st.integers(0, 9)) < 9:
        stroke_ng = STROKE_NL * conc // ML
        most = max(stroke_ng, min(2 * MG, conc // 2))  # up to 0.5 mL
        dose = draw(st.one_of(st.sampled_from([MG // 10, MG // 20, MG // 4, MG // 2]), st.integers(stroke_ng, most)))
        dose = min(max(dose, stroke_ng), most)
        strokes = -(-(dose * ML // conc) // STROKE_NL)
        fastest = max(60, -(-strokes * MIN_INTERVAL_MS // 1000))
        duration = max(fastest, draw(st.one_of(st.sampled_from([600, 300, 1_800]), st.integers(60, 3_600))))
        lockout = draw(st.one_of(st.sampled_from([3_600, 7_200, 900, 14_400]), st.integers(900, 86_400)))
        most_24h = draw(st.one_of(st.sampled_from([6, 4, 12, 2]), st.integers(1, 48)))
        bolus = (dose, duration, max(lockout, duration), most_24h)
    # Timed boluses in a quarter of them: on whole hours, so none overlaps the next.
    timed: tuple[tuple[int, int, int], ...] = ()
    if draw(st.integers(0, 3)) == 0:
        hours = sorted(draw(st.sets(st.integers(0, 23), min_size=1, max_size=3)))
        stroke_ng = STROKE_NL * conc // ML
        most = max(stroke_ng, min(MG, conc // 4))  # up to 0.25 mL
        for h in hours:
            dose = draw(st.one_of(st.sampled_from([MG // 4, MG // 10, MG // 2]), st.integers(stroke_ng, most)))
            dose = min(max(dose, stroke_ng), most)
            strokes = -(-(dose * ML // conc) // STROKE_NL)
            fastest = max(60, -(-strokes * MIN_INTERVAL_MS // 1000))
            duration = max(fastest, draw(st.sampled_from([900, 600, 1_800, 3_600])))
            timed += ((h * 3_600, dose, duration),)
        if timed_floor(basal, timed, conc) >= MAX_DAILY:
            timed = ()  # (more than the drug's daily maximum allows a hard limit of)
        floor = max(floor, int(timed_floor(basal, timed, conc)) + 1)
    room = draw(st.sampled_from([2, 1, 0, Fraction(1, 2), 3, 6, 20]))  # in boluses above basal
    limit = floor + int(room * (bolus[0] if bolus else MG // 2))
    limit = min(MAX_DAILY, max(limit, bolus[0] if bolus else 0))
    low_ul = draw(st.one_of(st.sampled_from([2_000, 3_000, 4_000]), st.integers(1_001, 19_999)))
    return Rx(conc, basal, bolus, limit, low_ul, timed=timed)


def invalid_variants(rx: Rx) -> list[tuple[str, Rx]]:
    """One rule broken each, with the field the refusal must name."""
    b = rx.bolus or (min(MG // 10, rx.limit), 600, 3_600, 4)
    one = STROKE_NL * rx.concentration // ML  # a timed bolus of one stroke
    out = [
        ("drug", replace(rx, drug="aspirin")),
        ("concentration_ng_per_ml", replace(rx, concentration=0)),
        ("concentration_ng_per_ml", replace(rx, concentration=MAX_CONC + 1)),
        ("basal", replace(rx, basal=())),
        ("basal[0].start_s", replace(rx, basal=((60, rx.basal[0][1]), *rx.basal[1:]))),
        ("basal[1].start_s", replace(rx, basal=(rx.basal[0], (0, rx.basal[0][1])))),
        ("basal[1].start_s", replace(rx, basal=(rx.basal[0], (86_400, rx.basal[0][1])))),
        ("basal[0].rate_ng_per_day", replace(rx, basal=((0, rx.concentration * 25),))),  # 25 mL/day
        # Below the pump's minimum flow (0.048 mL/day), and nothing at all.
        ("basal[0].rate_ng_per_day", replace(rx, basal=((0, least_rate(rx.concentration) - 1), *rx.basal[1:]))),
        ("basal[0].rate_ng_per_day", replace(rx, basal=((0, 0), *rx.basal[1:]))),
        ("basal", replace(rx, basal=((0, MAX_DAILY + 1),), limit=MAX_DAILY)),
        ("max_dose_24h_ng", replace(rx, limit=MAX_DAILY + 1)),
        ("basal", replace(rx, limit=max(1, int(daily_basal(rx.basal)) // 2))),
        ("low_reservoir_ul", replace(rx, low_ul=1_000)),
        ("low_reservoir_ul", replace(rx, low_ul=CAP_NL // 1000)),
        ("bolus_dose_ng", replace(rx, bolus=(rx.limit + 1, *b[1:]))),
        ("bolus_dose_ng", replace(rx, bolus=(0, *b[1:]))),
        ("bolus_dose_ng", replace(rx, bolus=(STROKE_NL * rx.concentration // ML - 1, *b[1:]))),
        ("bolus_duration_s", replace(rx, bolus=(b[0], 59, *b[2:]))),
        ("bolus_duration_s", replace(rx, bolus=(b[0], 3_601, *b[2:]))),
        ("bolus_lockout_s", replace(rx, bolus=(*b[:2], 899, b[3]))),
        ("bolus_lockout_s", replace(rx, bolus=(*b[:2], 86_401, b[3]))),
        ("bolus_max_per_24h", replace(rx, bolus=(*b[:3], 0))),
        ("bolus_max_per_24h", replace(rx, bolus=(*b[:3], 49))),
        ("timed_bolus[0].dose_ng", replace(rx, timed=((8 * 3_600, 0, 600),))),
        ("timed_bolus[1].start_s", replace(rx, timed=((3_600, one, 3_600), (5_400, one, 600)))),
    ]
    if rx.bolus is not None and rx.bolus[1] > 900:
        out.append(("bolus_lockout_s", replace(rx, bolus=(*b[:2], b[1] - 1, b[3]))))
    if b[0] * ML // rx.concentration >= 40 * STROKE_NL and b[0] <= rx.limit:
        out.append(("bolus_duration_s", replace(rx, bolus=(b[0], 60, max(900, b[2]), b[3]))))  # too fast
    return out


# ================================================================ the ground truth, stroke by stroke


@dataclass
class StrokeRecord:
    t_ms: int  # on the real timeline (pump time plus what the hardware went back, see PumpCampaign.back_ms)
    moved_nl: int  # left the reservoir
    fg: int  # drug out of the catheter tip (or held behind an occlusion), from this stroke
    nominal_fg: int  # the same had the stroke been exactly nominal (see Tracer)
    state: TherapyState  # the firmware's therapy state when the mechanism made it
    limit_ng: int  # hard limit in force
    priming: bool = False  # made while stopped, as a stroke of an accepted PRIME (see Priming)


class Tracer:
    """Records every stroke the emulated mechanism makes, as it makes it (the hardware's
    stroke tap).

    `fg` is what left the catheter tip, counting drug held behind an occlusion as out
    (it vents when the occlusion clears; the firmware counted it at the stroke). The
    mechanism's volume error is physical and invisible to the firmware, which counts
    nominal strokes: `nominal_fg` is what the same stroke would have pushed out of an
    exactly nominal mechanism (plug flow through the dead volume, the reservoir's drug
    entering), so the hard limit is checked against min(fg, nominal_fg): what the
    firmware could have known."""

    def __init__(self, machine: PumpCampaign) -> None:
        self.machine = machine
        self.records: list[StrokeRecord] = []
        self.nominal: deque[list[int]] = deque()
        m = machine.pump.rig.hw.model
        if m.catheter_dead_volume_nl:
            self.nominal.append([m.catheter_dead_volume_nl, m.initial_concentration_ng_per_ml])
        # LocalPump.restart_from carries the tap over to the restarted hardware.
        machine.pump.rig.hw.add_stroke_tap(self.on_stroke)

    def on_stroke(self, e: StrokeEvent) -> None:
        if not e.made:
            return
        machine = self.machine
        state = machine.pump.controller.parts.supervisor.state
        self.records.append(
            StrokeRecord(
                t_ms=e.time_ms + machine.back_ms,
                moved_nl=e.moved_nl,
                fg=e.delivered_fg + e.held_fg,
                nominal_fg=self._push_nominal(e.reservoir_fg_per_nl),
                state=state,
                limit_ng=machine.limit_ng,
                priming=state is TherapyState.STOPPED and machine.priming_stroke(),
            )
        )

    def _push_nominal(self, conc: int) -> int:
        segs = self.nominal
        if not segs:
            return STROKE_NL * conc
        if segs[-1][1] == conc:
            segs[-1][0] += STROKE_NL
        else:
            segs.append([STROKE_NL, conc])
        out, need = 0, STROKE_NL
        while need:
            seg = segs[0]
            take = min(need, seg[0])
            out += take * seg[1]
            seg[0] -= take
            need -= take
            if seg[0] == 0:
                segs.popleft()
        return out


# ================================================================ campaign figures


@dataclass
class Figures:
    examples: int = 0
    steps: int = 0
    sim_ms: int = 0
    state_ms: dict[str, int] = field(default_factory=dict)  # simulated time by therapy state
    strokes: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    alarms: dict[str, int] = field(default_factory=dict)
    refusals: int = 0
    worst_window_ratio: float = 0.0  # largest rolling-24 h ground truth / hard limit seen
    worst_raw_ratio: float = 0.0  # the same with the mechanism's own volume error left in
    worst_excess_ng: float = float("-inf")  # largest rolling-24 h count minus the hard limit
    limit_bound_windows: int = 0  # strokes made with the window within one stroke of the limit

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


FIGURES = Figures()


# ================================================================ the machine


def _holding(st_ack) -> bool:
    """A high alarm holds therapy halted (firmware/rules/recovery.py), as STATUS shows it:
    its condition present, or gone without the reset its policy asks for. A motor stall
    that cleared (policy resume) is latched until acknowledged and holds nothing."""
    return any(a.priority is Priority.HIGH and (a.condition_present or a.needs_reset) for a in st_ack.alarms)


def _recovered(before, after) -> bool:
    """A halted pump came back by itself (recovery policy resume, SR-051): what halted it
    has gone (a stall the hardware no longer has), nothing holds it, and the alarm that
    halted it is still latched, its condition gone."""
    gone = any(a.priority is Priority.HIGH and not a.condition_present and not a.needs_reset for a in after.alarms)
    return before.state is TherapyState.HALTED and not _holding(after) and gone


@dataclass
class Refill:
    expected_nl: int  # what REFILL_BEGIN said the controller expects withdrawn
    withdrawn_nl: int | None = None  # physical act done: what was withdrawn
    added_nl: int = 0
    concentration: int = 0


@dataclass
class Priming:
    """An accepted PRIME or single bolus (a clinician bolus while stopped), from its
    answer to its end (BOLUS_FINISHED, or a start, stop, refill or reset): the only time
    the mechanism may move with therapy stopped."""

    command_id: int
    strokes: int  # planned: the volume in whole strokes, rounded up
    left: int  # strokes it may still make


@dataclass(frozen=True)
class Snapshot:
    """The pump hardware's physical state at a step, to restart it from later."""

    state: dict  # LocalPump.rig.state()
    faults: tuple[tuple[Fault, int], ...]  # the faults injected then (they are physical)

    @property
    def time_ms(self) -> int:
        return self.state["time_ms"]


class PumpCampaign(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pump: LocalPump | None = None
        self.limit_ng = 0

    # ------------------------------------------------------------ plumbing

    def next_id(self) -> int:
        self.command_id += 1
        return self.command_id

    def req(self, msg: Message, role: Role = Role.CLINICIAN) -> Message:
        reply = self.pump.request(msg, role)
        if isinstance(reply, Nak):
            FIGURES.refusals += 1
        return reply

    def sim(self, msg: Message) -> Message:
        reply = self.pump.request(msg, Role.SIM)
        assert not isinstance(reply, Nak), reply
        return reply

    def status(self):
        self.st = self.req(Status())
        return self.st

    def truth(self):
        return self.sim(SimGroundTruth(tones_from=0))

    @property
    def now_ms(self) -> int:
        """Real time: the pump's time plus all it went back at restarts from older state.
        The patient's body does not go back in time, so every time the model keeps
        (lockouts, bolus starts, the rolling 24 h of the trace) is on this timeline."""
        return self.pump.rig.now_ms + self.back_ms

    def wait(self, ms: int) -> None:
        """Time passes before a step: up to days while running; a stopped or halted pump
        waits hours at most for its clinician, a refill takes minutes."""
        left = min(ms, {TherapyState.RUNNING: ms, TherapyState.REFILL: 30 * MINUTE}.get(self.st.state, 6 * HOUR))
        while left > 0 and self.within_budget():  # in 6 h steps, so the budget is not overrun by days
            step = min(left, 6 * HOUR)
            self.advance_ms(step)
            left -= step

    def within_budget(self) -> bool:
        """Time goes on while the example has made fewer strokes than STROKE_BUDGET and
        asked for fewer patient boluses than PRESS_BUDGET: they cost the run time (a third
        of a millisecond a stroke, 3 ms a bolus request that reaches the 24 h projection)."""
        return len(self.trace.records) < STROKE_BUDGET and self.presses < PRESS_BUDGET

    def advance_ms(self, ms: int) -> None:
        self.sim(SimAdvance(duration_ms=ms))

    def expect_nak(self, reply: Message, reason: NakReason, field: str | None = None) -> None:
        assert isinstance(reply, Nak), f"expected a {reason.name} refusal, got {reply}"
        assert reply.reason is reason, reply
        if field is not None:
            assert reply.field == field, reply

    def unchanged(self, before, what: str) -> None:
        """A refusal changed nothing the host can see."""
        after = self.req(Status())
        keep = ("state", "drug", "concentration_ng_per_ml", "reservoir_nl", "lockout_remaining_s", "last_command_id")
        for k in (*keep, "max_dose_24h_ng", "max_boluses_24h", "bolus_active"):
            assert getattr(after, k) == getattr(before, k), f"refused {what} changed {k}: {before} -> {after}"
        assert self.req(ReadPrescription()) == self.rx_read, f"refused {what} changed the prescription"

    # ------------------------------------------------------------ set-up

    @initialize(
        sd_ppm=st.sampled_from([0, 10_000]),
        seed=st.integers(0, 2**16),
        conc=st.sampled_from(CONCENTRATIONS),
        fill_ul=st.integers(3_000, 20_000),
        data=st.data(),
    )
    def setup(self, sd_ppm: int, seed: int, conc: int, fill_ul: int, data) -> None:
        model = replace(
            MODEL, stroke_error_sd_ppm=sd_ppm, initial_fill_ul=fill_ul, initial_concentration_ng_per_ml=conc
        )
        self.pump = LocalPump(model, seed=seed)
        self.command_id = 0
        self.rx: Rx | None = None
        self.conc = conc  # what the reservoir physically holds
        self.lockout_until_ms = 0  # the model's: patient bolus starts, programming, refills
        self.patient_starts: list[int] = []  # ms
        self.requests: dict[int, tuple[int, Rx]] = {}  # patient bolus command id -> (ms, rx in force)
        # (what, command id, pump ms, lockout ms it sets) of each PROGRAM and REFILL_COMPLETE
        # sent, in order, to be matched with the log's entries
        self.lockout_events: deque[tuple[str, int, int | None, int | None]] = deque()
        self.refusals_unlogged = 0  # refused programs the log left out (counted in summaries)
        self.refusals_summarised = 0
        self.log_next = 1
        self.log_lockout_ms = 0
        self.log_starts: list[int] = []
        self.refill: Refill | None = None
        self.presses = 0
        self.faults: dict[Fault, int] = {}
        self.back_ms = 0  # how far the pump's time has gone back in all (restart_older)
        self.priming: Priming | None = None
        # Controller time (s) therapy last stopped running, from the log (None while it runs).
        self.not_running_since_s: int | None = None
        self.prime_ids: set[int] = set()  # command ids of the PRIMEs accepted
        self.primed_in_step = 0  # priming strokes checked since the last step
        self.snapshots: deque[Snapshot] = deque(maxlen=16)
        self.reservoir_exact = True  # False from a restart from older state to the next refill
        self.recorded_conc = conc  # at the last REFILL_COMPLETE accepted
        self.clock_error_due = False  # the hardware went back: CLOCK_ERROR until we acknowledge it
        self.log_clock_back: list[int] = []  # CLOCK_WENT_BACK entries' arg0 (s), read from the log
        self.trace = Tracer(self)
        self.seen = 0  # trace records checked
        self.window: deque[tuple[int, int, int]] = deque()  # (t, fg counted, raw fg)
        self.window_fg = self.window_raw = 0
        self.max_conc = conc
        self.offset_nl = 0  # firmware estimate minus physical, as the last refill left it
        self.drift_nl = 0  # sum of (moved - nominal) since
        self.prev: tuple | None = None
        FIGURES.examples += 1
        # The pump was filled at implant: record the fill, program, start.
        self.rx_read = self.req(ReadPrescription())
        self._begin()
        self.refill = replace(self.refill, withdrawn_nl=0, added_nl=fill_ul * 1000, concentration=conc)
        self._complete(0, self.refill.added_nl, conc)
        self._program(data.draw(valid_rx(conc)))
        if data.draw(st.integers(0, 9)) < 9:
            self.start()

    def teardown(self) -> None:
        if self.pump is not None:
            self.pump.close()

    # ------------------------------------------------------------ therapy commands

    def _program(self, rx: Rx) -> None:
        before = self.status()
        cid = self.next_id()
        reply = self.req(rx.message(cid))
        if before.state is TherapyState.REFILL or before.bolus_active:
            self.expect_nak(reply, NakReason.WRONG_STATE)
            self.unchanged(before, "PROGRAM")
            self.lockout_events.append(("refused", cid, None, None))
            return
        assert not isinstance(reply, Nak), f"valid prescription refused: {reply} for {rx}"
        self.rx = rx
        self.limit_ng = rx.limit
        self.rx_read = self.req(ReadPrescription())
        if rx.bolus is not None:
            self.lockout_until_ms = max(self.lockout_until_ms, self.now_ms + rx.lockout_ms)
        self.lockout_events.append(("program", cid, self.now_ms, rx.lockout_ms))

    @rule(wait=WAIT, data=st.data())
    def program_valid(self, wait: int, data) -> None:
        self.wait(wait)
        self._program(data.draw(valid_rx(self.rx.concentration)))

    @rule(wait=WAIT, data=st.data())
    def program_other_concentration(self, wait: int, data) -> None:
        """A prescription valid in itself that states another concentration (or drug)
        than the last refill recorded: the reservoir's content is a fact of the refill, a
        program may only state it, so it is refused and changes nothing. Dosing by the
        stated figure would be off by their ratio: the same mg/day at 1 mg/mL against a
        5 mg/mL reservoir pumps five times the dose."""
        self.wait(wait)
        recorded = self.recorded_conc
        others = [c for c in (MG, *CONCENTRATIONS) if c != recorded]
        # The prescription in force at another concentration (the same doses), or under
        # another drug, where that is valid in itself; else one drawn at the other one.
        same = [("concentration_ng_per_ml", replace(self.rx, concentration=c)) for c in others]
        same.append(("drug", replace(self.rx, drug=OTHER_DRUG)))
        same = [(f, rx) for f, rx in same if rx_valid(rx)]
        if same and data.draw(st.booleans()):
            field_name, rx = data.draw(st.sampled_from(same))
        else:
            field_name, rx = "concentration_ng_per_ml", data.draw(valid_rx(data.draw(st.sampled_from(others))))
        before = self.status()
        cid = self.next_id()
        reply = self.req(rx.message(cid))
        if field_name == "drug" and before.state is TherapyState.STOPPED and not before.bolus_active:
            self._change_drug(rx, cid, reply)
            return
        if before.state is TherapyState.REFILL or before.bolus_active:
            self.expect_nak(reply, NakReason.WRONG_STATE)
        else:
            assert isinstance(reply, Nak), (
                f"PROGRAM stating {rx.drug} at {rx.concentration} ng/mL accepted; the last refill recorded "
                f"{DRUG} at {recorded} ng/mL"
            )
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, field_name)
        self.lockout_events.append(("refused", cid, None, None))
        self.unchanged(before, "PROGRAM at another concentration")
        FIGURES.count(FIGURES.actions, "program other concentration")

    def _change_drug(self, rx: Rx, cid: int, reply: Message) -> None:
        """Another drug, programmed with therapy stopped: how a clinician changes drugs. It
        is taken, but nothing may move the reservoir's drug by it: START and PRIME are
        refused until a refill records the new drug. (The model has no second drug to fill:
        the prescription in force is programmed again.)"""
        assert not isinstance(reply, Nak), f"another drug refused with therapy stopped: {reply}"
        if rx.bolus is not None:
            self.lockout_until_ms = max(self.lockout_until_ms, self.now_ms + rx.lockout_ms)
        self.lockout_events.append(("program", cid, self.now_ms, rx.lockout_ms))
        made = len(self.trace.records)
        for msg in (Start(command_id=self.next_id()), Prime(command_id=self.next_id(), volume_nl=STROKE_NL)):
            refused = self.req(msg)
            self.expect_nak(refused, NakReason.WRONG_STATE)
            assert "reservoir holds" in refused.detail, refused
        self.advance_ms(MINUTE)
        assert len(self.trace.records) == made, "a stroke with another drug programmed than the reservoir holds"
        self._program(self.rx)
        FIGURES.count(FIGURES.actions, "program another drug while stopped")

    def start(self) -> None:
        before = self.status()
        reply = self.req(Start(command_id=self.next_id()))
        room = before.reservoir_nl >= EMPTY_NL + STROKE_NL
        ok = before.state is TherapyState.STOPPED and not _holding(before) and room
        if ok and before.bolus_active and isinstance(reply, Nak):
            ok = False  # (a priming in progress, the one bolus of a stopped pump: START may wait for it)
        if ok:
            assert not isinstance(reply, Nak) and reply.state is TherapyState.RUNNING, reply
            self.priming = None  # running, every stroke is allowed; stopped again, none of it
        else:
            self.expect_nak(reply, NakReason.WRONG_STATE)
            self.unchanged(before, "START")

    def stop(self) -> None:
        before = self.status()
        reply = self.req(Stop(command_id=self.next_id()))
        if before.state in RUNNING_OR_HALTED:
            assert not isinstance(reply, Nak) and reply.state is TherapyState.STOPPED, reply
            self.priming = None
        elif before.state is TherapyState.STOPPED and before.bolus_active and not isinstance(reply, Nak):
            # STOP may interrupt a priming (a stopped pump's only bolus); then it must end.
            assert reply.state is TherapyState.STOPPED and not self.status().bolus_active, reply
            self.priming = None
        else:
            self.expect_nak(reply, NakReason.WRONG_STATE)
            self.unchanged(before, "STOP")

    @rule(wait=WAIT, start=st.booleans())
    def start_or_stop(self, wait: int, start: bool) -> None:
        self.wait(wait)
        self.start() if start else self.stop()

    # ------------------------------------------------------------ boluses

    def _press(self) -> BolusDecision:
        st_ack = self.status()
        rx = self.rx
        now = self.now_ms
        in_window = [t for t in self.patient_starts if now - t < DAY]
        # The cheap rules, in the firmware's order, are predicted exactly.
        if st_ack.state is not TherapyState.RUNNING:
            want = BolusDecision.NOT_RUNNING
        elif rx.bolus is None:
            want = BolusDecision.NO_PATIENT_BOLUS
        elif _holding(st_ack):
            want = BolusDecision.ALARM_ACTIVE
        elif st_ack.bolus_active:
            want = BolusDecision.BOLUS_IN_PROGRESS
        elif now < self.lockout_until_ms:
            want = BolusDecision.LOCKOUT
        elif len(in_window) >= rx.bolus[3]:
            want = BolusDecision.COUNT_LIMIT
        else:
            want = None  # DOSE_LIMIT, RESERVOIR or GRANTED
        if rx.bolus is not None:
            assert st_ack.lockout_remaining_s == max(0, -(-(self.lockout_until_ms - now) // 1000)), (
                st_ack,
                self.lockout_until_ms,
                now,
            )
            assert st_ack.boluses_24h == len(in_window), (st_ack, in_window)
        cid = self.next_id()
        self.presses += 1
        ack = self.req(BolusRequest(command_id=cid), Role.PATIENT)
        assert not isinstance(ack, Nak), ack
        FIGURES.count(FIGURES.decisions, ack.decision.name.lower())
        if want is not None:
            assert ack.decision is want, f"expected {want.name}, got {ack} ({st_ack})"
        else:
            assert ack.decision in (BolusDecision.DOSE_LIMIT, BolusDecision.RESERVOIR, BolusDecision.GRANTED), ack
        if ack.decision is BolusDecision.GRANTED:
            dose = rx.bolus[0]
            assert ack.dose_ng == dose and ack.duration_s == rx.bolus[1], ack
            assert st_ack.reservoir_nl - dose * ML // rx.concentration >= EMPTY_NL
            self.patient_starts.append(now)
            self.requests[cid] = (now, rx)
            self.lockout_until_ms = now + rx.lockout_ms
        return ack.decision

    @rule(wait=WAIT)
    def press(self, wait: int) -> None:
        """The patient presses the button."""
        self.wait(wait)
        self._press()

    @precondition(lambda self: self.st.state is TherapyState.RUNNING and self.within_budget())
    @rule(
        hours=st.one_of(st.sampled_from([24, 48, 12, 72]), st.integers(1, 72)),
        every_min=st.sampled_from([30, 5, 15, 60, 120]),
    )
    def press_often(self, hours: int, every_min: int) -> None:
        """The patient presses every few minutes for hours: the lockout, the count and
        the rolling 24 h limit all come into play."""
        for _ in range(hours * 60 // every_min):
            if not self.within_budget():
                break
            self.advance_ms(every_min * MINUTE)
            self._press()

    @rule(
        wait=WAIT,
        dose=st.one_of(st.integers(1, MG), st.integers(1, 16 * MG)),
        duration=st.one_of(st.integers(60, 3_600), st.integers(0, 4_000)),
    )
    def clinician_bolus(self, wait: int, dose: int, duration: int) -> None:
        self.wait(wait)
        before = self.status()
        rx = self.rx

        def strokes_at(conc: int) -> int:
            return max(1, (dose * FG_PER_NG + STROKE_NL * conc // 2) // (STROKE_NL * conc))

        # The firmware counts strokes at the drug leaving the tip: while bridging, an older
        # concentration than the prescription's, so any the catheter or reservoir holds.
        counts = [strokes_at(c) for c in {rx.concentration, *self._concentrations()} if c]
        too_fast = [duration * 1000 // n < MIN_INTERVAL_MS for n in counts]
        cid = self.next_id()
        reply = self.req(ClinicianBolus(command_id=cid, dose_ng=dose, duration_s=duration))
        stopped = before.state is TherapyState.STOPPED
        if (
            before.state not in (TherapyState.RUNNING, TherapyState.STOPPED)
            or before.bolus_active
            or _holding(before)
            or (stopped and before.reservoir_nl == NONE_U32)
        ):
            self.expect_nak(reply, NakReason.WRONG_STATE)
        elif dose > rx.limit:
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "dose_ng")
        elif not 60 <= duration <= 3_600 or all(too_fast):
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "duration_s")
        elif isinstance(reply, Nak) and any(too_fast) and reply.field == "duration_s":
            self.expect_nak(reply, NakReason.OUT_OF_RANGE)  # too fast at the drug now at the tip
        elif isinstance(reply, Nak):
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "dose_ng")  # the 24 h limit or the reservoir
        else:
            assert reply.volume_nl == dose * ML // rx.concentration, reply
            if stopped:
                # A single bolus (SR-048): its strokes are the only ones a stopped pump
                # may make until it ends, and then the pump is still stopped.
                most = max(counts) + 1  # (a stroke may mix two drugs)
                self.priming = Priming(cid, most, most)
                FIGURES.count(FIGURES.actions, "single bolus")
            else:
                FIGURES.count(FIGURES.actions, "clinician bolus")
            return
        self.unchanged(before, "CLINICIAN_BOLUS")

    # ------------------------------------------------------------ priming

    def priming_stroke(self) -> bool:
        """A stroke made while stopped (the Tracer asks, as it is made): one of an
        accepted PRIME's strokes? Each PRIME allows as many as its volume in strokes."""
        p = self.priming
        if p is None or p.left <= 0:
            return False
        p.left -= 1
        return True

    def _window_fg(self) -> int:
        """Drug counted in the rolling 24 h up to now, (now - 24 h, now], from the trace."""
        self._check_strokes()
        since = self.now_ms - DAY
        return sum(c for t, c, _ in self.window if t > since)

    def _concentrations(self) -> list[int]:
        """Every concentration a stroke could push out of the tip now (ng/mL): the
        catheter's segments, then the reservoir's."""
        return [c for _, c in self.trace.nominal] + [self.conc]

    def _prime(self, volume: int) -> bool | None:
        """PRIME of `volume` nL. Refused exactly when the new firmware must refuse it; and
        never when it plainly fits. None if refused, else whether nothing stands in the
        way of its finishing (no fault, no high alarm, room in the reservoir)."""
        before = self.status()
        gt = self.truth()
        window = self._window_fg()
        strokes = -(-volume // STROKE_NL)
        concs = self._concentrations()
        limit_fg = self.limit_ng * FG_PER_NG
        cid = self.next_id()
        reply = self.req(Prime(command_id=cid, volume_nl=volume))
        what = f"PRIME of {volume} nL"
        if before.state is not TherapyState.STOPPED or before.bolus_active:
            self.expect_nak(reply, NakReason.WRONG_STATE)
        elif not STROKE_NL <= volume <= 2 * DEAD_NL:
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "volume_nl")
        elif window + volume * min(concs) > limit_fg:
            # The priming strokes push drug out of the (primed) catheter's tip.
            assert isinstance(reply, Nak), (
                f"{what} accepted: {window / FG_PER_NG:.0f} ng out in the last 24 h and at least "
                f"{volume * min(concs) / FG_PER_NG:.0f} ng more from it, hard limit {self.limit_ng} ng"
            )
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "volume_nl")
        elif before.reservoir_nl - volume < EMPTY_NL:
            assert isinstance(reply, Nak), f"{what} accepted with {before.reservoir_nl} nL in the reservoir"
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "volume_nl")
        elif isinstance(reply, Nak) and not (_holding(before) and reply.reason is NakReason.WRONG_STATE):
            # (A high alarm standing is not in the spec: refused WRONG_STATE or accepted
            # to no effect, the safety layer allowing no run, are both fair.)
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "volume_nl")
            # Room for it even if the firmware projected a whole day of basal on top.
            rx = self.rx
            basal_fg = (daily_basal(rx.basal) + Fraction(max(r for _, r in rx.basal), 1440)) * FG_PER_NG
            need_fg = (before.dose_24h_ng + 1) * FG_PER_NG + basal_fg + (strokes + 1) * STROKE_NL * max(concs)
            fits = (
                not _holding(before)
                and need_fg <= limit_fg
                and before.reservoir_nl - strokes * STROKE_NL >= EMPTY_NL + STROKE_NL
            )
            assert not fits, f"{what} refused ({reply.detail}) with room for it: {before}"
        if isinstance(reply, Nak):
            self.unchanged(before, "PRIME")
            FIGURES.count(FIGURES.actions, f"prime refused {reply.reason.name.lower()}")
            return None
        self.priming = Priming(cid, strokes, strokes)
        self.prime_ids.add(cid)
        FIGURES.count(FIGURES.actions, "prime")
        return (
            not _holding(before)
            and not {Fault.OCCLUSION, Fault.MOTOR_STALL} & set(self.faults)
            and gt.outlet_pressure_pa == 0
            and before.reservoir_nl - strokes * STROKE_NL >= EMPTY_NL + STROKE_NL
            and gt.reservoir_nl >= strokes * STROKE_NL * 103 // 100
        )

    def _run_priming(self, clear_way: bool) -> None:
        """Time for the priming just accepted to make its strokes. It ends with a
        BOLUS_FINISHED of kind PRIMING; with nothing in its way, completed, every stroke
        made, therapy still stopped."""
        p = self.priming
        self.advance_ms(p.strokes * MIN_INTERVAL_MS + MINUTE)
        done = [e for e in self.pump.events if isinstance(e, BolusFinished) and e.command_id == p.command_id]
        assert all(e.kind is BolusKind.PRIMING for e in done), done
        if not clear_way:
            return
        assert done, f"priming {p.command_id} of {p.strokes} strokes not finished in {p.strokes * MIN_INTERVAL_MS} ms"
        assert done[0].outcome is BolusOutcome.COMPLETED and done[0].delivered_nl == p.strokes * STROKE_NL, done
        assert p.left == 0, f"priming made {p.strokes - p.left} strokes while stopped, {p.strokes} planned"
        after = self.status()
        assert after.state is TherapyState.STOPPED and not after.bolus_active, after
        FIGURES.count(FIGURES.actions, "priming completed")

    # Mostly within [a stroke, twice the dead volume], the range PRIME takes.
    PRIME_VOLUMES = st.one_of(
        st.sampled_from([2 * DEAD_NL, STROKE_NL, DEAD_NL, 10 * STROKE_NL]),
        st.integers(STROKE_NL, 2 * DEAD_NL),
        st.integers(STROKE_NL, 20 * STROKE_NL),
        st.one_of(st.integers(0, STROKE_NL - 1), st.integers(2 * DEAD_NL + 1, 4 * DEAD_NL)),
    )

    @rule(
        wait=WAIT,
        volume=PRIME_VOLUMES,
        times=st.sampled_from([1, 8, 2, 4]),
        stop_first=st.sampled_from([True, False]),
        leave=st.booleans(),
    )
    def prime(self, wait: int, volume: int, times: int, stop_first: bool, leave: bool) -> None:
        """A clinician primes the catheter (therapy stopped first, or not), once or
        several times an hour apart: 8 primes of 0.4 mL at 5 mg/mL an hour apart once
        pushed 16 mg out of the tip against a 3 mg hard limit. The last priming is
        sometimes left running, for the next step to interrupt (start, stop, refill,
        fault, reset)."""
        self.wait(wait)
        if stop_first and self.status().state in RUNNING_OR_HALTED:
            self.stop()
        for i in range(times):
            if i:
                if not self.within_budget():
                    break
                self.advance_ms(HOUR)
            clear_way = self._prime(volume)
            if clear_way is None and self.st.state is not TherapyState.STOPPED:
                break  # (an hour on, it will be refused the same)
            if clear_way is not None and (i < times - 1 or not leave):
                self._run_priming(clear_way)

    # ------------------------------------------------------------ refills

    def _begin(self) -> bool:
        before = self.status()
        reply = self.req(RefillBegin(command_id=self.next_id()))
        if before.state in (TherapyState.STOPPED, TherapyState.RUNNING, TherapyState.HALTED):
            assert not isinstance(reply, Nak), reply
            assert reply.expected_reservoir_nl == before.reservoir_nl, (reply, before)
            self.refill = Refill(reply.expected_reservoir_nl)
            self.priming = None
            self.snapshots.clear()  # older fluid, or another drug, than the refill will record
            return True
        self.expect_nak(reply, NakReason.WRONG_STATE)
        self.unchanged(before, "REFILL_BEGIN")
        return False

    def _physical(self, kind: str, fill_ul: int, part: int, conc: int) -> None:
        """The needle: withdraw everything (or a part, or nothing when the injection goes
        into the pocket), then inject. A new concentration only after withdrawing it all
        into a reservoir that takes it: a mix, or drug in the pocket, at a concentration the
        firmware is not told of defeats any limit it could keep, and is no test of it."""
        phys = self.truth().reservoir_nl
        withdraw = {"full": CAP_NL, "new drug": CAP_NL, "partial": phys * part // 100, "pocket": 0}[kind]
        if kind != "new drug" or not rx_valid(replace(self.rx, concentration=conc)):
            conc = self.conc  # (a concentration the prescription is valid at: basal, bolus, minimum flow)
        add = min(fill_ul * 1000, CAP_NL - (phys - min(withdraw, phys)))
        ack = self.sim(
            SimRefill(withdraw_nl=withdraw, add_nl=add, concentration_ng_per_ml=conc, into_pocket=kind == "pocket")
        )
        self.refill = replace(self.refill, withdrawn_nl=ack.withdrawn_nl, added_nl=add, concentration=conc)
        if kind != "pocket":
            self.conc = conc
            self.max_conc = max(self.max_conc, conc)
        FIGURES.count(FIGURES.actions, f"refill {kind}")

    def _entered(self, entry: str, error_ul: int) -> None:
        """REFILL_COMPLETE with what the clinician enters as withdrawn: the truth, what the
        pump said it expected, or a mistake; or the wrong drug (refused)."""
        r = self.refill
        if entry == "wrong drug":
            self._complete(r.withdrawn_nl, r.added_nl, r.concentration, drug="hydromorphone")
            return
        expected = 0 if r.expected_nl == NONE_U32 else r.expected_nl
        withdrawn = {"true": r.withdrawn_nl, "expected": expected}.get(entry, max(0, r.withdrawn_nl + error_ul * 1000))
        self._complete(withdrawn, r.added_nl, r.concentration)

    REFILL_KINDS = st.sampled_from(["full", "full", "full", "new drug", "new drug", "partial", "pocket"])
    ENTRIES = st.sampled_from(["true", "true", "true", "expected", "wrong", "wrong drug"])

    @precondition(lambda self: self.refill is None)
    @rule(
        wait=WAIT,
        kind=REFILL_KINDS,
        fill_ul=st.integers(2_000, CAP_NL // 1000),
        part=st.integers(0, 100),
        conc=st.sampled_from(CONCENTRATIONS),
        entry=ENTRIES,
        error_ul=st.integers(-3_000, 3_000),
    )
    def refill(self, wait: int, kind: str, fill_ul: int, part: int, conc: int, entry: str, error_ul: int) -> None:
        """A whole refill visit: begin, the needle, complete."""
        self.wait(wait)
        if self._begin():
            self._physical(kind, fill_ul, part, conc)
            self._entered(entry, error_ul)

    @rule(
        wait=WAIT,
        kind=REFILL_KINDS,
        fill_ul=st.integers(2_000, CAP_NL // 1000),
        part=st.integers(0, 100),
        conc=st.sampled_from(CONCENTRATIONS),
        entry=ENTRIES,
        error_ul=st.integers(-3_000, 3_000),
    )
    def refill_step(self, wait: int, kind: str, fill_ul: int, part: int, conc: int, entry: str, error_ul: int) -> None:
        """The same visit a step at a time (begin, needle, complete), so that anything else
        (a power cycle, a fault, days passing) can happen in between."""
        self.wait(wait)
        if self.refill is None:
            self._begin()
        elif self.refill.withdrawn_nl is None:
            self._physical(kind, fill_ul, part, conc)
        else:
            self._entered(entry, error_ul)

    def _complete(self, withdrawn: int, added: int, conc: int, drug: str = DRUG) -> None:
        before = self.status()
        expected = self.refill.expected_nl
        reply = self.req(
            RefillComplete(
                command_id=self.next_id(),
                withdrawn_nl=withdrawn,
                added_nl=added,
                drug=drug,
                concentration_ng_per_ml=conc,
            )
        )
        assert before.state is TherapyState.REFILL, before
        if added > CAP_NL:  # (the withdrawal empties the reservoir: only the fill can overfill it)
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "added_nl")
            self.unchanged(before, "REFILL_COMPLETE")
            return
        if drug != DRUG:
            self.expect_nak(reply, NakReason.OUT_OF_RANGE, "drug")
            self.unchanged(before, "REFILL_COMPLETE")
            return
        assert not isinstance(reply, Nak), reply
        initial = expected == NONE_U32  # the pump's first fill: nothing to compare with
        discrepancy = NONE_I32 if initial else withdrawn - expected
        assert reply.discrepancy_nl == discrepancy and reply.reservoir_nl == added, reply
        after = self.status()
        alarms = {a.alarm for a in after.alarms}
        if added < EMPTY_NL + STROKE_NL:  # not one stroke above the empty level: said at once
            assert after.state is TherapyState.HALTED and AlarmId.EMPTY_RESERVOIR in alarms, after
        elif _holding(after):  # (a fault found during the refill: a stall seen at a reset in it)
            assert after.state in (TherapyState.STOPPED, TherapyState.HALTED), after
        else:
            assert after.state in (TherapyState.RUNNING, TherapyState.STOPPED), after
        if self.rx is not None and added <= self.rx.low_ul * 1000:
            assert AlarmId.LOW_RESERVOIR in alarms, after
        if not initial and abs(withdrawn - expected) > DISCREPANCY_NL:
            assert AlarmId.REFILL_DISCREPANCY in alarms, after
        if withdrawn > CAP_NL:  # more than the reservoir holds: not from it
            assert AlarmId.IMPOSSIBLE_WITHDRAWAL in alarms, after
        self._check_strokes()  # (the drift so far belongs to the old fill)
        self.offset_nl = added - self.truth().reservoir_nl
        self.drift_nl = 0
        self.reservoir_exact = True
        self.recorded_conc = conc
        if self.rx is not None:
            self.rx = replace(self.rx, concentration=conc)
            self.rx_read = self.req(ReadPrescription())
            if self.rx.bolus is not None:
                self.lockout_until_ms = max(self.lockout_until_ms, self.now_ms + self.rx.lockout_ms)
        self.lockout_events.append(("refill", 0, self.now_ms, self.rx.lockout_ms if self.rx else None))
        self.refill = None

    @rule(wait=WAIT, data=st.data())
    def refused_commands(self, wait: int, data) -> None:
        """Commands that must be refused and change nothing: an invalid prescription (one
        rule broken), REFILL_COMPLETE without REFILL_BEGIN, acknowledging an alarm that is
        not active."""
        self.wait(wait)
        what = data.draw(st.sampled_from(["program", "program", "program", "refill", "ack"]))
        before = self.status()
        if what == "program":
            field_name, bad = data.draw(st.sampled_from(invalid_variants(self.rx)))
            cid = self.next_id()
            reply = self.req(bad.message(cid))
            if before.state is TherapyState.REFILL or before.bolus_active:
                self.expect_nak(reply, NakReason.WRONG_STATE)
            else:
                self.expect_nak(reply, NakReason.OUT_OF_RANGE, field_name)
            self.lockout_events.append(("refused", cid, None, None))
        elif what == "refill" and self.refill is None:
            msg = RefillComplete(
                command_id=self.next_id(), withdrawn_nl=0, added_nl=ML, drug=DRUG, concentration_ng_per_ml=self.conc
            )
            self.expect_nak(self.req(msg), NakReason.WRONG_STATE)
        else:
            listed = {a.alarm for a in before.alarms}
            quiet = [a for a in AlarmId if a not in listed]
            self.expect_nak(self.req(AlarmAck(alarm=data.draw(st.sampled_from(quiet)))), NakReason.WRONG_STATE, "alarm")
        self.unchanged(before, what)

    # ------------------------------------------------------------ time, clock, power

    @rule(
        ms=st.one_of(
            st.sampled_from([DAY, HOUR, 3 * DAY, 10 * MINUTE, 7 * DAY]),
            st.integers(1, 10 * MINUTE),
            st.integers(10 * MINUTE, 6 * HOUR),
            st.integers(6 * HOUR, 7 * DAY),
        )
    )
    def advance(self, ms: int) -> None:
        self.wait(ms)

    @rule(wait=WAIT, delta_min=st.integers(-12 * 60, 12 * 60))
    def set_clock(self, wait: int, delta_min: int) -> None:
        self.wait(wait)
        clock = self.status().clock_s + delta_min * 60
        reply = self.req(SetClock(command_id=self.next_id(), clock_s=clock))
        assert not isinstance(reply, Nak) and reply.clock_s == clock, reply

    @rule(wait=WAIT, off_ms=st.one_of(st.just(0), st.integers(1, 10 * MINUTE), st.integers(10 * MINUTE, 6 * HOUR)))
    def power_cycle(self, wait: int, off_ms: int) -> None:
        self.wait(wait)
        before = self.status()
        self.sim(SimPowerCycle(off_ms=off_ms))
        self.priming = None
        after = self.status()
        # It comes back as it was (a bolus in progress is abandoned, never resumed), or
        # halted by a fault it found at boot (a stall while stopped shows only then).
        # Or recovered by itself from a halt whose fault went while it was off (SR-051).
        # (Found: a condition present now that was not before, though its alarm may still
        # have been listed, latched from an earlier stall the pump had recovered from.)
        found = {a.alarm for a in after.alarms if a.priority is Priority.HIGH and a.condition_present} - {
            a.alarm for a in before.alarms if a.condition_present
        }
        assert (
            after.state is before.state or (after.state is TherapyState.HALTED and found) or _recovered(before, after)
        ), (before, after)
        assert not after.bolus_active or self._timed_started_since_boot(), after
        for k in ("reservoir_nl", "drug", "concentration_ng_per_ml", "max_dose_24h_ng", "last_command_id"):
            assert getattr(after, k) == getattr(before, k), (k, before, after)

    def _timed_started_since_boot(self) -> bool:
        """A timed bolus started after the last boot (one due while the controller was down,
        within its grace: a new start, not the bolus the reset abandoned resumed). Reads the
        log without taking it from the invariant's reader."""
        seq, started = self.log_next, False
        while True:
            ack = self.req(LogRead(from_seq=seq, max_entries=32))
            for e in ack.entries:
                if e.event is LogEvent.BOOT:
                    started = False
                elif e.event is LogEvent.TIMED_BOLUS and e.arg1 == TimedBolusOutcome.STARTED:
                    started = True
            if not ack.entries or ack.entries[-1].seq + 1 >= ack.next_seq:
                return started
            seq = ack.entries[-1].seq + 1

    def _restart_choices(self) -> list[Snapshot]:
        now = self.pump.rig.now_ms
        return [s for s in self.snapshots if HOUR <= now - s.time_ms <= 2 * DAY]

    @precondition(lambda self: self.refill is None and self._restart_choices())
    @rule(data=st.data(), observe=st.booleans())
    def restart_older(self, data, observe: bool) -> None:
        """The pump hardware restarts from its physical state of an hour to two days ago
        (LocalPump.restart_from): its time, boot count, odometer, fluid and injected
        faults all go back, the firmware's NVM does not. The firmware must notice
        (CLOCK_ERROR, medium: it does not halt; CLOCK_WENT_BACK logged) and carry on as
        it was, on its own time kept monotonic. The patient's time does not go back: from
        here on the trace puts the strokes on the real timeline (back_ms)."""
        snap = data.draw(st.sampled_from(self._restart_choices()))
        self._check_log()
        before = self.status()
        back = self.pump.rig.now_ms - snap.time_ms
        self._check_strokes()  # the strokes so far, on the timeline as it was
        logged = len(self.log_clock_back)
        self.back_ms += back  # (before the restart: any stroke from then on is on the new timeline)
        self.pump.restart_from(snap.state)
        self.priming = None  # (a reset abandons a bolus in progress)
        self.reservoir_exact = False  # see _check_reservoir
        self.prev = None
        self.faults = dict(snap.faults)
        # (The trace's nominal catheter goes on: it is what the firmware, whose NVM did not
        # go back, can know of the drug at the tip, and the snapshot's catheter holds only
        # the drug of the same fill.)
        self.snapshots = deque((s for s in self.snapshots if s.time_ms < snap.time_ms), maxlen=16)
        FIGURES.count(FIGURES.actions, "restart from older state")
        after = self.status()
        went = f"after the hardware went back {back} ms"
        alarms = {a.alarm: a for a in after.alarms}
        assert AlarmId.CLOCK_ERROR in alarms, f"no CLOCK_ERROR {went}: {after}"
        assert alarms[AlarmId.CLOCK_ERROR].priority is Priority.MEDIUM, after
        self.clock_error_due = True
        # As it was: a running pump keeps running, a bolus in progress abandoned as at any
        # reset; or halted by a high alarm: a fault the older hardware brought back, or one
        # that stood in a stopped pump (an alarm raised then, CLOCK_ERROR too, halts it).
        # Or recovered by itself from a halt whose fault the older hardware does not have.
        as_was = (
            after.state is before.state
            or (after.state is TherapyState.HALTED and _holding(after))
            or _recovered(before, after)
        )
        assert as_was, (went, before, after)
        assert not after.bolus_active or self._timed_started_since_boot(), after
        for k in ("reservoir_nl", "drug", "concentration_ng_per_ml", "max_dose_24h_ng", "last_command_id"):
            assert getattr(after, k) == getattr(before, k), (k, went, before, after)
        # Its time goes on from the last it saw (the STATUS just before), not the pump's:
        # the lockout and the 24 h bolus count stand as they were, and nothing delivered
        # is forgotten (a bolus abandoned at the reset counts in full).
        for k in ("lockout_remaining_s", "boluses_24h"):
            assert getattr(after, k) == getattr(before, k), (k, went, before, after)
        assert after.dose_24h_ng >= before.dose_24h_ng, (went, before, after)
        self._check_log()
        assert len(self.log_clock_back) == logged + 1, f"{len(self.log_clock_back) - logged} CLOCK_WENT_BACK {went}"
        assert abs(self.log_clock_back[-1] - back // 1000) <= 1, (self.log_clock_back[-1], went)
        if observe and after.state is TherapyState.RUNNING and not _holding(after) and self.within_budget():
            self._basal_goes_on(after)

    def _basal_goes_on(self, after) -> None:
        """The hour after a restart from older state: basal at the prescribed rate, not
        paused for the time the pump's clock lost (where neither the hard limit nor the
        reservoir holds it back). A burst is bounded by the hard-limit invariant; no
        tighter bound is asserted, since basal held back before (by the limit, or during
        a bolus the reset abandoned) is rightly paid out after it at the payout pace, and
        how much is owed cannot be seen from here."""
        rates = [r for _, r in self.rx.basal]
        concs = self._concentrations()
        n0 = len(self.trace.records)
        self.advance_ms(HOUR)
        made = len(self.trace.records) - n0
        least = min(rates) * ML // (max(concs) * 24 * STROKE_NL) - 2
        most = -(-max(rates) * ML // (min(concs) * 24 * STROKE_NL)) + 2
        now = self.status()
        window_fg = (after.dose_24h_ng + max(rates) // 12) * FG_PER_NG + 2 * STROKE_NL * max(concs)
        held = (
            _holding(now)
            or now.state is not TherapyState.RUNNING
            or window_fg > self.limit_ng * FG_PER_NG
            or after.reservoir_nl - most * STROKE_NL < EMPTY_NL + STROKE_NL
        )
        assert held or made >= least, f"{made} strokes in the hour after the restart, the basal needs {least + 2}"

    # ------------------------------------------------------------ faults and alarms

    def _inject(self, fault: Fault, value: int = 0) -> None:
        self.sim(SimInjectFault(fault=fault, link=Link.NONE, value=value, rate_ppm=0, seed=0))
        self.faults[fault] = value

    def _clear(self, fault: Fault) -> None:
        self.sim(SimClearFault(fault=fault))
        self.faults.pop(fault, None)

    @rule(
        wait=WAIT,
        fault=st.sampled_from([Fault.OCCLUSION, Fault.MOTOR_STALL, Fault.BATTERY_MV, Fault.STROKE_ERROR]),
        on=st.booleans(),
        mv=st.sampled_from([3_450, 3_250, 3_050]),  # fine, ERI, EOS
        ppm=st.integers(-25_000, 25_000),  # within the +/-2.5 % a real mechanism is held to
    )
    def fault(self, wait: int, fault: Fault, on: bool, mv: int, ppm: int) -> None:
        self.wait(wait)
        if not on:
            self._clear(fault)
        else:
            self._inject(fault, {Fault.BATTERY_MV: mv, Fault.STROKE_ERROR: ppm}.get(fault, 0))
        FIGURES.count(FIGURES.actions, f"{fault.name.lower()} {'on' if on else 'off'}")

    @rule(wait=WAIT, data=st.data())
    def acknowledge(self, wait: int, data) -> None:
        self.wait(wait)
        before = self.status()
        listed = [a.alarm for a in before.alarms]
        if not listed:
            return
        alarm = data.draw(st.sampled_from(listed))
        reply = self.req(AlarmAck(alarm=alarm))
        assert not isinstance(reply, Nak) and reply.alarm is alarm, reply
        if alarm is AlarmId.CLOCK_ERROR:
            self.clock_error_due = False

    @rule(wait=WAIT, start=st.booleans())
    def clinician_visit(self, wait: int, start: bool) -> None:
        """The faults are put right (the stroke error stays: nobody can see it), the held
        volume vents, every alarm is acknowledged, and therapy is (re)started."""
        self.wait(wait)
        for f in [f for f in self.faults if f is not Fault.STROKE_ERROR]:
            self._clear(f)
        self.advance_ms(5 * MINUTE)
        for a in self.status().alarms:
            reply = self.req(AlarmAck(alarm=a.alarm))
            assert not isinstance(reply, Nak), reply
        self.clock_error_due = False
        st_ack = self.status()
        # What still stands is a reservoir at the empty level (by the estimate, or found dry).
        assert {a.alarm for a in st_ack.alarms if a.priority is Priority.HIGH} <= {AlarmId.EMPTY_RESERVOIR}, st_ack
        if st_ack.state is TherapyState.HALTED:
            self.stop()
        if start and self.status().state is TherapyState.STOPPED:
            self.start()

    # ------------------------------------------------------------ invariants

    @invariant()
    def invariants(self) -> None:
        FIGURES.steps += 1
        st_ack = self.status()
        gt = self.truth()
        assert st_ack.state is not TherapyState.BOOT, st_ack
        changes = self._check_log()
        self._check_strokes()
        self._check_reservoir(st_ack, gt)
        if self.clock_error_due:
            assert AlarmId.CLOCK_ERROR in {a.alarm for a in st_ack.alarms}, f"CLOCK_ERROR gone unacknowledged: {st_ack}"
        self._check_halt_and_reminder(st_ack)
        # Step by step over the wire: a step that began and ended stopped, in refill or
        # halted, with no state change in between, delivered nothing (drug held behind an
        # occlusion and venting after it clears was delivered when it was pushed), unless
        # an accepted PRIME made strokes in it (each checked against it by the trace).
        out_nl = gt.delivered_nl + gt.outlet_pressure_pa // MODEL.occlusion_pa_per_nl
        real_ms = gt.time_ms + self.back_ms
        if self.prev is not None:
            state, prev_out, prev_ms = self.prev
            if state is st_ack.state and state is not TherapyState.RUNNING and not changes and not self.primed_in_step:
                assert out_nl == prev_out, f"{out_nl - prev_out} nL delivered while {state.name}"
            FIGURES.sim_ms += real_ms - prev_ms
            key = state.name.lower()
            FIGURES.state_ms[key] = FIGURES.state_ms.get(key, 0) + real_ms - prev_ms
        self.prev = (st_ack.state, out_nl, real_ms)
        self.primed_in_step = 0
        self._snapshot(st_ack)

    def _check_halt_and_reminder(self, st_ack) -> None:
        """SR-051: a halted pump is held by an alarm (one whose fault went by itself, under
        the resume policy, gives it back); SR-050: a pump with a prescription and a fill
        that has not run for the reminder time, stopped or in a refill, reminds, and a
        running one does not. (Time not running also counts across short runs, so the
        reminder may come earlier than the model's count: only this side is exact.)"""
        if st_ack.state is TherapyState.HALTED:
            assert _holding(st_ack), f"halted with nothing holding it: {st_ack}"
        reminder = next((a for a in st_ack.alarms if a.alarm is AlarmId.THERAPY_STOPPED), None)
        left = st_ack.state in (TherapyState.STOPPED, TherapyState.REFILL)
        if st_ack.state is TherapyState.RUNNING:
            assert reminder is None, f"the stopped-pump reminder while running: {st_ack}"
        if reminder is not None and reminder.condition_present:
            assert left and reminder.priority is Priority.LOW, st_ack  # (morphine, hydromorphone: low)
        since = self.not_running_since_s
        if left and since is not None and st_ack.time_s - since > REMINDER_S and st_ack.drug:
            assert reminder is not None and reminder.condition_present, (
                f"not running since {since} s, {st_ack.time_s - since} s ago, and no reminder: {st_ack}"
            )

    def _snapshot(self, st_ack) -> None:
        """Keep the hardware's physical state for restart_older, when restarting from it
        is a fair test: outside a refill, and with the catheter holding only the drug the
        reservoir holds (no bridging). Older fluid at another concentration than the
        firmware was told of defeats any limit it could keep (as drug in the pocket does,
        see _physical), so a refill also drops every snapshot taken before it."""
        if self.refill is not None or st_ack.state is TherapyState.REFILL:
            return
        state = self.pump.rig.state()
        res_nl, res_fg = state["reservoir_nl"], state["reservoir_fg"]
        if res_nl == 0 or res_fg != res_nl * self.recorded_conc:
            return
        if any(fg != nl * self.recorded_conc for nl, fg in state["catheter"]):
            return
        self.snapshots.append(Snapshot(state=state, faults=tuple(self.faults.items())))

    def _check_log(self) -> int:
        """Read the new log entries: numbered on with no gap; patient boluses outside
        their lockout and within their count. Returns the number of state changes."""
        changes = 0
        while True:
            ack = self.req(LogRead(from_seq=self.log_next, max_entries=32))
            assert not isinstance(ack, Nak), ack
            assert ack.oldest_seq <= self.log_next, f"entries {self.log_next}..{ack.oldest_seq - 1} lost unread"
            for e in ack.entries:
                assert e.seq == self.log_next, f"log seq {e.seq} after {self.log_next - 1}"
                self.log_next += 1
                changes += e.event is LogEvent.THERAPY_STATE
                self._log_entry(e)
            assert ack.next_seq >= self.log_next, ack
            if ack.next_seq == self.log_next:
                return changes
            assert ack.entries, f"log page empty below next_seq {ack.next_seq}"

    def _skip_unlogged_refusals(self, until: int | None = None) -> None:
        """Refused programs ahead of this entry that the log left out (over the budget of
        their kind: counted in a later REFUSALS_SUMMARY instead)."""
        q = self.lockout_events
        while q and q[0][0] == "refused" and q[0][1] != until:
            q.popleft()
            self.refusals_unlogged += 1

    def _log_entry(self, e) -> None:
        if e.event is LogEvent.THERAPY_STATE:
            if e.arg1 == TherapyState.RUNNING:
                self.not_running_since_s = None
            elif self.not_running_since_s is None:
                self.not_running_since_s = e.time_s
        if e.event is LogEvent.PROGRAM_ACCEPTED or e.event is LogEvent.REFILL_COMPLETE:
            self._skip_unlogged_refusals()
            kind, cid, at, lockout_ms = self.lockout_events.popleft()
            assert kind == ("program" if e.event is LogEvent.PROGRAM_ACCEPTED else "refill"), (e, kind)
            assert e.event is not LogEvent.PROGRAM_ACCEPTED or e.arg0 == cid, (e, cid)
            if lockout_ms is not None:
                self.log_lockout_ms = max(self.log_lockout_ms, at + lockout_ms)
        elif e.event is LogEvent.PROGRAM_REFUSED:
            self._skip_unlogged_refusals(until=e.arg0)
            kind, cid, _, _ = self.lockout_events.popleft()
            assert kind == "refused" and cid == e.arg0, (e, kind, cid)
        elif e.event is LogEvent.REFUSALS_SUMMARY and e.arg0 == LogEvent.PROGRAM_REFUSED:
            # Refusals beyond the log's budget are counted, not logged one by one (SR-056):
            # never more than were refused and left out.
            self.refusals_summarised += e.arg1
            assert self.refusals_summarised <= self.refusals_unlogged + sum(
                1 for k, *_ in self.lockout_events if k == "refused"
            ), (e, self.refusals_summarised, self.refusals_unlogged)
        elif e.event is LogEvent.ALARM_RAISED:
            FIGURES.count(FIGURES.alarms, AlarmId(e.arg0).name.lower())
        elif e.event is LogEvent.BOLUS_STARTED and e.arg1 == BolusKind.PRIMING:
            assert e.arg0 in self.prime_ids, f"priming {e.arg0} started without an accepted PRIME"
        elif e.event is LogEvent.BOLUS_FINISHED:
            if self.priming is not None and e.arg0 == self.priming.command_id:
                self.priming = None
        elif e.event is LogEvent.CLOCK_WENT_BACK:
            self.log_clock_back.append(e.arg0)
        elif e.event is LogEvent.TIMED_BOLUS:
            FIGURES.count(FIGURES.actions, f"timed bolus {TimedBolusOutcome(e.arg1).name.lower()}")
        elif e.event is LogEvent.BOLUS_STARTED and e.arg1 == BolusKind.PATIENT:
            assert e.arg0 in self.requests, f"patient bolus {e.arg0} started without a granted request"
            t, rx = self.requests.pop(e.arg0)
            assert t >= self.log_lockout_ms, f"patient bolus at {t} ms inside the lockout to {self.log_lockout_ms} ms"
            recent = [s for s in self.log_starts if t - s < DAY]
            assert len(recent) < rx.bolus[3], f"patient bolus {len(recent) + 1} in 24 h, {rx.bolus[3]} allowed"
            self.log_starts.append(t)
            self.log_lockout_ms = t + rx.lockout_ms

    def _check_strokes(self) -> None:
        """Every stroke since the last step: made while running (or as one of an accepted
        PRIME's strokes while stopped), and the rolling 24 h up to it within the hard limit
        in force (plus one stroke at the highest concentration), priming strokes included."""
        recs = self.trace.records
        allowance = STROKE_NL * self.max_conc
        win = self.window
        for r in recs[self.seen :]:
            assert r.state is TherapyState.RUNNING or r.priming, f"a stroke at {r.t_ms} ms while {r.state}"
            self.primed_in_step += r.priming
            counted = min(r.fg, r.nominal_fg)
            win.append((r.t_ms, counted, r.fg))
            self.window_fg += counted
            self.window_raw += r.fg
            while win[0][0] <= r.t_ms - DAY:
                _, c, raw = win.popleft()
                self.window_fg -= c
                self.window_raw -= raw
            limit_fg = r.limit_ng * FG_PER_NG
            assert self.window_fg <= limit_fg + allowance, (
                f"{self.window_fg / FG_PER_NG:.0f} ng in the 24 h to {r.t_ms} ms, hard limit {r.limit_ng} ng"
            )
            FIGURES.worst_window_ratio = max(FIGURES.worst_window_ratio, self.window_fg / limit_fg)
            FIGURES.worst_raw_ratio = max(FIGURES.worst_raw_ratio, self.window_raw / limit_fg)
            FIGURES.worst_excess_ng = max(FIGURES.worst_excess_ng, (self.window_fg - limit_fg) / FG_PER_NG)
            FIGURES.limit_bound_windows += self.window_fg + allowance > limit_fg
            self.drift_nl += r.moved_nl - STROKE_NL
        FIGURES.strokes += len(recs) - self.seen
        self.seen = len(recs)

    def _check_reservoir(self, st_ack, gt) -> None:
        """The estimate moves with the physical volume stroke for stroke, so it stays
        where the last refill left it relative to the physical volume, up to the
        mechanism's volume error (which the trace measures).

        Not after a restart from older state until the next refill: the physical
        reservoir went back (it holds the fluid the strokes since the snapshot took out)
        while the firmware, whose NVM did not go back, rightly counts those strokes as
        gone. Only the next refill, which measures the residual, puts them together again."""
        if st_ack.state is TherapyState.REFILL or not self.reservoir_exact:
            return
        gap = st_ack.reservoir_nl - gt.reservoir_nl
        assert gap == self.offset_nl + self.drift_nl, (
            f"estimate {st_ack.reservoir_nl} nL, physical {gt.reservoir_nl} nL: off by {gap} nL, "
            f"{self.offset_nl} nL from the refill and {self.drift_nl} nL of stroke error"
        )


@pytest.mark.timeout(0 if LONG else 900)  # a failure is shrunk for up to 5 min: let it finish
def test_stateful_campaign():
    """The machine above; figures printed (pytest -s) for docs/campaigns.md."""
    t0 = time.monotonic()
    run_state_machine_as_test(
        PumpCampaign,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        ),
    )
    f = FIGURES
    print(
        f"\nstateful campaign: {f.examples} examples, {f.steps} steps, {f.sim_ms / DAY:.0f} simulated days, "
        f"{f.strokes} strokes, {time.monotonic() - t0:.1f} s; days by state "
        f"{ {k: round(v / DAY, 1) for k, v in sorted(f.state_ms.items())} }; "
        f"worst rolling 24 h {f.worst_window_ratio:.4f} of the hard limit ({f.worst_raw_ratio:.4f} with the "
        f"mechanism's volume error), at most {f.worst_excess_ng:+.0f} ng from it; "
        f"{f.limit_bound_windows} strokes within a stroke of the limit; "
        f"refusals {f.refusals}; "
        f"patient bolus decisions {dict(sorted(f.decisions.items()))}; actions {dict(sorted(f.actions.items()))}; "
        f"alarms raised {dict(sorted(f.alarms.items()))}"
    )


# ================================================================ what the campaign found


def local_pump(fill_nl: int = 12 * ML, conc: int = 5 * MG, **program) -> tuple[LocalPump, list[int]]:
    """An exact in-process pump, its fill recorded and the reference-like prescription
    programmed (not started); returns it and a command id counter."""
    pump = LocalPump(replace(MODEL, stroke_error_sd_ppm=0, initial_fill_ul=fill_nl // 1000))
    ids = [0]

    def ok(msg: Message, role: Role = Role.CLINICIAN) -> Message:
        reply = pump.request(msg, role)
        assert not isinstance(reply, Nak), reply
        return reply

    def nid() -> int:
        ids[0] += 1
        return ids[0]

    ok(RefillBegin(command_id=nid()))
    ok(RefillComplete(command_id=nid(), withdrawn_nl=0, added_nl=fill_nl, drug=DRUG, concentration_ng_per_ml=conc))
    rx = Rx(conc, ((0, MG),), (MG // 10, 600, 3_600, 6), 3 * MG, 2_000)
    ok(replace(rx, **program).message(nid()))
    return pump, ids


def test_bug_a_reset_halted_a_pump_a_clinician_had_stopped():
    """A high alarm halted the running pump; the clinician stopped it while the condition
    still held (battery at end of service). A power cycle brought it back HALTED, not
    STOPPED as it was: the boot chose halted whenever a high alarm stood, whatever the
    saved state (firmware/controller.py _leave_boot)."""
    pump, _ = local_pump()
    assert pump.request(Start(command_id=10)).state is TherapyState.RUNNING
    pump.request(SimInjectFault(fault=Fault.BATTERY_MV, link=Link.NONE, value=3_050, rate_ppm=0, seed=0), Role.SIM)
    st_ack = pump.request(Status())
    assert st_ack.state is TherapyState.HALTED and AlarmId.BATTERY_EOS in {a.alarm for a in st_ack.alarms}
    assert pump.request(Stop(command_id=11)).state is TherapyState.STOPPED
    pump.request(SimPowerCycle(off_ms=1_000), Role.SIM)
    st_ack = pump.request(Status())
    assert st_ack.state is TherapyState.STOPPED, st_ack
    assert AlarmId.BATTERY_EOS in {a.alarm for a in st_ack.alarms}
    # A pump that was running when the reset came still comes back halted.
    pump2, _ = local_pump()
    assert pump2.request(Start(command_id=10)).state is TherapyState.RUNNING
    pump2.request(SimInjectFault(fault=Fault.BATTERY_MV, link=Link.NONE, value=3_050, rate_ppm=0, seed=0), Role.SIM)
    pump2.request(SimPowerCycle(off_ms=1_000), Role.SIM)
    assert pump2.request(Status()).state is TherapyState.HALTED


def test_a_stall_the_older_hardware_does_not_have_ends_the_halt_by_itself():
    """What the campaign found when stall recovery came (issue 12, SR-051): a pump halted
    by a motor stall, whose hardware then restarted from a state before the stall, came
    back running, not halted as the model expected: the stall is gone, and its recovery
    policy (resume) ends the halt by itself. CLOCK_ERROR stands; the stall stays latched,
    its condition gone, until acknowledged."""
    pump, _ = local_pump()
    assert pump.request(Start(command_id=10)).state is TherapyState.RUNNING
    pump.request(SimAdvance(duration_ms=2 * HOUR), Role.SIM)
    older = pump.rig.state()
    pump.request(SimAdvance(duration_ms=HOUR), Role.SIM)
    pump.request(SimInjectFault(fault=Fault.MOTOR_STALL, link=Link.NONE, value=0, rate_ppm=0, seed=0), Role.SIM)
    pump.request(SimAdvance(duration_ms=30 * MINUTE), Role.SIM)
    assert pump.request(Status()).state is TherapyState.HALTED
    pump.restart_from(older)
    pump.request(SimAdvance(duration_ms=2 * MINUTE), Role.SIM)
    st_ack = pump.request(Status())
    alarms = {a.alarm: a for a in st_ack.alarms}
    assert st_ack.state is TherapyState.RUNNING, st_ack
    assert AlarmId.CLOCK_ERROR in alarms
    stall = alarms[AlarmId.MOTOR_STALL]
    assert (stall.condition_present, stall.needs_reset, stall.acknowledged) == (False, False, False)
    assert not _holding(st_ack)


def test_bug_a_refill_below_the_low_level_raised_no_alarm():
    """REFILL_COMPLETE cleared the reservoir alarms and did not look again: a refill that
    left less than the low-reservoir level raised no alarm until the next stroke (hours
    at a low basal rate), and a stopped pump never (firmware/host.py refill_complete)."""
    for start in (True, False):
        pump, _ = local_pump()  # low-reservoir alarm at 2 mL
        if start:
            assert pump.request(Start(command_id=10)).state is TherapyState.RUNNING
        pump.request(RefillBegin(command_id=11))
        pump.request(
            SimRefill(withdraw_nl=CAP_NL, add_nl=3 * ML // 2, concentration_ng_per_ml=5 * MG, into_pocket=False),
            Role.SIM,
        )
        ack = pump.request(
            RefillComplete(
                command_id=12, withdrawn_nl=12 * ML, added_nl=3 * ML // 2, drug=DRUG, concentration_ng_per_ml=5 * MG
            )
        )
        assert ack.reservoir_nl == 3 * ML // 2
        st_ack = pump.request(Status())
        assert st_ack.state is (TherapyState.RUNNING if start else TherapyState.STOPPED)
        assert [a.alarm for a in st_ack.alarms] == [AlarmId.LOW_RESERVOIR], st_ack
        tones = pump.request(SimGroundTruth(tones_from=0), Role.SIM).tones
        assert [t.pattern for t in tones] == [BeepPattern.SINGLE_TONE], tones
    # Recorded at the empty level: the empty alarm (high) at once, and therapy halted.
    pump, _ = local_pump()
    pump.request(RefillBegin(command_id=11))
    pump.request(
        RefillComplete(command_id=12, withdrawn_nl=12 * ML, added_nl=ML, drug=DRUG, concentration_ng_per_ml=5 * MG)
    )
    st_ack = pump.request(Status())
    assert st_ack.state is TherapyState.HALTED and AlarmId.EMPTY_RESERVOIR in {a.alarm for a in st_ack.alarms}


def test_local_pump_restarts_its_hardware_from_older_state():
    """LocalPump.restart_from, which restart_older uses: the hardware (time, boot count,
    odometer, fluid) from the older state, the same NVM (the prescription and the event
    log stay), stroke taps carried over, and sim requests still accepted."""
    pump, _ = local_pump()
    assert pump.request(Start(command_id=50)).state is TherapyState.RUNNING
    pump.request(SimAdvance(duration_ms=HOUR), Role.SIM)
    old = pump.rig.state()
    pump.request(SimAdvance(duration_ms=5 * HOUR), Role.SIM)
    seen: list[StrokeEvent] = []
    pump.rig.hw.add_stroke_tap(seen.append)
    rx = pump.request(ReadPrescription())
    log_next = pump.request(LogRead(from_seq=1, max_entries=1)).next_seq
    odometer = pump.rig.hw.odometer
    pump.restart_from(old)
    hw = pump.rig.hw
    assert (hw.now_ms, hw.odometer, hw.boot_count) == (HOUR, old["odometer_strokes"], old["boot_count"] + 1)
    assert hw.odometer < odometer and hw.fluid.reservoir_nl == old["reservoir_nl"]
    assert [e.what for e in hw.events][-1] == "controller_power_on"
    gt = pump.request(SimGroundTruth(tones_from=0), Role.SIM)
    assert not isinstance(gt, Nak) and gt.time_ms == HOUR and gt.controller_alive
    assert pump.request(ReadPrescription()) == rx
    assert pump.request(LogRead(from_seq=1, max_entries=1)).next_seq > log_next  # (it booted: BOOT logged)
    assert hw.stroke_taps == (seen.append,)
    # The rig's replay window is the one in force, not the older state's.
    assert pump.rig.sim_auth.last_counters[Role.SIM] > old["sim_counter"]
