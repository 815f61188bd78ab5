"""tools.programfile: [[timed_bolus]] tables (issue 12, item 9); every problem names its field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from protocol.messages import TimedBolus
from tests.test_programfile import GOOD as BASE
from tests.test_programfile import write
from tools.programfile import ProgramFileError, file_field, load_program, parse_program

REPO = Path(__file__).resolve().parent.parent

# The plain therapy file of tests/test_programfile.py with one timed bolus.
GOOD = BASE.replace(
    "[limits]",
    """[[timed_bolus]]
start = "08:00"
dose = "0.25 mg"
duration = "15min"

[limits]""",
)


def test_timed_boluses_are_read_in_file_order_with_units():
    p = load_program(REPO / "examples" / "timed-boluses.toml", 1)
    assert p.timed_bolus == (
        TimedBolus(start_s=8 * 3600, dose_ng=250_000, duration_s=900),
        TimedBolus(start_s=20 * 3600, dose_ng=250_000, duration_s=900),
    )
    assert p.bolus_dose_ng == 100_000  # the patient bolus is its own table


def test_without_timed_bolus_tables_there_are_none(tmp_path):
    text = GOOD[: GOOD.index("[[timed_bolus]]")] + GOOD[GOOD.index("[limits]") :]
    assert load_program(write(tmp_path, text), 1).timed_bolus == ()


def test_eight_at_most():
    nine = "".join(f'[[timed_bolus]]\nstart = "{h:02d}:00"\ndose = "1 mcg"\nduration = "1min"\n' for h in range(9))
    with pytest.raises(ProgramFileError) as e:
        parse_program(tomllib.loads(GOOD.replace("[limits]", nine + "[limits]")), 1)
    assert e.value.field == "timed_bolus" and "at most 8 timed boluses, not 10" in e.value.message


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        (lambda t: t.replace('start = "08:00"', 'start = "8am"'), "timed_bolus[0].start", "not a time of day"),
        (lambda t: t.replace('start = "08:00"', 'start = "24:00"'), "timed_bolus[0].start", "not a time of day"),
        (lambda t: t.replace('start = "08:00"', "start = 8"), "timed_bolus[0].start", "HH:MM"),
        (lambda t: t.replace('dose = "0.25 mg"', 'dose = "0.25 mgg"'), "timed_bolus[0].dose", "mgg"),
        (lambda t: t.replace('dose = "0.25 mg"', "dose = 0.25"), "timed_bolus[0].dose", "needs a unit"),
        (lambda t: t.replace('duration = "15min"', 'duration = "15 minz"'), "timed_bolus[0].duration", "minz"),
        (lambda t: t.replace('duration = "15min"\n', ""), "timed_bolus[0].duration", "missing"),
        (
            lambda t: t.replace('duration = "15min"', 'duration = "15min"\nlockout = "1h"'),
            "timed_bolus[0].lockout",
            "unknown key",
        ),
        (lambda t: t.replace("[[timed_bolus]]", "[timed_bolus]"), "timed_bolus", "[[timed_bolus]] tables"),
    ],
)
def test_bad_timed_bolus_names_the_field(tmp_path, edit, field, says):
    with pytest.raises(ProgramFileError) as e:
        load_program(write(tmp_path, edit(GOOD)), 1)
    assert e.value.field == field
    assert says in e.value.message


def test_pump_refusals_of_a_timed_bolus_map_back_to_file_names():
    assert file_field("timed_bolus[1].dose_ng") == "timed_bolus[1].dose"
    assert file_field("timed_bolus[0].start_s") == "timed_bolus[0].start"
    assert file_field("timed_bolus[7].duration_s") == "timed_bolus[7].duration"
    assert file_field("timed_bolus") == "timed_bolus"
