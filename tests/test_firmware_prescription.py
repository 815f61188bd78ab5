"""Rules of the prescription, the drug library and the firmware settings (pure, no I/O
beyond temporary files). Every figure the tests expect is written out here from
../shared/domain.md or worked by hand, never read back from the module under test."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from firmware.board.config import load_config
from firmware.board.druglib import DEFAULT_LIBRARY, DrugLibraryError, load_library
from firmware.config import FirmwareConfig
from firmware.dose import MS_PER_DAY, BasalAccumulator, rate_at, stroke_fg
from firmware.prescription import BasalStep, HwLimits, PatientBolus, Prescription
from firmware.rules.prescription import PrescriptionError, validate
from protocol.messages import Program, ReadPrescriptionAck

MG = 1_000_000  # ng
MCG = 1_000  # ng
H = 3_600  # s

# The emulator's default pump model: 0.5 uL strokes, at most one per 1.8 s (1 mL/h).
HW = HwLimits(stroke_nl=500, min_stroke_interval_ms=1_800, reservoir_capacity_ul=20_000, max_strokes_per_run=64)
CFG = FirmwareConfig()
DRUGS = load_library()

REF_BASAL = (BasalStep(0, 1 * MG), BasalStep(7 * H, 1_500_000), BasalStep(22 * H, 1 * MG))
REF_BOLUS = PatientBolus(dose_ng=100_000, duration_s=600, lockout_s=2 * H, max_per_24h=6)


def reference(**changes: object) -> Prescription:
    """domain.md's reference therapy: morphine 5 mg/mL, basal 1.0 / 1.5 / 1.0 mg/day at
    00:00 / 07:00 / 22:00, bolus 0.1 mg over 10 min, lockout 2 h, 6 per 24 h, hard limit
    3 mg, low-reservoir alarm at 2 mL."""
    p = Prescription(
        drug="morphine",
        concentration_ng_per_ml=5 * MG,
        basal=REF_BASAL,
        patient_bolus=REF_BOLUS,
        max_dose_24h_ng=3 * MG,
        low_reservoir_ul=2_000,
        catheter_volume_nl=200_000,
    )
    return dataclasses.replace(p, **changes)


def bolus(**changes: int) -> PatientBolus:
    return dataclasses.replace(REF_BOLUS, **changes)


def refusal(p: Prescription, hw: HwLimits = HW, cfg: FirmwareConfig = CFG) -> PrescriptionError:
    with pytest.raises(PrescriptionError) as e:
        validate(p, DRUGS, hw, cfg.empty_reservoir_ul)
    return e.value


def accepted(p: Prescription, hw: HwLimits = HW, cfg: FirmwareConfig = CFG) -> None:
    validate(p, DRUGS, hw, cfg.empty_reservoir_ul)  # raises on refusal


# ---------------------------------------------------------------- valid therapies


def test_rule_prescription_reference_therapy_is_valid():
    accepted(reference())


def test_rule_prescription_without_patient_bolus_is_valid():
    accepted(reference(patient_bolus=None))


def test_rule_prescription_ziconotide_in_tenths_of_a_mcg_per_day_is_valid_and_delivers_exactly():
    # Ziconotide 25 mcg/mL, 2.4 mcg/day until 08:00 then 2.5 mcg/day, hard limit 19.2 mcg.
    p = Prescription(
        drug="ziconotide",
        concentration_ng_per_ml=25 * MCG,
        basal=(BasalStep(0, 2_400), BasalStep(8 * H, 2_500)),
        patient_bolus=None,
        max_dose_24h_ng=19_200,
        low_reservoir_ul=2_000,
    )
    accepted(p)
    # One 0.5 uL stroke of 25 mcg/mL holds 12.5 ng (12_500_000 fg): by hand, a day is
    # 2400 * 8/24 + 2500 * 16/24 = 800 + 1666.67 ng = 2466.67 ng, i.e. 197.33 strokes.
    cost = 12_500_000 * MS_PER_DAY
    assert stroke_fg(500, 25 * MCG) * MS_PER_DAY == cost
    acc = BasalAccumulator(0, 0)
    acc.accrue(p.basal, 3 * MS_PER_DAY)
    day_fg_ms = (2_400 * 8 * H * 1000 + 2_500 * 16 * H * 1000) * 1_000_000
    assert acc.owed == 3 * day_fg_ms
    assert acc.strokes_due(cost) == 3 * day_fg_ms // cost == 592  # 3 * 197.33


def test_rule_prescription_ziconotide_ceiling_is_named_in_mcg():
    p = Prescription("ziconotide", 25 * MCG, (BasalStep(0, 19_300),), None, 19_200, 2_000)
    e = refusal(p)
    assert e.field == "basal"
    assert "19.2 mcg" in e.error and "19.3 mcg" in e.error


# ---------------------------------------------------------------- drug and concentration


def test_rule_prescription_drug_not_in_library_is_refused_naming_the_library():
    e = refusal(reference(drug="heroin"))
    assert e.field == "drug"
    assert "'heroin'" in e.error and "morphine" in e.error and "baclofen" in e.error


def test_rule_prescription_concentration_over_the_drugs_maximum_names_the_maximum():
    accepted(reference(concentration_ng_per_ml=20 * MG))  # morphine's ceiling is 20 mg/mL
    e = refusal(reference(concentration_ng_per_ml=20 * MG + 1))
    assert e.field == "concentration_ng_per_ml"
    assert "20 mg/mL" in e.error and "morphine" in e.error


@pytest.mark.parametrize("conc", [0, -5])
def test_rule_prescription_concentration_must_be_above_zero(conc):
    assert refusal(reference(concentration_ng_per_ml=conc)).field == "concentration_ng_per_ml"


# ---------------------------------------------------------------- basal schedule


def test_rule_prescription_schedule_unsorted_is_refused_naming_the_step():
    e = refusal(reference(basal=(BasalStep(0, MG), BasalStep(7 * H, MG), BasalStep(3 * H, MG))))
    assert e.field == "basal[2].start_s"
    assert "sorted" in e.error and "before" in e.error


def test_rule_prescription_schedule_duplicated_step_is_refused_naming_the_step():
    e = refusal(reference(basal=(BasalStep(0, MG), BasalStep(7 * H, MG), BasalStep(7 * H, 2 * MG))))
    assert e.field == "basal[2].start_s"
    assert "duplicates" in e.error


def test_rule_prescription_schedule_first_step_must_start_at_midnight():
    e = refusal(reference(basal=(BasalStep(60, MG), BasalStep(7 * H, MG))))
    assert e.field == "basal[0].start_s"
    assert "00:00" in e.error


def test_rule_prescription_schedule_has_at_most_24_steps():
    steps = tuple(BasalStep(i * H, MG // 2) for i in range(24))
    accepted(reference(basal=steps))
    e = refusal(reference(basal=(*steps, BasalStep(24 * H - 1, MG // 2))))
    assert e.field == "basal"
    assert "24" in e.error and "25" in e.error


def test_rule_prescription_schedule_needs_at_least_one_step():
    e = refusal(reference(basal=()))
    assert e.field == "basal"


def test_rule_prescription_schedule_step_must_be_a_time_of_day():
    e = refusal(reference(basal=(BasalStep(0, MG), BasalStep(86_400, MG))))
    assert e.field == "basal[1].start_s"
    assert "86399" in e.error


def test_rule_prescription_schedule_rate_cannot_be_negative():
    e = refusal(reference(basal=(BasalStep(0, MG), BasalStep(H, -1))))
    assert e.field == "basal[1].rate_ng_per_day"


def test_rule_prescription_rate_beyond_the_mechanism_comes_from_hw_limits():
    # A slow mechanism: one 500 nL stroke per 86.4 s is 1000 strokes = 0.5 mL a day, which
    # at 5 mg/mL carries 2.5 mg/day. The same schedule is fine on the default mechanism.
    slow = dataclasses.replace(HW, min_stroke_interval_ms=86_400)
    at_max = reference(basal=(BasalStep(0, MG), BasalStep(H, 2_500_000)), patient_bolus=None)
    accepted(at_max, hw=slow)
    over = reference(basal=(BasalStep(0, MG), BasalStep(H, 2_500_005)), patient_bolus=None)
    accepted(over)
    e = refusal(over, hw=slow)
    assert e.field == "basal[1].rate_ng_per_day"
    assert "0.5 mL/day" in e.error and "mechanism" in e.error


def test_bug_rate_a_fraction_of_a_nanolitre_a_day_beyond_the_mechanism_passed():
    # 2_500_001 ng/day at 5 mg/mL is 500_000.2 nL/day against a 500_000 nL/day mechanism:
    # rounding the volume down used to let it through.
    slow = dataclasses.replace(HW, min_stroke_interval_ms=86_400)
    e = refusal(reference(basal=(BasalStep(0, 2_500_001),), patient_bolus=None), hw=slow)
    assert e.field == "basal[0].rate_ng_per_day"


# ---------------------------------------------------------------- daily ceilings


def test_rule_prescription_basal_daily_dose_over_the_drugs_maximum_is_refused():
    # 15 mg/day until 12:00 then 16 mg/day: 15.5 mg/day against morphine's 15 mg/day.
    e = refusal(reference(basal=(BasalStep(0, 15 * MG), BasalStep(12 * H, 16 * MG)), max_dose_24h_ng=15 * MG))
    assert e.field == "basal"
    assert "15.5 mg" in e.error and "15 mg" in e.error


def test_bug_basal_a_fraction_of_a_ng_over_the_drugs_daily_maximum_passed():
    # 15 mg/day + 1 ng/day for the first second: 15 mg + 1/86400 ng. The day's total used
    # to be rounded down to whole ng before the comparison, so it passed.
    basal = (BasalStep(0, 15 * MG + 1), BasalStep(1, 15 * MG))
    e = refusal(reference(basal=basal, max_dose_24h_ng=15 * MG))
    assert e.field == "basal"
    # Just under the maximum (leaving the pump's extra window minute under the hard limit).
    accepted(reference(basal=(BasalStep(0, 15 * MG * 1440 // 1441),), max_dose_24h_ng=15 * MG))


def test_rule_prescription_hard_limit_over_the_drugs_maximum_daily_dose_is_refused():
    accepted(reference(max_dose_24h_ng=15 * MG))
    e = refusal(reference(max_dose_24h_ng=15 * MG + 1))
    assert e.field == "max_dose_24h_ng"
    assert "15 mg" in e.error


@pytest.mark.parametrize("limit", [0, -1])
def test_rule_prescription_hard_limit_must_be_above_zero(limit):
    assert refusal(reference(max_dose_24h_ng=limit)).field == "max_dose_24h_ng"


def test_rule_prescription_basal_alone_over_the_hard_limit_is_refused():
    # The reference basal is 1.0 * 7/24 + 1.5 * 15/24 + 1.0 * 2/24 = 1.3125 mg/day.
    e = refusal(reference(max_dose_24h_ng=1_312_499))
    assert e.field == "basal"
    assert "1.3125 mg" in e.error and "1.3125 mg" in e.error and "hard limit" in e.error


def test_rule_prescription_basal_alone_must_fit_the_pumps_24h_plus_a_minute_window():
    # The pump's rolling window spans up to 1441 minutes; at the highest step (1.5 mg/day)
    # one minute holds 1.5 mg / 1440 = 1041.67 ng, so the limit must be >= 1_313_541.67 ng.
    accepted(reference(max_dose_24h_ng=1_313_542))
    e = refusal(reference(max_dose_24h_ng=1_313_541))
    assert e.field == "basal" and "24 h + 1 min" in e.error


def test_bug_basal_a_fraction_of_a_ng_over_the_hard_limit_passed():
    basal = (BasalStep(0, 2 * MG + 1), BasalStep(1, 2 * MG))  # 2 mg + 1/86400 ng a day
    e = refusal(reference(basal=basal, max_dose_24h_ng=2 * MG))
    assert e.field == "basal"
    assert "hard limit" in e.error


# ---------------------------------------------------------------- patient bolus


def test_rule_prescription_bolus_larger_than_the_hard_limit_is_refused():
    e = refusal(reference(patient_bolus=bolus(dose_ng=3 * MG + 1)))
    assert e.field == "bolus_dose_ng"
    assert "3 mg" in e.error and "hard limit" in e.error


@pytest.mark.parametrize("dose", [0, -1])
def test_rule_prescription_bolus_needs_a_dose(dose):
    assert refusal(reference(patient_bolus=bolus(dose_ng=dose))).field == "bolus_dose_ng"


def test_rule_prescription_bolus_shorter_than_a_stroke_is_refused():
    # One 500 nL stroke of 5 mg/mL is 2500 ng.
    accepted(reference(patient_bolus=bolus(dose_ng=2_500)))
    e = refusal(reference(patient_bolus=bolus(dose_ng=2_499)))
    assert e.field == "bolus_dose_ng"
    assert "500 nL" in e.error


@pytest.mark.parametrize("duration", [59, 3_601])
def test_rule_prescription_bolus_duration_out_of_range_is_refused(duration):
    e = refusal(reference(patient_bolus=bolus(duration_s=duration, lockout_s=2 * H)))
    assert e.field == "bolus_duration_s"
    assert "60..3600" in e.error


def test_rule_prescription_bolus_too_fast_for_the_mechanism_is_refused():
    # 0.1 mg at 5 mg/mL = 20 uL = 40 strokes; at one per 1.8 s that takes 72 s.
    accepted(reference(patient_bolus=bolus(duration_s=72)))
    e = refusal(reference(patient_bolus=bolus(duration_s=71)))
    assert e.field == "bolus_duration_s"
    assert "40 strokes" in e.error and "1800 ms" in e.error


@pytest.mark.parametrize("lockout", [899, 86_401])
def test_rule_prescription_lockout_out_of_range_is_refused(lockout):
    e = refusal(reference(patient_bolus=bolus(lockout_s=lockout)))
    assert e.field == "bolus_lockout_s"
    assert "900..86400" in e.error


def test_rule_prescription_lockout_shorter_than_the_bolus_duration_is_refused():
    accepted(reference(patient_bolus=bolus(duration_s=1_800, lockout_s=1_800)))
    e = refusal(reference(patient_bolus=bolus(duration_s=1_800, lockout_s=1_799)))
    assert e.field == "bolus_lockout_s"
    assert "duration" in e.error


@pytest.mark.parametrize("count", [0, 49])
def test_rule_prescription_max_boluses_per_24h_out_of_range_is_refused(count):
    e = refusal(reference(patient_bolus=bolus(max_per_24h=count)))
    assert e.field == "bolus_max_per_24h"
    assert "1..48" in e.error


@pytest.mark.parametrize("count", [1, 48])
def test_rule_prescription_max_boluses_per_24h_edges_are_valid(count):
    accepted(reference(patient_bolus=bolus(max_per_24h=count)))


# ---------------------------------------------------------------- reservoir threshold


@pytest.mark.parametrize("low", [1_000, 20_000, 500, 25_000])
def test_rule_prescription_low_reservoir_threshold_must_lie_between_empty_and_capacity(low):
    e = refusal(reference(low_reservoir_ul=low))
    assert e.field == "low_reservoir_ul"
    assert "1000 uL" in e.error and "20000 uL" in e.error


@pytest.mark.parametrize("low", [1_001, 19_999])
def test_rule_prescription_low_reservoir_threshold_edges_are_valid(low):
    accepted(reference(low_reservoir_ul=low))


def test_rule_prescription_low_reservoir_threshold_follows_the_configured_empty_level_and_capacity():
    e = refusal(reference(low_reservoir_ul=2_000), cfg=FirmwareConfig(empty_reservoir_ul=3_000))
    assert e.field == "low_reservoir_ul" and "3000 uL" in e.error
    accepted(reference(low_reservoir_ul=30_000), hw=dataclasses.replace(HW, reservoir_capacity_ul=40_000))


# ---------------------------------------------------------------- the prescription itself


def test_rule_prescription_rate_at_follows_the_schedule():
    p = reference()
    assert [rate_at(p.basal, s * 1000) for s in (0, 7 * H - 1, 7 * H, 22 * H - 1, 22 * H, 86_399)] == [
        MG,
        MG,
        1_500_000,
        1_500_000,
        MG,
        MG,
    ]


def test_rule_prescription_dict_round_trip():
    for p in (reference(), reference(patient_bolus=None)):
        assert Prescription.from_dict(p.to_dict()) == p


def test_rule_prescription_wire_round_trip_and_absent_bolus_means_none():
    for p in (reference(), reference(patient_bolus=None)):
        ack = ReadPrescriptionAck(present=True, **p.wire_fields())
        assert Prescription.from_message(ack) == p
        assert Prescription.from_message(Program(command_id=7, **p.wire_fields())) == p
    assert reference(patient_bolus=None).wire_fields()["bolus_dose_ng"] == 0


# ---------------------------------------------------------------- the drug library

# domain.md's table (PACC 2017), in ng: drug, unit, max concentration /mL, max daily dose.
DOMAIN_DRUGS = {
    "morphine": ("mg", 20 * MG, 15 * MG),
    "hydromorphone": ("mg", 15 * MG, 10 * MG),
    "fentanyl": ("mcg", 10 * MG, 1_000 * MCG),
    "sufentanil": ("mcg", 5 * MG, 500 * MCG),
    "ziconotide": ("mcg", 100 * MCG, 19_200),
    "bupivacaine": ("mg", 30 * MG, 20 * MG),
    "clonidine": ("mcg", 1_000 * MCG, 600 * MCG),
    "baclofen": ("mcg", 2_000 * MCG, 1_000 * MCG),
}


def test_rule_drug_library_default_file_holds_the_domain_defaults():
    lib = load_library()
    assert set(lib.names) == set(DOMAIN_DRUGS)
    for name, (unit, conc, daily) in DOMAIN_DRUGS.items():
        d = lib.get(name)
        assert (d.unit, d.max_concentration_ng_per_ml, d.max_daily_dose_ng) == (unit, conc, daily)
    assert lib.get("heroin") is None
    assert load_library(DEFAULT_LIBRARY) == lib


GOOD = 'unit = "mg"\nmax_concentration_ng_per_ml = 1000\nmax_daily_dose_ng = 1000\n'


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("[bad]\n" + GOOD.replace('"mg"', '"ml"'), "unit"),
        ("[bad]\n" + GOOD.replace("max_daily_dose_ng = 1000\n", ""), "needs exactly"),
        ("[bad]\n" + GOOD + "colour = 1\n", "needs exactly"),
        ("[bad]\n" + GOOD.replace("= 1000\nmax_daily", "= 0\nmax_daily"), "max_concentration_ng_per_ml"),
        ("[bad]\n" + GOOD.replace("max_daily_dose_ng = 1000", "max_daily_dose_ng = -3"), "max_daily_dose_ng"),
        ("[bad]\n" + GOOD.replace("max_daily_dose_ng = 1000", "max_daily_dose_ng = 1.5"), "max_daily_dose_ng"),
        ("[bad]\n" + GOOD.replace("max_daily_dose_ng = 1000", "max_daily_dose_ng = true"), "max_daily_dose_ng"),
        ("[bad]\n" + GOOD.replace("max_daily_dose_ng = 1000", "max_daily_dose_ng = 4294967296"), "2**32"),
        ("bad = 3\n", "must be a table"),
    ],
)
def test_rule_drug_library_rejects_a_malformed_entry_naming_it(tmp_path, entry, says):
    f = tmp_path / "drugs.toml"
    f.write_text(entry + "\n[fine]\n" + GOOD)  # a bare key must come before any table
    with pytest.raises(DrugLibraryError) as e:
        load_library(f)
    assert "[bad]" in str(e.value) and says in str(e.value)
    assert str(f) in str(e.value)


def test_rule_drug_library_rejects_a_name_longer_than_24_bytes(tmp_path):
    f = tmp_path / "drugs.toml"
    name = "x" * 25
    f.write_text(f"[{name}]\n" + GOOD)
    with pytest.raises(DrugLibraryError, match=name):
        load_library(f)
    f.write_text("[" + "x" * 24 + "]\n" + GOOD)
    assert load_library(f).names == ("x" * 24,)


def test_rule_drug_library_rejects_an_empty_missing_or_unparsable_file(tmp_path):
    f = tmp_path / "drugs.toml"
    f.write_text("# nothing\n")
    with pytest.raises(DrugLibraryError, match="lists no drugs"):
        load_library(f)
    with pytest.raises(DrugLibraryError, match=re.escape("missing.toml")):
        load_library(tmp_path / "missing.toml")
    f.write_text("[morphine\n")
    with pytest.raises(DrugLibraryError, match=re.escape(str(f))):
        load_library(f)


# ---------------------------------------------------------------- firmware settings


def test_rule_config_defaults_follow_the_domain_notes():
    c = FirmwareConfig()
    assert c.empty_reservoir_ul == 1_000  # empty level 1 mL residual
    assert (c.refill_discrepancy_small_ul, c.refill_discrepancy_large_ul) == (1_000, 2_000)  # Maino 2017
    assert c.tone_interval_medium_ms == 3_600_000  # medium: about hourly
    assert c.tone_interval_high_ms < c.tone_interval_medium_ms < c.tone_interval_low_ms
    assert c.log_capacity >= 10_000


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10"])
def test_rule_config_values_must_be_positive_integers_naming_the_field(value):
    with pytest.raises(ValueError, match="occlusion_dwell_ms"):
        FirmwareConfig(occlusion_dwell_ms=value)


def test_rule_config_file_overrides_and_unknown_keys_are_refused(tmp_path: Path):
    assert load_config(None) == FirmwareConfig()
    f = tmp_path / "fw.toml"
    f.write_text("empty_reservoir_ul = 1500\n")
    assert load_config(f) == FirmwareConfig(empty_reservoir_ul=1_500)
    f.write_text("empty_reservoir_ml = 1\n")
    with pytest.raises(ValueError, match="empty_reservoir_ml"):
        load_config(f)


@pytest.mark.parametrize("volume", [0, 500, 200_000, 2_000_000])
def test_a_catheter_volume_not_entered_or_plausible_is_accepted(volume):
    accepted(reference(catheter_volume_nl=volume))


@pytest.mark.parametrize("volume", [1, 499, 2_000_001])
def test_a_catheter_volume_below_a_stroke_or_beyond_any_catheter_is_refused(volume):
    e = refusal(reference(catheter_volume_nl=volume))
    assert e.field == "catheter_volume_nl" and "500..2000000 nL" in e.error and "trimmed length" in e.error
