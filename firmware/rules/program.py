"""Programming a prescription (SR-001, SR-002, SR-007, SR-041).

A PROGRAM replaces the prescription only when therapy is not starting up or in a
refill, no bolus is in progress, the prescription is valid as a whole (rules/prescription.py),
and it states what the reservoir holds: the drug and concentration recorded at the last
fill or refill are facts about the reservoir, which a program can only state, never
change (a program at 1 mg/mL over a reservoir of 5 mg/mL would deliver five times the
dose it names). To change the concentration, refill.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import TherapyState

from ..delivery import Fill
from ..druglib import DrugLibrary
from ..prescription import HwLimits, Prescription, fmt_dose
from . import Refusal, out_of_range, wrong_state
from .prescription import PrescriptionError, validate


@dataclass(frozen=True)
class ProgramFacts:
    state: TherapyState
    bolus_active: bool
    prescription: Prescription
    drugs: DrugLibrary
    limits: HwLimits
    empty_reservoir_ul: int
    fill: Fill | None  # what the last fill or refill recorded; None on a pump never filled


def refusal(f: ProgramFacts) -> Refusal | None:
    if f.state in (TherapyState.BOOT, TherapyState.REFILL):
        return wrong_state(f"cannot program in state {f.state.name.lower()}")
    if f.bolus_active:
        return wrong_state("a bolus is in progress: wait for it or stop therapy")
    try:
        validate(f.prescription, f.drugs, f.limits, f.empty_reservoir_ul)
    except PrescriptionError as e:
        return out_of_range(e.field, e.error)
    rx, fill = f.prescription, f.fill
    held = holds(fill, f.drugs)
    if fill is None or held is None:
        return None
    if rx.drug != fill.drug:
        if f.state is TherapyState.STOPPED:
            return None  # changing drugs: START and PRIME wait until a refill records the new one
        return out_of_range("drug", f"{held}: stop therapy to program another drug, then refill with it")
    if rx.concentration_ng_per_ml != fill.concentration_ng_per_ml:
        return out_of_range(
            "concentration_ng_per_ml",
            f"{held}; a program states the concentration, it cannot change it: refill to change it",
        )
    return None


def holds(fill: Fill | None, drugs: DrugLibrary) -> str | None:
    """What the reservoir holds, as a clinician reads it; None on a pump never filled."""
    if fill is None:
        return None
    drug = drugs.get(fill.drug)
    unit = drug.unit if drug is not None else "mg"
    return (
        f"the reservoir holds {fill.drug} at {fmt_dose(fill.concentration_ng_per_ml, unit)}/mL "
        "(recorded at the last refill)"
    )


def matches_fill(rx: Prescription, fill: Fill | None) -> bool:
    """SR-041: the prescription names what the reservoir holds (or nothing was recorded)."""
    return fill is None or (rx.drug, rx.concentration_ng_per_ml) == (fill.drug, fill.concentration_ng_per_ml)
