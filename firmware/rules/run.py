"""Whether the mechanism may run, and keep running (SR-006, SR-009, SR-016, SR-020,
SR-021, SR-039, SR-040, SR-048, SR-053).

The guard (firmware/guard.py) asks this before every MOTOR_RUN, for the whole run: a
bounded run cannot be recalled if the controller dies part-way, so every stroke of it
must be allowed now. It asks again at every stroke the pump reports, and stops the run
at once when an answer changes.
  * Latched-alarm interlock: nothing runs while a high-priority alarm holds therapy
    (SR-020, SR-021, SR-051; which do is rules/recovery.py's): a fault stops flow until a
    person has dealt with it, or, under a resume policy, until its condition is gone.
  * State: basal, patient- and timed-bolus runs only while therapy runs; a priming run
    and a clinician's single bolus also while it is stopped (SR-039, SR-048, SR-053).
  * Mechanism: no run longer than the hardware allows, no strokes closer than its
    minimum interval, also across runs (SR-009).
  * Reservoir: nothing below the empty level (SR-016).
  * Rolling 24 h: every stroke that carries drug to the patient, whatever its purpose,
    fits under the hard limit (SR-006, SR-040).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from protocol.codes import TherapyState

from . import limit24h, reservoir


class Purpose(IntEnum):
    """What a run's strokes are for (the bolus purposes carry BolusKind's values)."""

    BASAL = 0
    PATIENT = 1
    CLINICIAN = 2
    PRIMING = 3
    TIMED = 4  # a timed bolus of the prescription (SR-053): only while therapy runs


class Stop(Enum):
    """Why a run may not start, or must stop."""

    HIGH_ALARM = "a high-priority alarm stands"
    NOT_RUNNING = "therapy is not running"
    MECHANISM = "beyond the mechanism's limits"
    TOO_SOON = "closer to the last stroke than the mechanism's minimum interval"
    RESERVOIR = "the reservoir is at the empty level"
    LIMIT_24H = "the rolling 24 h hard limit"


@dataclass(frozen=True)
class RunFacts:
    purpose: Purpose
    state: TherapyState
    high_alarm: bool
    strokes: int
    interval_ms: int
    max_strokes_per_run: int
    min_interval_ms: int
    now_ms: int
    last_stroke_ms: int | None
    stroke_nl: int
    reservoir_nl: int
    empty_level_nl: int
    window_fg: int  # drug in the rolling 24 h so far
    drug_fg: int  # what the whole run pushes out of the catheter tip
    max_dose_24h_fg: int


def _state_allows(purpose: Purpose, state: TherapyState) -> bool:
    if purpose in (Purpose.PRIMING, Purpose.CLINICIAN):
        return state in (TherapyState.STOPPED, TherapyState.RUNNING)
    return state is TherapyState.RUNNING


def refusal(f: RunFacts) -> Stop | None:
    """Why this run may not start now, or None when every stroke of it may be made."""
    if f.high_alarm:
        return Stop.HIGH_ALARM
    if not _state_allows(f.purpose, f.state):
        return Stop.NOT_RUNNING
    if not 1 <= f.strokes <= f.max_strokes_per_run or f.interval_ms < f.min_interval_ms:
        return Stop.MECHANISM
    if f.last_stroke_ms is not None and f.now_ms < f.last_stroke_ms + f.min_interval_ms:
        return Stop.TOO_SOON
    if not reservoir.holds(f.reservoir_nl, f.strokes * f.stroke_nl, f.empty_level_nl):
        return Stop.RESERVOIR
    if not limit24h.fits(f.window_fg, f.drug_fg, f.max_dose_24h_fg):
        return Stop.LIMIT_24H
    return None


@dataclass(frozen=True)
class StrokeFacts:
    """The run going on, after the strokes the pump just reported were counted."""

    purpose: Purpose
    state: TherapyState
    high_alarm: bool
    made: int
    commanded: int
    reservoir_nl: int
    empty_level_nl: int
    window_fg: int
    max_dose_24h_fg: int


def stroke_refusal(f: StrokeFacts) -> Stop | None:
    """Why a run that is going on must stop now, or None. Admitted whole, a run passes
    this at every stroke unless something changed: an alarm, the therapy state, or more
    strokes than it was admitted for (the mechanism's own count, or the odometer, says so)."""
    if f.high_alarm:
        return Stop.HIGH_ALARM
    if not _state_allows(f.purpose, f.state):
        return Stop.NOT_RUNNING
    if f.made > f.commanded:
        return Stop.MECHANISM
    if f.reservoir_nl < f.empty_level_nl:
        return Stop.RESERVOIR
    if f.window_fg > f.max_dose_24h_fg:
        return Stop.LIMIT_24H
    return None
