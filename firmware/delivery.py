"""Values the delivery engine (firmware/engine.py) keeps: the bolus in progress, and what
the last fill put in the reservoir. (What the catheter holds: firmware/catheter.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import BolusKind

from .dose import FG_PER_NG


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
