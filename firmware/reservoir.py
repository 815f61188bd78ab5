"""The reservoir estimate: the last fill's volume minus the strokes the mechanism reported
made, and what that fill put in (drug and concentration).

The controller never sees the physical volume; this is its belief, held against the
emulator's ground truth in tests. The levels it is judged by are rules
(rules/reservoir.py).
"""

from __future__ import annotations

from .delivery import Fill


class Reservoir:
    def __init__(self, capacity_ul: int, volume_nl: int = 0) -> None:
        self.capacity_nl = capacity_ul * 1000
        self.volume_nl = volume_nl
        self.fill: Fill | None = None  # None until a fill is recorded

    def delivered(self, nl: int) -> None:
        self.volume_nl = max(0, self.volume_nl - nl)

    def refill(self, withdrawn_nl: int, added_nl: int, fill: Fill) -> int:
        """Withdrawal first (its volume is compared with the estimate), then the fill.
        What was withdrawn is taken as the true residual: the estimate restarts from the
        fill. Returns the discrepancy, withdrawn minus expected."""
        discrepancy = withdrawn_nl - self.volume_nl
        self.volume_nl = added_nl
        self.fill = fill
        return discrepancy
