"""The sceptical safety layer: the only code that may let the mechanism run or stop it.

Each rule is a plain function of the facts. A run may start only when every rule holds
for the whole run (a bounded run cannot be recalled if the controller dies mid-way);
every stroke the pump reports is checked again, and any failure stops the run at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunFacts:
    running: bool  # therapy state is running (priming is also allowed when stopped)
    priming: bool
    high_alarm: bool
    reservoir_nl: int
    empty_level_nl: int
    run_volume_nl: int
    window_fg: int  # drug in the last 24 h
    run_drug_fg: int  # drug this run would add (0 for priming)
    max_dose_24h_fg: int


def run_refusal(f: RunFacts) -> str | None:
    """Why a run may not start now, or None if it may."""
    if f.high_alarm:
        return "high-priority alarm"
    if not (f.running or f.priming):
        return "therapy not running"
    if f.reservoir_nl - f.run_volume_nl < f.empty_level_nl:
        return "reservoir at the empty level"
    if f.run_drug_fg and f.window_fg + f.run_drug_fg > f.max_dose_24h_fg:
        return "rolling 24 h hard limit"
    return None


def strokes_within_limit(window_fg: int, stroke_fg: int, max_dose_24h_fg: int, wanted: int) -> int:
    """How many of `wanted` strokes fit under the rolling 24 h hard limit now."""
    if stroke_fg <= 0:
        return wanted
    room = max_dose_24h_fg - window_fg
    return max(0, min(wanted, room // stroke_fg))


def occlusion_confirmed(high_since_ms: int | None, now_ms: int, dwell_ms: int) -> bool:
    """Outlet pressure over the threshold for a whole dwell (a single spike is not one)."""
    return high_since_ms is not None and now_ms - high_since_ms >= dwell_ms


def shortfall(commanded: int, made: int) -> bool:
    """A run that ended with strokes missing (not stopped by us) is a delivery shortfall."""
    return made < commanded
