"""tools.units: quantities as people write them, read exactly into protocol integers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools import units
from tools.units import UnitError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10min", 600), ("6h", 21_600), ("30d", 2_592_000), ("1.5 min", 90), ("2 hours", 7_200), ("0s", 0)],
)
def test_durations_in_seconds(text, seconds):
    assert units.parse_duration_s(text) == seconds


def test_durations_in_ms_take_fractions_of_a_second():
    assert units.parse_duration_ms("1.5s") == 1_500
    assert units.parse_duration_ms("250ms") == 250
    assert units.parse_duration_ms("10min") == 600_000


@pytest.mark.parametrize(
    ("text", "ng"),
    [
        ("0.1 mg", 100_000),
        ("50 mcg", 50_000),
        ("50 ug", 50_000),
        ("50 µg", 50_000),  # micro sign U+00B5
        ("50 \u03bcg", 50_000),  # Greek mu
        ("50ug", 50_000),
        ("250 ng", 250),
        ("3 mg", 3_000_000),
        ("1_000 mcg", 1_000_000),
        (".5 mg", 500_000),
    ],
)
def test_doses_in_ng(text, ng):
    assert units.parse_dose_ng(text) == ng


@pytest.mark.parametrize(
    ("text", "nl"), [("2 mL", 2_000_000), ("500 uL", 500_000), ("500 µL", 500_000), ("120 nL", 120)]
)
def test_volumes(text, nl):
    assert units.parse_volume_nl(text) == nl


def test_volume_in_ul_must_be_whole():
    assert units.parse_volume_ul("2 mL") == 2_000
    assert units.parse_volume_ul("12.5 mL") == 12_500
    with pytest.raises(UnitError, match="whole number of uL"):
        units.parse_volume_ul("1.5 uL")


def test_rates_and_concentrations():
    assert units.parse_rate_ng_per_day("1.5 mg/day") == 1_500_000
    assert units.parse_rate_ng_per_day("1.0 mg / day") == 1_000_000
    assert units.parse_rate_ng_per_day("1 mg/24h") == 1_000_000
    assert units.parse_rate_ng_per_day("0.1 mg/h") == 2_400_000
    assert units.parse_concentration_ng_per_ml("5 mg/mL") == 5_000_000
    assert units.parse_concentration_ng_per_ml("100 mcg/mL") == 100_000
    assert units.parse_concentration_ng_per_ml("2 ug/uL") == 2_000_000


def test_arithmetic_is_exact_where_floats_are_not():
    # 0.1 * 3 and 1.1 mg are classic float traps; 0.29 * 100 != 29 in binary floating point.
    assert units.parse_dose_ng("0.3 mg") == 300_000
    assert units.parse_dose_ng("1.1 mg") == 1_100_000
    assert units.parse_dose_ng("0.000029 mg") == 29
    assert units.parse_rate_ng_per_day("0.29 mg/day") == 290_000


@given(st.integers(min_value=0, max_value=10**12))
def test_dose_format_parses_back(ng):
    assert units.parse_dose_ng(units.format_dose(ng)) == ng


@given(st.integers(min_value=0, max_value=10**12))
def test_volume_format_parses_back(nl):
    assert units.parse_volume_nl(units.format_volume(nl)) == nl


@pytest.mark.parametrize(
    ("parse", "text", "says"),
    [
        (units.parse_duration_s, "10 mn", "unknown unit 'mn'"),
        (units.parse_duration_s, "10", "no unit"),
        (units.parse_duration_s, "1.5ms", "whole number of s"),
        (units.parse_duration_s, "-5s", "not a number"),
        (units.parse_dose_ng, "0.1 mgs", "unknown unit 'mgs'"),
        (units.parse_dose_ng, "0.5 ng", "whole number of ng"),
        (units.parse_dose_ng, "1e3 ng", "not a number followed by a unit"),
        (units.parse_dose_ng, "1 mL", "unknown unit 'mL'"),
        (units.parse_volume_nl, "2 mg", "unknown unit 'mg'"),
        (units.parse_rate_ng_per_day, "1.5 mg", "unknown unit 'mg'"),
        (units.parse_rate_ng_per_day, "1.5 mg/fortnight", "unknown unit"),
        (units.parse_concentration_ng_per_ml, "5 mg/day", "unknown unit"),
        (units.parse_dose_ng, 5, "needs a unit"),
    ],
)
def test_a_typo_names_the_text_and_the_accepted_units(parse, text, says):
    with pytest.raises(UnitError) as e:
        parse(text)
    msg = str(e.value)
    assert says in msg
    assert repr(text) in msg
    assert "write a number and one of" in msg
    assert isinstance(e.value, ValueError)


def test_formatting_for_people():
    assert units.format_dose(1_500_000) == "1.5 mg"
    assert units.format_dose(100_000, "mg") == "0.1 mg"
    assert units.format_dose(50_000) == "50 mcg"
    assert units.format_volume(12_000_000) == "12 mL"
    assert units.format_rate(1_500_000) == "1.5 mg/day"
    assert units.format_concentration(5_000_000) == "5 mg/mL"
    assert units.format_duration(5_400) == "1h 30min"
    assert units.format_duration(0) == "0s"
