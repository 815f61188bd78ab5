"""The reservoir estimate: the last refill volume minus delivery counted from strokes made.

The controller never sees the physical volume; this is its belief, held against the
emulator's ground truth in tests. Low and empty levels, the projected time of the low
alarm, and the refill discrepancy rule live here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import FirmwareConfig


@dataclass(frozen=True)
class RefillResult:
    discrepancy_nl: int  # withdrawn minus expected
    consequential: bool


class Reservoir:
    def __init__(self, capacity_ul: int, volume_nl: int = 0) -> None:
        self.capacity_nl = capacity_ul * 1000
        self.volume_nl = volume_nl

    def delivered(self, nl: int) -> None:
        self.volume_nl = max(0, self.volume_nl - nl)

    def is_low(self, low_ul: int) -> bool:
        return self.volume_nl <= low_ul * 1000

    def is_empty(self, config: FirmwareConfig) -> bool:
        return self.volume_nl <= config.empty_reservoir_ul * 1000

    def discrepancy_limit_nl(self, config: FirmwareConfig) -> int:
        small = self.capacity_nl <= 20_000_000
        return (config.refill_discrepancy_small_ul if small else config.refill_discrepancy_large_ul) * 1000

    def check_overfill(self, withdrawn_nl: int, added_nl: int) -> int | None:
        """The volume the refill would leave, or None if it fits."""
        after = max(0, self.volume_nl - withdrawn_nl) + added_nl
        return after if after > self.capacity_nl else None

    def refill(self, withdrawn_nl: int, added_nl: int, config: FirmwareConfig) -> RefillResult:
        """Withdrawal first (its volume is compared with the estimate), then the fill.
        What was withdrawn is taken as the true residual: the estimate restarts from it."""
        discrepancy = withdrawn_nl - self.volume_nl
        self.volume_nl = added_nl
        return RefillResult(discrepancy, abs(discrepancy) > self.discrepancy_limit_nl(config))
