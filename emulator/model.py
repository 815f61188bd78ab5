"""The pump model: every hardware figure the emulator uses, overridable from a TOML file.

Defaults come from ../shared/domain.md (SynchroMed II / Prometra II class pumps); where
the figure is our own assumption the comment says so. Keys carry their unit; a file
with an unknown key, a wrong type or a value out of range is refused with the key named.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelError(ValueError):
    """A pump-model file or override is wrong; the message names the key."""


U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
I32_MAX = 0x7FFF_FFFF
WIRE_LIMITS = {
    # HW_INFO fields
    "reservoir_capacity_ul": U32_MAX // 1000,  # also reservoir_nl (u32) in ground truth
    "stroke_nl": U32_MAX,
    "min_stroke_interval_ms": U32_MAX,
    "min_flow_nl_per_day": U32_MAX,
    "watchdog_window_ms": U32_MAX,
    "catheter_dead_volume_nl": U32_MAX,
    "battery_full_mv": U16_MAX,
    "battery_eri_mv": U16_MAX,
    "battery_eos_mv": U16_MAX,
    # SENSORS / ground truth outlet_pressure_pa is i32
    "stall_pressure_pa": I32_MAX,
    "pressure_report_pa": I32_MAX,
    # SIM_REFILL carries a concentration as u32
    "initial_concentration_ng_per_ml": U32_MAX,
}


@dataclass(frozen=True)
class PumpModel:
    serial: str = "THC-000001"
    # Reservoir: 20 mL (SynchroMed II 8637-20); 40 mL is the other size.
    reservoir_capacity_ul: int = 20_000
    # A fresh state directory's pump holds the reference therapy's fill: 12 mL morphine 5 mg/mL.
    initial_fill_ul: int = 12_000
    initial_concentration_ng_per_ml: int = 5_000_000
    # Stroke mechanism: 0.5 uL per stroke (our default model), seeded per-stroke error.
    stroke_nl: int = 500
    stroke_error_sd_ppm: int = 10_000  # 1 % standard deviation per stroke (assumption)
    stroke_bias_ppm: int = 0
    # 1 mL/h at most (domain.md assumption) = 2000 strokes/h = one per 1.8 s.
    min_stroke_interval_ms: int = 1_800
    # The slowest basal the pump delivers accurately: 0.048 mL/day (SynchroMed II). Slower
    # flows (0 included) are refused when programmed: a pump that must not deliver is
    # stopped, and a catheter flowed too slowly can block.
    min_flow_nl_per_day: int = 48_000
    # A dead controller costs at most one run: 64 strokes = 32 uL (assumption).
    max_strokes_per_run: int = 64
    # Hardware watchdog: a controller silent this long has the motor stopped and is reset
    # (assumption: long enough for a tickless controller that sleeps between strokes).
    watchdog_window_ms: int = 300_000
    # Catheter and pump outlet volume the drug must cross before it reaches the patient
    # (assumption: about 0.2 mL for a long intrathecal catheter).
    catheter_dead_volume_nl: int = 200_000
    # Occlusion: each stroke into a blocked catheter adds this much pressure; at
    # stall_pressure_pa the motor can no longer move; once cleared, the held volume vents.
    occlusion_pa_per_nl: int = 40
    stall_pressure_pa: int = 200_000
    pressure_report_pa: int = 50_000  # a SENSORS report is sent when pressure crosses this
    vent_nl_per_s: int = 50
    # Battery: volts fall with charge used (assumption, linear); ERI and EOS per design.
    battery_full_mv: int = 3_600
    battery_eri_mv: int = 3_300
    battery_eos_mv: int = 3_100
    battery_nv_per_stroke: int = 100  # nanovolts lost per stroke
    battery_nv_per_hour: int = 5_000  # nanovolts lost per hour of housekeeping

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ModelError(f"pump model: {f.name} must be an integer, got {value!r}")
            if f.type == "str" and not isinstance(value, str):
                raise ModelError(f"pump model: {f.name} must be a string, got {value!r}")
        positive = (
            "reservoir_capacity_ul",
            "stroke_nl",
            "min_stroke_interval_ms",
            "min_flow_nl_per_day",
            "max_strokes_per_run",
            "watchdog_window_ms",
            "occlusion_pa_per_nl",
            "stall_pressure_pa",
            "vent_nl_per_s",
            "initial_concentration_ng_per_ml",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ModelError(f"pump model: {name} must be > 0, got {getattr(self, name)}")
        non_negative = (
            "initial_fill_ul",
            "stroke_error_sd_ppm",
            "catheter_dead_volume_nl",
            "pressure_report_pa",
            "battery_nv_per_stroke",
            "battery_nv_per_hour",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ModelError(f"pump model: {name} must be >= 0, got {getattr(self, name)}")
        # Figures that travel on the wire (HW_INFO, SENSORS, ground truth) must fit their
        # fields, or the emulator would fail to encode them mid-run.
        for name, limit in WIRE_LIMITS.items():
            if getattr(self, name) > limit:
                raise ModelError(f"pump model: {name} must be at most {limit}, got {getattr(self, name)}")
        if self.initial_fill_ul > self.reservoir_capacity_ul:
            raise ModelError(
                f"pump model: initial_fill_ul {self.initial_fill_ul} exceeds "
                f"reservoir_capacity_ul {self.reservoir_capacity_ul}"
            )
        if self.stroke_error_sd_ppm > 200_000 or abs(self.stroke_bias_ppm) > 500_000:
            raise ModelError("pump model: stroke error beyond 20 % sd or 50 % bias is not a pump")
        if self.max_strokes_per_run > 0xFFFF:
            raise ModelError("pump model: max_strokes_per_run must fit the protocol's u16")
        if not self.battery_full_mv > self.battery_eri_mv > self.battery_eos_mv > 0:
            raise ModelError("pump model: need battery_full_mv > battery_eri_mv > battery_eos_mv > 0")
        if len(self.serial.encode()) > 16:
            raise ModelError("pump model: serial must be at most 16 bytes")

    def with_overrides(self, overrides: dict[str, Any]) -> PumpModel:
        known = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in known:
                raise ModelError(f"pump model: unknown key {key!r} (known: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **overrides)


def load_model(path: str | Path | None) -> PumpModel:
    """The default model, with the keys of a TOML file (flat, or under [pump]) applied."""
    if path is None:
        return PumpModel()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ModelError(f"pump model file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"pump model file {path}: {e}") from None
    if set(data) == {"pump"} and isinstance(data["pump"], dict):
        data = data["pump"]
    return PumpModel().with_overrides(data)
