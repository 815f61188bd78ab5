"""Values the delivery engine (firmware/engine.py) keeps: what the catheter holds, the
bolus in progress, and what the last fill put in the reservoir.

The catheter is tracked so that drug is counted where it reaches the patient, at the
catheter tip: after a refill at a new concentration the old drug is pushed out first
(bridging), and a priming stroke pushes out whatever the catheter held.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from protocol.codes import BolusKind

from .dose import FG_PER_NG


class Catheter:
    """Drug between the pump outlet and the patient, as (nL, ng/mL) segments, tip first."""

    def __init__(self, dead_volume_nl: int, concentration_ng_per_ml: int) -> None:
        self.dead_volume_nl = dead_volume_nl
        self.segments: deque[list[int]] = deque()
        if dead_volume_nl:
            self.segments.append([dead_volume_nl, concentration_ng_per_ml])

    def push(self, nl: int, concentration_ng_per_ml: int) -> int:
        """Push nl in at the reservoir's concentration; return the fg that left the tip."""
        if not self.segments:
            return nl * concentration_ng_per_ml
        last = self.segments[-1]
        if last[1] == concentration_ng_per_ml:
            last[0] += nl
        else:
            self.segments.append([nl, concentration_ng_per_ml])
        out = 0
        need = nl
        while need:
            seg = self.segments[0]
            take = min(need, seg[0])
            out += take * seg[1]
            seg[0] -= take
            need -= take
            if seg[0] == 0:
                self.segments.popleft()
        return out

    def segments_tip_first(self) -> tuple[tuple[int, int], ...]:
        """What the catheter holds, as frozen facts for the guard."""
        return tuple((nl, conc) for nl, conc in self.segments)

    @property
    def tip_concentration(self) -> int:
        return self.segments[0][1] if self.segments else 0

    @property
    def bridging(self) -> bool:
        return len(self.segments) > 1

    def fill(self, concentration_ng_per_ml: int) -> None:
        """After priming: the whole dead volume holds the reservoir's drug."""
        self.segments = deque([[self.dead_volume_nl, concentration_ng_per_ml]]) if self.dead_volume_nl else deque()

    def to_data(self) -> list[list[int]]:
        return [list(s) for s in self.segments]

    def load(self, data: list[list[int]]) -> None:
        self.segments = deque(list(s) for s in data)


@dataclass(frozen=True)
class Fill:
    """What the last fill or refill put in the reservoir, as the clinician entered it: a
    fact about the reservoir that a program can state but not change (SR-041)."""

    drug: str
    concentration_ng_per_ml: int


@dataclass
class ActiveBolus:
    command_id: int
    kind: BolusKind
    dose_ng: int  # for priming: the drug its strokes push out of the tip, as planned
    volume_nl: int  # planned
    duration_s: int
    started_ms: int
    planned_strokes: int
    interval_ms: int
    made: int = 0
    delivered_fg: int = 0
    delivered_nl: int = 0

    def remaining_strokes(self, stroke_fg_at_tip: int) -> int:
        """Strokes still needed: by dose for patient and clinician boluses (so bridging is
        honoured), by volume for priming."""
        if self.kind is BolusKind.PRIMING:
            return max(0, self.planned_strokes - self.made)
        left = self.dose_ng * FG_PER_NG - self.delivered_fg
        if left <= stroke_fg_at_tip // 2 or stroke_fg_at_tip <= 0:
            return 0
        return (left + stroke_fg_at_tip // 2) // stroke_fg_at_tip

    @property
    def end_ms(self) -> int:
        return self.started_ms + self.duration_s * 1000

    def to_data(self) -> list[int]:
        return [
            self.command_id,
            int(self.kind),
            self.dose_ng,
            self.volume_nl,
            self.duration_s,
            self.started_ms,
            self.planned_strokes,
            self.interval_ms,
            self.made,
            self.delivered_fg,
            self.delivered_nl,
        ]

    @staticmethod
    def from_data(d: list[int]) -> ActiveBolus:
        return ActiveBolus(d[0], BolusKind(d[1]), *d[2:])
