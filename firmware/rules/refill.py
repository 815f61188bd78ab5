"""Completing a refill (SR-017, SR-018, SR-041, SR-045).

REFILL_COMPLETE comes only after REFILL_BEGIN (delivery is paused in between) and records
what the reservoir now holds. The withdrawal empties the reservoir: the estimate becomes
the volume added, and only a fill beyond the capacity is refused. What was withdrawn is
compared with the estimate (a consequential discrepancy, or more than the reservoir can
hold, is alarmed; neither blocks the record), and the drug must be the one programmed
(or, with no prescription yet, one in the drug library, at a concentration it allows).
The concentration entered becomes the reservoir's recorded concentration, and the
prescription's: the prescription keeps its dose per day, so the volume rate follows the
new concentration, and it must still be valid at it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from protocol.codes import TherapyState

from ..druglib import DrugLibrary
from ..prescription import HwLimits, Prescription, fmt_dose
from . import Refusal, out_of_range, reservoir, wrong_state
from .prescription import PrescriptionError, validate


@dataclass(frozen=True)
class RefillFacts:
    state: TherapyState
    volume_nl: int  # the estimate before the refill
    capacity_nl: int
    withdrawn_nl: int
    added_nl: int
    drug: str
    concentration_ng_per_ml: int
    prescription: Prescription | None
    drugs: DrugLibrary
    limits: HwLimits
    empty_reservoir_ul: int


@dataclass(frozen=True)
class RefillVerdict:
    refusal: Refusal | None
    prescription: Prescription | None  # the prescription at the new concentration


def decide(f: RefillFacts) -> RefillVerdict:
    if f.state is not TherapyState.REFILL:
        return RefillVerdict(wrong_state("REFILL_BEGIN first"), None)
    if reservoir.overfills(f.added_nl, f.capacity_nl):
        return RefillVerdict(
            out_of_range("added_nl", f"{f.added_nl} nL would overfill the {f.capacity_nl} nL reservoir"), None
        )
    rx = f.prescription
    if rx is None:
        drug = f.drugs.get(f.drug)
        if drug is None:
            return RefillVerdict(out_of_range("drug", f"{f.drug!r} is not in the drug library"), None)
        if not 0 < f.concentration_ng_per_ml <= drug.max_concentration_ng_per_ml:
            most = fmt_dose(drug.max_concentration_ng_per_ml, drug.unit)
            return RefillVerdict(
                out_of_range("concentration_ng_per_ml", f"{drug.name} is filled at above zero, at most {most}/mL"),
                None,
            )
        return RefillVerdict(None, None)
    if f.drug != rx.drug:
        return RefillVerdict(out_of_range("drug", f"the pump is programmed for {rx.drug}: reprogram first"), None)
    new_rx = replace(rx, concentration_ng_per_ml=f.concentration_ng_per_ml)
    try:
        validate(new_rx, f.drugs, f.limits, f.empty_reservoir_ul)
    except PrescriptionError as e:
        return RefillVerdict(out_of_range(e.field, e.error), None)
    return RefillVerdict(None, new_rx)
