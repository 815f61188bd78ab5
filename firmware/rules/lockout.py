"""The patient-bolus lockout: when the patient may next be granted a bolus (SR-003,
SR-004, SR-044).

The lockout runs from the start of each patient bolus, and also from each programming
session and each refill (a new prescription or concentration must not be met by an
immediate bolus), and for a whole day after a memory loss (what was delivered in the last
24 h cannot be vouched for). A lockout only ever lengthens: a later event never shortens
one already running.
"""

from __future__ import annotations

from ..dose import MS_PER_DAY


def after_patient_bolus(now_ms: int, lockout_s: int, until_ms: int) -> int:
    """SR-003: the lockout after a patient bolus that starts now."""
    return max(until_ms, now_ms + lockout_s * 1000)


def after_change(now_ms: int, lockout_s: int | None, until_ms: int) -> int:
    """SR-004: the lockout after programming or a refill; lockout_s is the (new)
    prescription's patient-bolus lockout, None when it has no patient bolus."""
    if lockout_s is None:
        return until_ms
    return max(until_ms, now_ms + lockout_s * 1000)


def after_memory_loss(now_ms: int, until_ms: int) -> int:
    """SR-034, SR-044: delivery in the last 24 h is not known, so no patient bolus for a
    day."""
    return max(until_ms, now_ms + MS_PER_DAY)
