"""Timed boluses: the prescription's daily boluses at fixed times of day (SR-053).

Each timed bolus falls due every day at its time of day, in local time like the basal
schedule. One day's falling due is an occurrence, known by the local time it falls due,
and each is dealt with once: the engine keeps (in NVM) the local time of the latest
occurrence dealt with, and no occurrence at or before it is ever given. So neither a
reset during a timed bolus nor a clock set back gives one twice, and programming, which
moves it to now, starts a schedule at its next time, never at one already past.

At its time an occurrence is
  * not given when therapy is not running (stopped, halted, in a refill): NOT_RUNNING;
  * held while another bolus is in progress, and started as soon as that one ends;
  * missed when its time is more than the grace past (the controller was down, the
    clock was set forward, boluses in progress held it that long): never given late;
  * refused when, with planned basal, the timed boluses still to come in the next 24 h
    and what was delivered, it would take some rolling 24 h over the hard limit
    (DOSE_LIMIT), or when the reservoir does not hold it above the empty level
    (RESERVOIR): not given, and not tried again later, so never a burst;
  * otherwise started: a bolus like any other, every run of which the guard admits
    against the rolling 24 h (SR-040).
Each outcome is logged once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from protocol.codes import TimedBolusOutcome

from ..dose import FG_PER_NG, MS_PER_DAY, strokes_for
from ..prescription import TimedBolus
from . import limit24h, reservoir


@dataclass(frozen=True)
class Occurrence:
    """One timed bolus falling due on one day."""

    index: int  # which timed bolus of the prescription (0 = the first)
    due_local_ms: int


def next_after(timed: Sequence[TimedBolus], after_local_ms: int) -> Occurrence | None:
    """The first occurrence due strictly after after_local_ms (None without timed boluses)."""
    if not timed:
        return None
    day0 = after_local_ms - after_local_ms % MS_PER_DAY
    tod = after_local_ms - day0
    for i, t in enumerate(timed):
        if t.start_s * 1000 > tod:
            return Occurrence(i, day0 + t.start_s * 1000)
    return Occurrence(0, day0 + MS_PER_DAY + timed[0].start_s * 1000)


def occurrences(timed: Sequence[TimedBolus], after_local_ms: int, until_local_ms: int) -> Iterator[Occurrence]:
    """Every occurrence due in (after_local_ms, until_local_ms], in time order."""
    o = next_after(timed, after_local_ms)
    while o is not None and o.due_local_ms <= until_local_ms:
        yield o
        o = next_after(timed, o.due_local_ms)


def first_pending(timed: Sequence[TimedBolus], done_local_ms: int, local_ms: int) -> Occurrence | None:
    """The earliest occurrence due by now and not dealt with. Only the last day is looked
    at: after a longer gap (a clock set days forward) older ones are neither given nor
    logged, which bounds the work and the log entries of one wake-up."""
    return next(occurrences(timed, max(done_local_ms, local_ms - MS_PER_DAY), local_ms), None)


def given_fg(dose_ng: int, stroke_fg: int) -> int:
    """A bolus's drug as the pump gives it, in whole strokes of stroke_fg (nearest), or
    counted in full if it is abandoned: the larger of the two."""
    if stroke_fg <= 0:
        return dose_ng * FG_PER_NG
    return max(dose_ng * FG_PER_NG, strokes_for(dose_ng, stroke_fg) * stroke_fg)


def planned_after(done_local_ms: int, local_ms: int, grace_ms: int) -> int:
    """Occurrences due after this local time are still to be given (or held by a bolus in
    progress, within the grace); those at or before it are dealt with or missed."""
    return max(done_local_ms, local_ms - grace_ms - 1)


def planned_fg(
    timed: Sequence[TimedBolus], after_local_ms: int, local_ms: int, horizon_ms: int, stroke_fg: int
) -> tuple[tuple[int, int], ...]:
    """SR-053: the timed boluses still to come within horizon_ms, as (ms from now, drug in
    fg as given): one held (already due) at 0. For the rolling-24 h projections."""
    return tuple(
        (max(0, o.due_local_ms - local_ms), given_fg(timed[o.index].dose_ng, stroke_fg))
        for o in occurrences(timed, after_local_ms, local_ms + horizon_ms)
    )


def daily_fg(timed: Sequence[TimedBolus], stroke_fg: int) -> tuple[tuple[int, int], ...]:
    """SR-053: each timed bolus as (time of day in ms, drug in fg as given), for the
    low-reservoir projection."""
    return tuple((t.start_s * 1000, given_fg(t.dose_ng, stroke_fg)) for t in timed)


@dataclass(frozen=True)
class TimedFacts:
    late_ms: int  # local time now minus the time it fell due
    grace_ms: int
    running: bool
    high_alarm: bool
    bolus_active: bool
    dose_fg: int  # as it will be given
    window: limit24h.Window  # with the timed boluses still to come after this one
    reservoir_nl: int
    volume_nl: int
    empty_level_nl: int


def decide(f: TimedFacts) -> TimedBolusOutcome | None:
    """What becomes of an occurrence now; None: held until the bolus in progress ends."""
    if not f.running or f.high_alarm:
        return TimedBolusOutcome.NOT_RUNNING
    if f.late_ms > f.grace_ms:
        return TimedBolusOutcome.MISSED
    if f.bolus_active:
        return None
    if limit24h.max_window_with_fg(f.window, f.dose_fg) > f.window.max_dose_24h_fg:
        return TimedBolusOutcome.DOSE_LIMIT
    if not reservoir.holds(f.reservoir_nl, f.volume_nl, f.empty_level_nl):
        return TimedBolusOutcome.RESERVOIR
    return TimedBolusOutcome.STARTED
