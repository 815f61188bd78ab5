"""What the controller knows of the pump hardware it runs on: its fixed figures (HW_INFO)
and its latest battery reading. Filled in by the controller; the parts read it."""

from __future__ import annotations

from protocol.messages import HwInfo

from .prescription import HwLimits


class Hardware:
    def __init__(self) -> None:
        self.info: HwInfo | None = None  # None until HW_INFO has come after a boot
        self.limits: HwLimits | None = None
        self.battery_mv = 0
        self.boot_count = 0  # POWER_ON's: controller starts since manufacture

    def learn(self, info: HwInfo) -> None:
        self.info = info
        self.limits = HwLimits(
            info.stroke_nl,
            info.min_stroke_interval_ms,
            info.reservoir_capacity_ul,
            info.max_strokes_per_run,
            info.min_flow_nl_per_day,
        )
        # Until the first SENSORS: above ERI, so no battery alarm is raised on a guess.
        self.battery_mv = self.battery_mv or info.battery_eri_mv + 1
