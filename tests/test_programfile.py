"""tools.programfile: therapy TOML files into PROGRAM requests; every problem names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.messages import BasalStep, Program
from protocol.vectors import reference_prescription
from tools.programfile import ProgramFileError, file_field, load_program

REPO = Path(__file__).resolve().parent.parent

GOOD = """
drug = "morphine"
concentration = "5 mg/mL"

[[basal]]
start = "00:00"
rate = "1 mg/day"

[limits]
max_dose_24h = "3 mg"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "therapy.toml"
    p.write_text(text)
    return p


def test_example_is_the_reference_therapy():
    assert load_program(REPO / "examples" / "morphine.toml", 42) == Program(command_id=42, **reference_prescription())


def test_minimal_file_has_no_patient_bolus_and_the_default_low_alarm(tmp_path):
    p = load_program(write(tmp_path, GOOD), 1)
    assert p.basal == (BasalStep(start_s=0, rate_ng_per_day=1_000_000),)
    assert (p.bolus_dose_ng, p.bolus_duration_s, p.bolus_lockout_s, p.bolus_max_per_24h) == (0, 0, 0, 0)
    assert p.low_reservoir_ul == 2_000
    assert p.max_dose_24h_ng == 3_000_000


def test_steps_keep_file_order_and_times(tmp_path):
    text = GOOD.replace("[limits]", '[[basal]]\nstart = "23:59"\nrate = "50 mcg/h"\n\n[limits]')
    p = load_program(write(tmp_path, text), 1)
    assert p.basal[1] == BasalStep(start_s=23 * 3600 + 59 * 60, rate_ng_per_day=1_200_000)


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        (lambda t: t.replace('drug = "morphine"\n', ""), "drug", "missing"),
        (lambda t: t.replace('concentration = "5 mg/mL"', 'concentration = "5 mg/ml/s"'), "concentration", "unknown"),
        (lambda t: t.replace('concentration = "5 mg/mL"', "concentration = 5"), "concentration", "needs a unit"),
        (lambda t: t.replace('rate = "1 mg/day"', 'rate = "1 mg/dya"'), "basal[0].rate", "unknown unit 'dya'"),
        (lambda t: t.replace('start = "00:00"', 'start = "24:00"'), "basal[0].start", "not a time of day"),
        (lambda t: t.replace('start = "00:00"', "start = 0"), "basal[0].start", "HH:MM"),
        (lambda t: t.replace('start = "00:00"\n', ""), "basal[0].start", "missing"),
        (lambda t: t.replace('rate = "1 mg/day"', 'rate = "1 mg/day"\nratee = 3'), "basal[0].ratee", "unknown key"),
        (lambda t: t + 'extra = "x"\n', "limits.extra", "unknown key"),
        (lambda t: "colour = 1\n" + t, "colour", "unknown key"),
        (lambda t: t.replace('max_dose_24h = "3 mg"', 'max_dose_24h = "3 mgg"'), "limits.max_dose_24h", "mgg"),
        (lambda t: t.replace('[limits]\nmax_dose_24h = "3 mg"\n', ""), "limits", "missing"),
        (lambda t: t + 'low_reservoir_alarm = "2 mL"\n', "limits.low_reservoir_alarm", "unknown key"),
        (lambda t: 'low_reservoir_alarm = "2.0005 mL"\n' + t, "low_reservoir_alarm", "whole number of uL"),
        (lambda t: t.replace("[[basal]]", "[basal]"), "basal", "at least one"),
        (
            lambda t: t + "[patient_bolus]\ndose = '0.1 mg'\nduration = '10min'\nlockout = '2h'\n",
            "patient_bolus.max_per_24h",
            "missing",
        ),
        (
            lambda t: (
                t + "[patient_bolus]\ndose = '0.1 mg'\nduration = '10 minutes'\nlockout = '2h'\nmax_per_24h = 1.5\n"
            ),
            "patient_bolus.max_per_24h",
            "whole number",
        ),
        (
            lambda t: (
                t + "[patient_bolus]\ndose = '0.1 mg'\nduration = '10 mins'\nlockout = '2 hrs'\nmax_per_24h = 6\n"
                "lockout_min = 3\n"
            ),
            "patient_bolus.lockout_min",
            "unknown key",
        ),
        (
            lambda t: (
                t + "[patient_bolus]\ndose = '0.1 mg'\nduration = '10 mins'\nlockout = '2 hrz'\nmax_per_24h = 6\n"
            ),
            "patient_bolus.lockout",
            "hrz",
        ),
        (lambda t: t.replace('max_dose_24h = "3 mg"', 'max_dose_24h = "5000 mg"'), "limits.max_dose_24h", "too large"),
        (lambda t: t + "[[", "file", "not valid TOML"),
        (lambda t: t + "[catheter]\nvolume = '0.2 mLL'\n", "catheter.volume", "mLL"),
        (lambda t: t + "[catheter]\nlength = '40 cm'\n", "catheter.length", "unknown key"),
        (lambda t: t + "[catheter]\n", "catheter.volume", "missing"),
    ],
)
def test_bad_input_names_the_field(tmp_path, edit, field, says):
    with pytest.raises(ProgramFileError) as e:
        load_program(write(tmp_path, edit(GOOD)), 1)
    assert e.value.field == field
    assert says in e.value.message
    assert str(e.value).startswith(f"{field}: ")


def test_missing_file_is_a_file_error(tmp_path):
    with pytest.raises(ProgramFileError) as e:
        load_program(tmp_path / "nope.toml", 1)
    assert e.value.field == "file" and "nope.toml" in e.value.message


def test_pump_refusal_fields_map_back_to_file_names():
    assert file_field("bolus_dose_ng") == "patient_bolus.dose"
    assert file_field("basal[2].start_s") == "basal[2].start"
    assert file_field("basal[0].rate_ng_per_day") == "basal[0].rate"
    assert file_field("max_dose_24h_ng") == "limits.max_dose_24h"
    assert file_field("concentration_ng_per_ml") == "concentration"
    assert file_field("something_else") == "something_else"
    assert file_field("catheter_volume_nl") == "catheter.volume"


def test_the_catheter_volume_is_read_and_is_not_entered_without_the_table(tmp_path):
    assert load_program(write(tmp_path, GOOD), 1).catheter_volume_nl == 0
    text = GOOD + "[catheter]\nvolume = '0.15 mL'\n"
    assert load_program(write(tmp_path, text), 1).catheter_volume_nl == 150_000
