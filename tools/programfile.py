"""Therapy files: a prescription in TOML, with units, read into a PROGRAM request.

    drug = "morphine"
    concentration = "5 mg/mL"
    low_reservoir_alarm = "2 mL"        # optional, default 2 mL

    [[basal]]                           # 1-24 steps, the first at 00:00, in order
    start = "00:00"
    rate = "1.0 mg/day"

    [patient_bolus]                     # optional: without it, no patient bolus
    dose = "0.1 mg"
    duration = "10min"
    lockout = "2h"
    max_per_24h = 6

    [[timed_bolus]]                     # optional, 0-8: a bolus every day at its time
    start = "08:00"
    dose = "0.25 mg"
    duration = "15min"

    [limits]
    max_dose_24h = "3 mg"

    [catheter]                          # optional: without it, the volume is not entered
    volume = "0.2 mL"                   # from the catheter model and its trimmed length

Every problem is a ProgramFileError naming the field (`basal[1].rate`,
`patient_bolus.lockout`, ...): a missing or unknown key, a wrong type, a unit typo.
Whether the therapy is allowed (drug library, limits, step order) is the pump's to say:
its refusal names the wire field, which `file_field` maps back to the file's name.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol.messages import DRUG_NAME_MAX, MAX_BASAL_STEPS, MAX_TIMED_BOLUSES, BasalStep, Program, TimedBolus

from . import units

DEFAULT_LOW_RESERVOIR_UL = 2_000  # ../shared/domain.md: default residual 2 mL

_TOP = {"drug", "concentration", "low_reservoir_alarm", "basal", "patient_bolus", "timed_bolus", "limits", "catheter"}
_BASAL = {"start", "rate"}
_TIMED = {"start", "dose", "duration"}
_BOLUS = {"dose", "duration", "lockout", "max_per_24h"}
_LIMITS = {"max_dose_24h"}
_CATHETER = {"volume"}

# Wire field (as a NAK names it) -> file field.
_WIRE_TO_FILE = {
    "drug": "drug",
    "concentration_ng_per_ml": "concentration",
    "basal": "basal",
    "bolus_dose_ng": "patient_bolus.dose",
    "bolus_duration_s": "patient_bolus.duration",
    "bolus_lockout_s": "patient_bolus.lockout",
    "bolus_max_per_24h": "patient_bolus.max_per_24h",
    "max_dose_24h_ng": "limits.max_dose_24h",
    "low_reservoir_ul": "low_reservoir_alarm",
    "catheter_volume_nl": "catheter.volume",
    "timed_bolus": "timed_bolus",
}


class ProgramFileError(ValueError):
    """A therapy file that cannot be read: `field` names what is wrong, `message` how."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def file_field(wire_field: str) -> str:
    """The therapy-file name of a wire field a pump refusal named ('bolus_dose_ng' ->
    'patient_bolus.dose', 'basal[1].rate_ng_per_day' -> 'basal[1].rate'); unknown names
    come back unchanged."""
    m = re.fullmatch(r"basal\[(\d+)\]\.(start_s|rate_ng_per_day)", wire_field)
    if m:
        return f"basal[{m.group(1)}].{'start' if m.group(2) == 'start_s' else 'rate'}"
    m = re.fullmatch(r"timed_bolus\[(\d+)\]\.(start|dose|duration)_(s|ng)", wire_field)
    if m:
        return f"timed_bolus[{m.group(1)}].{m.group(2)}"
    return _WIRE_TO_FILE.get(wire_field, wire_field)


def _unknown(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ProgramFileError(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")


def _need(table: dict[str, Any], key: str, prefix: str) -> Any:
    if key not in table:
        raise ProgramFileError(f"{prefix}{key}", "missing")
    return table[key]


def _table(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProgramFileError(field, f"must be a table ([{field}]), not {type(value).__name__}")
    return value


def _quantity(parse: Callable[[str], int], value: Any, field: str) -> int:
    try:
        return parse(value)
    except units.UnitError as e:
        raise ProgramFileError(field, str(e)) from None


def _count(value: Any, field: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProgramFileError(field, f"must be a whole number, not {value!r}")
    if not 0 <= value <= top:
        raise ProgramFileError(field, f"{value} is outside 0..{top}")
    return value


def _u32(value: int, field: str) -> int:
    if value > 0xFFFF_FFFF:
        raise ProgramFileError(field, f"{value} is too large for the protocol (at most {0xFFFF_FFFF})")
    return value


def _time_of_day(value: Any, field: str) -> int:
    if not isinstance(value, str):
        raise ProgramFileError(field, f'must be a time of day as "HH:MM", not {value!r}')
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", value.strip())
    if m is None:
        raise ProgramFileError(field, f'{value!r} is not a time of day "HH:MM" (00:00..23:59)')
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60


def parse_program(doc: dict[str, Any], command_id: int) -> Program:
    """A PROGRAM request from an already parsed TOML document."""
    _unknown(doc, _TOP, "")
    drug = _need(doc, "drug", "")
    if not isinstance(drug, str) or not drug.strip():
        raise ProgramFileError("drug", f"must be a drug name, not {drug!r}")
    if len(drug.encode()) > DRUG_NAME_MAX:
        raise ProgramFileError("drug", f"at most {DRUG_NAME_MAX} bytes")
    conc = _u32(
        _quantity(units.parse_concentration_ng_per_ml, _need(doc, "concentration", ""), "concentration"),
        "concentration",
    )
    low_ul = DEFAULT_LOW_RESERVOIR_UL
    if "low_reservoir_alarm" in doc:
        low_ul = _u32(
            _quantity(units.parse_volume_ul, doc["low_reservoir_alarm"], "low_reservoir_alarm"), "low_reservoir_alarm"
        )

    basal_doc = _need(doc, "basal", "")
    if not isinstance(basal_doc, list) or not basal_doc:
        raise ProgramFileError("basal", "needs at least one [[basal]] step with start and rate")
    if len(basal_doc) > MAX_BASAL_STEPS:
        raise ProgramFileError("basal", f"at most {MAX_BASAL_STEPS} steps, not {len(basal_doc)}")
    basal = []
    for i, step in enumerate(basal_doc):
        prefix = f"basal[{i}]."
        step = _table(step, f"basal[{i}]")
        _unknown(step, _BASAL, prefix)
        start = _time_of_day(_need(step, "start", prefix), f"{prefix}start")
        rate = _u32(
            _quantity(units.parse_rate_ng_per_day, _need(step, "rate", prefix), f"{prefix}rate"), f"{prefix}rate"
        )
        basal.append(BasalStep(start_s=start, rate_ng_per_day=rate))

    dose = duration = lockout = most = 0
    if "patient_bolus" in doc:
        pb = _table(doc["patient_bolus"], "patient_bolus")
        p = "patient_bolus."
        _unknown(pb, _BOLUS, p)
        dose = _u32(_quantity(units.parse_dose_ng, _need(pb, "dose", p), f"{p}dose"), f"{p}dose")
        duration = _u32(_quantity(units.parse_duration_s, _need(pb, "duration", p), f"{p}duration"), f"{p}duration")
        lockout = _u32(_quantity(units.parse_duration_s, _need(pb, "lockout", p), f"{p}lockout"), f"{p}lockout")
        most = _count(_need(pb, "max_per_24h", p), f"{p}max_per_24h", 255)

    timed = _timed_boluses(doc.get("timed_bolus", []))

    limits = _table(_need(doc, "limits", ""), "limits")
    _unknown(limits, _LIMITS, "limits.")
    max_24h = _u32(
        _quantity(units.parse_dose_ng, _need(limits, "max_dose_24h", "limits."), "limits.max_dose_24h"),
        "limits.max_dose_24h",
    )
    catheter_nl = 0
    if "catheter" in doc:
        cath = _table(doc["catheter"], "catheter")
        _unknown(cath, _CATHETER, "catheter.")
        catheter_nl = _u32(
            _quantity(units.parse_volume_nl, _need(cath, "volume", "catheter."), "catheter.volume"), "catheter.volume"
        )
    if not 1 <= command_id <= 0xFFFF_FFFF:
        raise ValueError(f"command_id {command_id} is outside 1..{0xFFFF_FFFF}")
    return Program(
        command_id=command_id,
        drug=drug.strip(),
        concentration_ng_per_ml=conc,
        basal=tuple(basal),
        bolus_dose_ng=dose,
        bolus_duration_s=duration,
        bolus_lockout_s=lockout,
        bolus_max_per_24h=most,
        max_dose_24h_ng=max_24h,
        low_reservoir_ul=low_ul,
        catheter_volume_nl=catheter_nl,
        timed_bolus=timed,
    )


def _timed_boluses(value: Any) -> tuple[TimedBolus, ...]:
    """The [[timed_bolus]] tables, in the file's order (the pump refuses them out of order)."""
    if not isinstance(value, list):
        raise ProgramFileError("timed_bolus", "must be [[timed_bolus]] tables with start, dose and duration")
    if len(value) > MAX_TIMED_BOLUSES:
        raise ProgramFileError("timed_bolus", f"at most {MAX_TIMED_BOLUSES} timed boluses, not {len(value)}")
    out = []
    for i, item in enumerate(value):
        prefix = f"timed_bolus[{i}]."
        item = _table(item, f"timed_bolus[{i}]")
        _unknown(item, _TIMED, prefix)
        start = _time_of_day(_need(item, "start", prefix), f"{prefix}start")
        dose = _u32(_quantity(units.parse_dose_ng, _need(item, "dose", prefix), f"{prefix}dose"), f"{prefix}dose")
        duration = _u32(
            _quantity(units.parse_duration_s, _need(item, "duration", prefix), f"{prefix}duration"), f"{prefix}duration"
        )
        out.append(TimedBolus(start_s=start, dose_ng=dose, duration_s=duration))
    return tuple(out)


def load_program(path: str | Path, command_id: int) -> Program:
    """Read a therapy file into a PROGRAM request carrying command_id. Raises
    ProgramFileError naming the field (field 'file' when it cannot be read as TOML)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ProgramFileError("file", f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProgramFileError("file", f"{path} is not valid TOML: {e}") from None
    return parse_program(doc, command_id)
