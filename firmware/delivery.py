"""The delivery engine: credulous bookkeeping of what the mechanism did.

It turns strokes the pump reports as made into volume and dose, tracks the drug in the
outlet and catheter so a refill at a new concentration is accounted at the old one until
the old drug is pushed out (bridging), and holds the bolus in progress. It decides
nothing about safety: firmware/safety.py says whether a run may start or must stop.
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


@dataclass
class ActiveBolus:
    command_id: int
    kind: BolusKind
    dose_ng: int  # 0 for priming
    volume_nl: int  # planned
    duration_s: int
    started_ms: int
    planned_strokes: int
    interval_ms: int
    made: int = 0
    delivered_fg: int = 0
    delivered_nl: int = 0

    @property
    def counts_as_drug(self) -> bool:
        return self.kind is not BolusKind.PRIMING

    def remaining_strokes(self, stroke_fg_at_tip: int) -> int:
        """Strokes still needed: by dose for drug boluses (so bridging is honoured), by
        count for priming."""
        if not self.counts_as_drug:
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


@dataclass
class Run:
    """A bounded motor run the controller commanded."""

    run_id: int
    purpose: str  # "basal" | "bolus"
    strokes: int
    interval_ms: int
    reported: int = 0  # strokes already accounted
    deadline_ms: int = 0  # its last report is overdue after this (pump time)
    bolus_id: int = 0  # command id of the bolus a bolus run serves
