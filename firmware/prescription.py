"""The prescription: what a clinician programs, as the controller holds it.

Its validation as a whole (SR-001, SR-002) is a rule: firmware/rules/prescription.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.messages import MAX_TIMED_BOLUSES, Program, ReadPrescriptionAck
from protocol.messages import BasalStep as WireBasalStep
from protocol.messages import TimedBolus as WireTimedBolus

from .dose import MS_PER_DAY

S_PER_DAY = 86_400
MIN_BOLUS_DURATION_S = 60
MAX_BOLUS_DURATION_S = 3_600
MIN_LOCKOUT_S = 15 * 60  # PCA convention: 15 min to 24 h
MAX_LOCKOUT_S = S_PER_DAY
MAX_BOLUSES_PER_24H = 48
# An intrathecal catheter holds a few uL per cm: 2 mL is far beyond any implanted length.
MAX_CATHETER_VOLUME_NL = 2_000_000
MAX_TIMED = MAX_TIMED_BOLUSES  # timed boluses a prescription may hold (bounded memory)


@dataclass(frozen=True)
class HwLimits:
    """What the pump hardware can do (from HW_INFO)."""

    stroke_nl: int
    min_stroke_interval_ms: int
    reservoir_capacity_ul: int
    max_strokes_per_run: int
    min_flow_nl_per_day: int = 0

    @property
    def max_nl_per_day(self) -> int:
        return self.stroke_nl * MS_PER_DAY // self.min_stroke_interval_ms


@dataclass(frozen=True)
class BasalStep:
    start_s: int  # seconds after local midnight
    rate_ng_per_day: int


@dataclass(frozen=True)
class PatientBolus:
    dose_ng: int
    duration_s: int
    lockout_s: int
    max_per_24h: int


@dataclass(frozen=True)
class TimedBolus:
    """A bolus the pump gives every day at a fixed time of day (SR-053)."""

    start_s: int  # seconds after local midnight
    dose_ng: int
    duration_s: int


@dataclass(frozen=True)
class Prescription:
    drug: str
    concentration_ng_per_ml: int
    basal: tuple[BasalStep, ...]
    patient_bolus: PatientBolus | None
    max_dose_24h_ng: int
    low_reservoir_ul: int
    catheter_volume_nl: int = 0  # as the clinician entered it; 0 = not entered
    timed: tuple[TimedBolus, ...] = ()  # sorted by start_s

    @staticmethod
    def from_message(msg: Program | ReadPrescriptionAck) -> Prescription:
        bolus = None
        if msg.bolus_dose_ng or msg.bolus_duration_s or msg.bolus_lockout_s or msg.bolus_max_per_24h:
            bolus = PatientBolus(msg.bolus_dose_ng, msg.bolus_duration_s, msg.bolus_lockout_s, msg.bolus_max_per_24h)
        return Prescription(
            drug=msg.drug,
            concentration_ng_per_ml=msg.concentration_ng_per_ml,
            basal=tuple(BasalStep(s.start_s, s.rate_ng_per_day) for s in msg.basal),
            patient_bolus=bolus,
            max_dose_24h_ng=msg.max_dose_24h_ng,
            low_reservoir_ul=msg.low_reservoir_ul,
            catheter_volume_nl=msg.catheter_volume_nl,
            timed=tuple(TimedBolus(t.start_s, t.dose_ng, t.duration_s) for t in msg.timed_bolus),
        )

    def to_dict(self) -> dict:
        b = self.patient_bolus
        return {
            "drug": self.drug,
            "concentration_ng_per_ml": self.concentration_ng_per_ml,
            "basal": [[s.start_s, s.rate_ng_per_day] for s in self.basal],
            "patient_bolus": [b.dose_ng, b.duration_s, b.lockout_s, b.max_per_24h] if b else None,
            "max_dose_24h_ng": self.max_dose_24h_ng,
            "low_reservoir_ul": self.low_reservoir_ul,
            "catheter_volume_nl": self.catheter_volume_nl,
            "timed": [[t.start_s, t.dose_ng, t.duration_s] for t in self.timed],
        }

    @staticmethod
    def from_dict(d: dict) -> Prescription:
        b = d["patient_bolus"]
        return Prescription(
            drug=d["drug"],
            concentration_ng_per_ml=d["concentration_ng_per_ml"],
            basal=tuple(BasalStep(s, r) for s, r in d["basal"]),
            patient_bolus=PatientBolus(*b) if b else None,
            max_dose_24h_ng=d["max_dose_24h_ng"],
            low_reservoir_ul=d["low_reservoir_ul"],
            catheter_volume_nl=d.get("catheter_volume_nl", 0),
            timed=tuple(TimedBolus(*t) for t in d.get("timed", ())),  # (an NVM written before timed boluses)
        )

    def wire_fields(self) -> dict:
        b = self.patient_bolus
        return {
            "drug": self.drug,
            "concentration_ng_per_ml": self.concentration_ng_per_ml,
            "basal": tuple(WireBasalStep(start_s=s.start_s, rate_ng_per_day=s.rate_ng_per_day) for s in self.basal),
            "bolus_dose_ng": b.dose_ng if b else 0,
            "bolus_duration_s": b.duration_s if b else 0,
            "bolus_lockout_s": b.lockout_s if b else 0,
            "bolus_max_per_24h": b.max_per_24h if b else 0,
            "max_dose_24h_ng": self.max_dose_24h_ng,
            "low_reservoir_ul": self.low_reservoir_ul,
            "catheter_volume_nl": self.catheter_volume_nl,
            "timed_bolus": tuple(
                WireTimedBolus(start_s=t.start_s, dose_ng=t.dose_ng, duration_s=t.duration_s) for t in self.timed
            ),
        }


def fmt_dose(ng: int, unit: str) -> str:
    """A dose as a clinician reads it: in mcg for drugs dosed in mcg, else in mg."""
    if unit == "mcg":
        return f"{ng / 1_000:g} mcg"
    return f"{ng / 1_000_000:g} mg"
