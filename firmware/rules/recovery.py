"""Recovery after a transient fault, by policy (SR-051), and what an acknowledgement
does, made visible (SR-052).

Every high-priority alarm stops delivery and halts therapy when it is raised (SR-020,
SR-021, SR-024). What happens once its condition is gone is the recovery policy the drug
library sets for the drug in force (firmware/drugs.toml, `[drug.recovery]`):
  * hold: therapy stays halted until a clinician acknowledges the alarm with its
    condition gone (a reset); an acknowledgement while it held only silenced it.
  * resume: therapy goes back by itself to the state it was halted from, the moment the
    condition is gone and no other alarm holds it (SynchroMed's motor-stall recovery,
    logged as a recovery). The basal of the time halted is given up, never caught up
    (SR-039), and the alarm stays latched, sounding by its priority, until acknowledged.
A condition that comes back halts therapy again at once.

Defaults: a motor stall resumes (a stall that clears must not leave a baclofen patient
without drug until a clinic visit); an occlusion holds. Some alarms can only hold, for the
reason HOLD_ONLY gives: a library that asks otherwise is refused when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from protocol.codes import AlarmId, Priority


class Policy(Enum):
    RESUME = "resume"
    HOLD = "hold"


# Every high-priority alarm's default (tests hold this to firmware/alarms.py's priorities).
DEFAULTS: dict[AlarmId, Policy] = {
    AlarmId.MOTOR_STALL: Policy.RESUME,
    AlarmId.OCCLUSION: Policy.HOLD,
    AlarmId.EMPTY_RESERVOIR: Policy.HOLD,
    AlarmId.MEMORY_ERROR: Policy.HOLD,
    AlarmId.BATTERY_EOS: Policy.HOLD,
    AlarmId.PUMP_LINK_LOST: Policy.HOLD,
}

# Alarms whose condition going away says nothing about the pump being fit to deliver.
HOLD_ONLY: dict[AlarmId, str] = {
    AlarmId.EMPTY_RESERVOIR: "only a refill ends it, and the refill decides what follows",
    AlarmId.MEMORY_ERROR: "the controller cannot vouch for its own state: a person must check it (SR-044)",
    AlarmId.BATTERY_EOS: "a battery at end of service cannot be trusted to deliver, whatever it reads next (SR-024)",
    AlarmId.PUMP_LINK_LOST: "delivery cannot be vouched for while the controller lost the pump",
}


@dataclass(frozen=True)
class LatchedAlarm:
    """One latched alarm as the recovery rules see it."""

    priority: Priority
    condition_present: bool
    recovered: bool  # its condition went, and by its policy therapy went on without a reset
    policy: Policy  # the drug library's, for the drug in force


def holds_therapy(a: LatchedAlarm) -> bool:
    """SR-020, SR-021, SR-051: this alarm keeps therapy halted, and every run refused (the
    latched-alarm interlock): a high alarm whose condition holds, or went without a reset
    under a hold policy. A recovered one stays latched, and holds nothing."""
    return a.priority is Priority.HIGH and (a.condition_present or not a.recovered)


def recovers(a: LatchedAlarm) -> bool:
    """SR-051: its condition has just gone. True when therapy may go on without a reset
    (once no other alarm holds it): a high alarm whose policy is resume."""
    return a.priority is Priority.HIGH and not a.condition_present and a.policy is Policy.RESUME


def needs_reset(a: LatchedAlarm) -> bool:
    """SR-052: once its condition is gone, therapy stays halted until a clinician
    acknowledges it (again, if it was acknowledged while the condition held)."""
    return a.priority is Priority.HIGH and not a.recovered and a.policy is Policy.HOLD
