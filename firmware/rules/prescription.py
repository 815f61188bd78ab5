"""A prescription is validated as a whole before it is accepted (SR-001, SR-002, SR-047,
SR-049, SR-053).

The drug must be in the drug library, its concentration and daily dose within the drug's
maxima, every basal step deliverable by the mechanism, basal alone under the rolling
24 h hard limit over the longest window the pump measures, and the patient bolus's dose,
duration, lockout and count within range, and no basal step below the pump's minimum
flow; the catheter's volume, when entered, a plausible one. Timed boluses (at most 8)
are sorted, none overlapping the next, each deliverable, and basal plus every timed bolus
fits the drug's maximum daily dose and the hard limit as the pump measures it
(firmware/rules/timed_bolus.py). A refusal names the field and
the limit it broke, and changes nothing.
"""

from __future__ import annotations

from ..dose import FG_PER_NG, MS_PER_DAY, NL_PER_ML, basal_integral_fg_ms, volume_nl
from ..druglib import Drug, DrugLibrary
from ..history import MINUTE_MS
from ..prescription import (
    MAX_BOLUS_DURATION_S,
    MAX_BOLUSES_PER_24H,
    MAX_CATHETER_VOLUME_NL,
    MAX_LOCKOUT_S,
    MAX_TIMED,
    MIN_BOLUS_DURATION_S,
    MIN_LOCKOUT_S,
    S_PER_DAY,
    HwLimits,
    PatientBolus,
    Prescription,
    fmt_dose,
)
from .timed_bolus import given_fg


class PrescriptionError(ValueError):
    """A refused prescription: `field` names what broke, the message the limit."""

    def __init__(self, field: str, error: str) -> None:
        super().__init__(f"{field}: {error}")
        self.field = field
        self.error = error


def _fmt(ng: int, drug: Drug) -> str:
    return fmt_dose(ng, drug.unit)


def validate(p: Prescription, drugs: DrugLibrary, hw: HwLimits, empty_reservoir_ul: int) -> None:
    """Raise PrescriptionError for the first rule the prescription breaks."""
    drug = drugs.get(p.drug)
    if drug is None:
        raise PrescriptionError("drug", f"{p.drug!r} is not in the drug library ({', '.join(drugs.names)})")
    conc = p.concentration_ng_per_ml
    if conc <= 0:
        raise PrescriptionError("concentration_ng_per_ml", "must be above zero")
    if conc > drug.max_concentration_ng_per_ml:
        raise PrescriptionError(
            "concentration_ng_per_ml",
            f"{_fmt(conc, drug)}/mL exceeds {drug.name}'s maximum {_fmt(drug.max_concentration_ng_per_ml, drug)}/mL",
        )
    _validate_basal(p, drug, hw)
    # The day's basal exactly (fg*ms/day units), compared with each ceiling exactly: the
    # integral is rarely a whole ng, and rounding it down let a schedule a fraction of an
    # ng over a ceiling pass.
    exact = basal_integral_fg_ms(p.basal, 0, MS_PER_DAY)
    daily = exact // (MS_PER_DAY * FG_PER_NG)

    def over(ceiling_ng: int) -> bool:
        return exact > ceiling_ng * FG_PER_NG * MS_PER_DAY

    if over(drug.max_daily_dose_ng):
        raise PrescriptionError(
            "basal",
            f"{_fmt(daily, drug)}/day of basal exceeds {drug.name}'s maximum daily dose "
            f"{_fmt(drug.max_daily_dose_ng, drug)}",
        )
    limit = p.max_dose_24h_ng
    if limit <= 0:
        raise PrescriptionError("max_dose_24h_ng", "the 24 h hard limit must be above zero")
    if limit > drug.max_daily_dose_ng:
        raise PrescriptionError(
            "max_dose_24h_ng",
            f"hard limit {_fmt(limit, drug)} exceeds {drug.name}'s maximum daily dose "
            f"{_fmt(drug.max_daily_dose_ng, drug)}",
        )
    if over(limit):
        raise PrescriptionError(
            "basal", f"basal alone ({_fmt(daily, drug)}/day) is over the 24 h hard limit {_fmt(limit, drug)}"
        )
    # The pump measures "the last 24 h" in whole minutes, so its window can hold one minute
    # more than a day (it errs high). Basal alone must fit that window too, or the safety
    # layer would hold back basal that was validated.
    worst_minute = max(s.rate_ng_per_day for s in p.basal) * MINUTE_MS * FG_PER_NG
    if exact + worst_minute > limit * FG_PER_NG * MS_PER_DAY:
        raise PrescriptionError(
            "basal",
            f"basal alone ({_fmt(daily, drug)}/day) leaves no room under the 24 h hard limit "
            f"{_fmt(limit, drug)} in the pump's 24 h + 1 min window",
        )
    _validate_min_flow(p, drug, hw)
    _validate_timed(p, drug, hw, exact + worst_minute)
    if p.patient_bolus is not None:
        _validate_bolus(p.patient_bolus, p, drug, hw)
    if p.catheter_volume_nl and not hw.stroke_nl <= p.catheter_volume_nl <= MAX_CATHETER_VOLUME_NL:
        raise PrescriptionError(
            "catheter_volume_nl",
            f"{p.catheter_volume_nl} nL is not a catheter's volume: enter it from the catheter model and its "
            f"trimmed length, {hw.stroke_nl}..{MAX_CATHETER_VOLUME_NL} nL (or 0: not entered)",
        )
    cap = hw.reservoir_capacity_ul
    if not empty_reservoir_ul < p.low_reservoir_ul < cap:
        raise PrescriptionError(
            "low_reservoir_ul",
            f"{p.low_reservoir_ul} uL must lie above the empty level {empty_reservoir_ul} uL "
            f"and below the reservoir capacity {cap} uL",
        )


def _validate_basal(p: Prescription, drug: Drug, hw: HwLimits) -> None:
    steps = p.basal
    if not 1 <= len(steps) <= 24:
        raise PrescriptionError("basal", f"a schedule has 1 to 24 steps, not {len(steps)}")
    if steps[0].start_s != 0:
        raise PrescriptionError("basal[0].start_s", "the first step must start at 00:00")
    for i, step in enumerate(steps):
        if not 0 <= step.start_s < S_PER_DAY:
            raise PrescriptionError(f"basal[{i}].start_s", f"{step.start_s} s is not a time of day (0..86399)")
        if i and step.start_s <= steps[i - 1].start_s:
            what = "duplicates" if step.start_s == steps[i - 1].start_s else "comes before"
            raise PrescriptionError(f"basal[{i}].start_s", f"steps must be sorted: this step {what} the one before")
        if step.rate_ng_per_day < 0:
            raise PrescriptionError(f"basal[{i}].rate_ng_per_day", "a rate cannot be negative")
        nl = volume_nl(step.rate_ng_per_day, p.concentration_ng_per_ml)
        # Exactly: rate / concentration > stroke per min interval (both sides as nL/day
        # scaled by concentration x interval), so no rounding lets a rate slip past.
        needed = step.rate_ng_per_day * NL_PER_ML * hw.min_stroke_interval_ms
        if needed > hw.stroke_nl * MS_PER_DAY * p.concentration_ng_per_ml:
            raise PrescriptionError(
                f"basal[{i}].rate_ng_per_day",
                f"{_fmt(step.rate_ng_per_day, drug)}/day is {nl / NL_PER_ML:g} mL/day, beyond the mechanism's "
                f"{hw.max_nl_per_day / NL_PER_ML:g} mL/day",
            )


def _validate_bolus(b: PatientBolus, p: Prescription, drug: Drug, hw: HwLimits) -> None:
    if b.dose_ng <= 0:
        raise PrescriptionError("bolus_dose_ng", "a patient bolus needs a dose (or leave every bolus field 0)")
    if b.dose_ng > p.max_dose_24h_ng:
        raise PrescriptionError(
            "bolus_dose_ng",
            f"{_fmt(b.dose_ng, drug)} is larger than the 24 h hard limit {_fmt(p.max_dose_24h_ng, drug)}",
        )
    nl = volume_nl(b.dose_ng, p.concentration_ng_per_ml)
    if nl < hw.stroke_nl:
        raise PrescriptionError("bolus_dose_ng", f"{_fmt(b.dose_ng, drug)} is less than one stroke ({hw.stroke_nl} nL)")
    if not MIN_BOLUS_DURATION_S <= b.duration_s <= MAX_BOLUS_DURATION_S:
        raise PrescriptionError(
            "bolus_duration_s", f"{b.duration_s} s is outside {MIN_BOLUS_DURATION_S}..{MAX_BOLUS_DURATION_S} s"
        )
    strokes = -(-nl // hw.stroke_nl)
    if b.duration_s * 1000 // strokes < hw.min_stroke_interval_ms:
        raise PrescriptionError(
            "bolus_duration_s",
            f"{strokes} strokes in {b.duration_s} s is faster than the mechanism's "
            f"one stroke per {hw.min_stroke_interval_ms} ms",
        )
    if not MIN_LOCKOUT_S <= b.lockout_s <= MAX_LOCKOUT_S:
        raise PrescriptionError("bolus_lockout_s", f"{b.lockout_s} s is outside {MIN_LOCKOUT_S}..{MAX_LOCKOUT_S} s")
    if b.lockout_s < b.duration_s:
        raise PrescriptionError("bolus_lockout_s", "the lockout must be at least the bolus duration")
    if not 1 <= b.max_per_24h <= MAX_BOLUSES_PER_24H:
        raise PrescriptionError("bolus_max_per_24h", f"{b.max_per_24h} is outside 1..{MAX_BOLUSES_PER_24H}")


def _validate_min_flow(p: Prescription, drug: Drug, hw: HwLimits) -> None:
    """SR-047: every basal step at least the pump's minimum flow (0 included: a pump that
    must not deliver is stopped, not programmed to nothing)."""
    least = hw.min_flow_nl_per_day
    conc = p.concentration_ng_per_ml
    for i, step in enumerate(p.basal):
        # Exactly: rate / concentration (mL/day) against the minimum, both scaled.
        if step.rate_ng_per_day * NL_PER_ML < least * conc:
            least_rate = -(-least * conc // NL_PER_ML)
            raise PrescriptionError(
                f"basal[{i}].rate_ng_per_day",
                f"{_fmt(step.rate_ng_per_day, drug)}/day at {_fmt(conc, drug)}/mL is "
                f"{step.rate_ng_per_day * NL_PER_ML // conc / NL_PER_ML:g} mL/day, below the pump's minimum flow "
                f"{least / NL_PER_ML:g} mL/day ({_fmt(least_rate, drug)}/day at this concentration)",
            )


def _clock(s: int) -> str:
    return f"{s // 3600:02d}:{s // 60 % 60:02d}" + (f":{s % 60:02d}" if s % 60 else "")


def _validate_timed(p: Prescription, drug: Drug, hw: HwLimits, basal_window: int) -> None:
    """SR-053: the timed boluses, one by one and with basal. basal_window is the most basal
    the pump's 24 h + 1 min window holds (fg*ms/day units)."""
    timed = p.timed
    if len(timed) > MAX_TIMED:
        raise PrescriptionError("timed_bolus", f"at most {MAX_TIMED} timed boluses, not {len(timed)}")
    conc = p.concentration_ng_per_ml
    for i, t in enumerate(timed):
        f = f"timed_bolus[{i}]"
        if not 0 <= t.start_s < S_PER_DAY:
            raise PrescriptionError(f"{f}.start_s", f"{t.start_s} s is not a time of day (0..86399)")
        if i and t.start_s <= timed[i - 1].start_s:
            what = "duplicates" if t.start_s == timed[i - 1].start_s else "comes before"
            raise PrescriptionError(
                f"{f}.start_s", f"timed boluses must be sorted by start: {_clock(t.start_s)} {what} the one before"
            )
        if t.dose_ng <= 0:
            raise PrescriptionError(f"{f}.dose_ng", "a timed bolus needs a dose")
        if t.dose_ng > p.max_dose_24h_ng:
            raise PrescriptionError(
                f"{f}.dose_ng",
                f"{_fmt(t.dose_ng, drug)} is larger than the 24 h hard limit {_fmt(p.max_dose_24h_ng, drug)}",
            )
        nl = volume_nl(t.dose_ng, conc)
        if nl < hw.stroke_nl:
            raise PrescriptionError(
                f"{f}.dose_ng", f"{_fmt(t.dose_ng, drug)} is less than one stroke ({hw.stroke_nl} nL)"
            )
        if not MIN_BOLUS_DURATION_S <= t.duration_s <= MAX_BOLUS_DURATION_S:
            raise PrescriptionError(
                f"{f}.duration_s", f"{t.duration_s} s is outside {MIN_BOLUS_DURATION_S}..{MAX_BOLUS_DURATION_S} s"
            )
        strokes = -(-nl // hw.stroke_nl)
        if t.duration_s * 1000 // strokes < hw.min_stroke_interval_ms:
            raise PrescriptionError(
                f"{f}.duration_s",
                f"{strokes} strokes in {t.duration_s} s is faster than the mechanism's "
                f"one stroke per {hw.min_stroke_interval_ms} ms",
            )
    # One bolus at a time: each ends before the next starts, the last before the first of
    # the next day.
    for i, t in enumerate(timed):
        nxt = timed[(i + 1) % len(timed)]
        nxt_start = nxt.start_s + (S_PER_DAY if i + 1 == len(timed) else 0)
        if len(timed) > 1 and t.start_s + t.duration_s > nxt_start:
            j = (i + 1) % len(timed)
            raise PrescriptionError(
                f"timed_bolus[{j}].start_s",
                f"{_clock(nxt.start_s)} is before timed_bolus[{i}] ({_clock(t.start_s)} for {t.duration_s} s) "
                "has ended: one bolus at a time",
            )
    # Against the daily ceilings, adding them one by one so the refusal names the one that
    # breaks it. The hard limit as the pump measures it: the most basal its 24 h + 1 min
    # window holds, one stroke of basal it may be ahead of the schedule, every timed bolus
    # as given, and one of them a second time with the basal held back while it ran: as a
    # timed bolus starts, the window still holds the same bolus of the day before (it
    # started in the same minute 24 h ago), and a run is admitted only with room for all
    # of it; a window that starts part-way into one holds the rest of it and the basal it
    # held back, paid out after it, though accrued before the window (found by
    # tests/test_timed_property.py).
    stroke = hw.stroke_nl * conc
    day_exact = basal_integral_fg_ms(p.basal, 0, MS_PER_DAY)
    limit = p.max_dose_24h_ng * FG_PER_NG * MS_PER_DAY
    daily_max = drug.max_daily_dose_ng * FG_PER_NG * MS_PER_DAY
    basal_ng = day_exact // (MS_PER_DAY * FG_PER_NG)
    total = largest = 0
    for i, t in enumerate(timed):
        total += t.dose_ng
        if day_exact + total * FG_PER_NG * MS_PER_DAY > daily_max:
            raise PrescriptionError(
                f"timed_bolus[{i}].dose_ng",
                f"basal {_fmt(basal_ng, drug)}/day and timed boluses {_fmt(total, drug)}/day exceed "
                f"{drug.name}'s maximum daily dose {_fmt(drug.max_daily_dose_ng, drug)}",
            )
    given = 0
    top_rate = max(s.rate_ng_per_day for s in p.basal)
    for i, t in enumerate(timed):
        one = given_fg(t.dose_ng, stroke)
        given += one
        held = top_rate * FG_PER_NG * t.duration_s * 1000  # basal held back while it runs (fg*ms/day)
        largest = max(largest, one * MS_PER_DAY + held)
        need = basal_window + (stroke + given) * MS_PER_DAY + largest
        if need > limit:
            # (A NAK's detail holds 160 bytes: said briefly.)
            raise PrescriptionError(
                f"timed_bolus[{i}].dose_ng",
                f"basal {_fmt(basal_ng, drug)}/day + timed {_fmt(-(-given // FG_PER_NG), drug)}/day need a hard "
                f"limit of at least {_fmt(-(-need // (FG_PER_NG * MS_PER_DAY)), drug)}, not "
                f"{_fmt(p.max_dose_24h_ng, drug)}: yesterday's bolus still counts as today's starts",
            )
