"""Quantities as people write them, read into the integers the protocol carries.

    parse_duration_s("10min") == 600          parse_duration_ms("1.5s") == 1500
    parse_dose_ng("0.1 mg") == 100_000        parse_dose_ng("50 mcg") == 50_000
    parse_volume_nl("500 uL") == 500_000      parse_volume_ul("2 mL") == 2_000
    parse_rate_ng_per_day("1.5 mg/day") == 1_500_000
    parse_concentration_ng_per_ml("5 mg/mL") == 5_000_000

Arithmetic is exact (Fraction): "0.1 mg" is 100000 ng, never 99999.99. A value that
does not come out a whole number of the target unit ("0.5 ng", "1.5ms" as seconds) is
an error, not a rounding. Every error is a UnitError (a ValueError) naming the text it
could not read and the units it accepts. Numbers are plain decimals (`1.5`, `.5`,
`1_000`); no sign, no exponent. Space between number and unit is optional.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "CONCENTRATION_UNITS",
    "DOSE_UNITS",
    "DURATION_UNITS",
    "RATE_UNITS",
    "VOLUME_UNITS",
    "UnitError",
    "format_concentration",
    "format_dose",
    "format_duration",
    "format_rate",
    "format_volume",
    "parse_concentration_ng_per_ml",
    "parse_dose_ng",
    "parse_duration_ms",
    "parse_duration_s",
    "parse_rate_ng_per_day",
    "parse_volume_nl",
    "parse_volume_ul",
]


class UnitError(ValueError):
    """A quantity that could not be read: names the text and the units accepted."""

    def __init__(self, text: object, what: str, accepted: str, why: str = "") -> None:
        self.text = text
        self.what = what
        self.accepted = accepted
        reason = why or "not understood"
        super().__init__(f"{what} {text!r}: {reason}; write a number and one of: {accepted}")


# Each unit's size in the base unit of its kind (ms, ng, nL). Keys are lower case; the
# micro sign (U+00B5) and Greek mu (U+03BC) both read as u.
DURATION_UNITS: dict[str, int] = {
    "ms": 1,
    "s": 1_000,
    "sec": 1_000,
    "secs": 1_000,
    "second": 1_000,
    "seconds": 1_000,
    "min": 60_000,
    "mins": 60_000,
    "minute": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hr": 3_600_000,
    "hrs": 3_600_000,
    "hour": 3_600_000,
    "hours": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
    "days": 86_400_000,
}
DOSE_UNITS: dict[str, int] = {"ng": 1, "ug": 1_000, "mcg": 1_000, "mg": 1_000_000, "g": 1_000_000_000}
VOLUME_UNITS: dict[str, int] = {"nl": 1, "ul": 1_000, "ml": 1_000_000, "l": 1_000_000_000}
RATE_UNITS = "a dose per time: mg/day, mcg/day, ug/h, ng/min ... (also mg/24h)"
CONCENTRATION_UNITS = "a dose per volume: mg/mL, mcg/mL, ug/uL, ng/mL ..."

_DURATION_HELP = "ms, s, min, h, d (e.g. 90s, 10min, 6h, 30d)"
_DOSE_HELP = "mg, mcg (= ug, µg), ng (e.g. 0.1 mg, 50 mcg)"
_VOLUME_HELP = "mL, uL (= µL), nL (e.g. 2 mL, 500 uL)"

_NUMBER = r"(?:\d[\d_]*(?:\.\d*)?|\.\d+)"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([^\s\d.][^\s]*(?:\s*/\s*[^\s]+)?)\s*$")
_MICRO = str.maketrans({"\u00b5": "u", "\u03bc": "u"})


def _split(text: object, what: str, accepted: str) -> tuple[Fraction, str]:
    if not isinstance(text, str):
        raise UnitError(text, what, accepted, "needs a unit (write it as a string)")
    m = _QUANTITY.match(text)
    if m is None:
        why = "no unit" if re.fullmatch(rf"\s*{_NUMBER}\s*", text) else "not a number followed by a unit"
        raise UnitError(text, what, accepted, why)
    number, unit = m.groups()
    if "__" in number or number.endswith("_") or "_." in number:
        raise UnitError(text, what, accepted, "badly placed '_' in the number")
    return Fraction(number.replace("_", "")), unit.translate(_MICRO).replace(" ", "")


def _unit(unit: str, table: dict[str, int], text: object, what: str, accepted: str) -> int:
    size = table.get(unit.lower())
    if size is None:
        raise UnitError(text, what, accepted, f"unknown unit {unit!r}")
    return size


def _whole(value: Fraction, text: object, what: str, accepted: str, target: str) -> int:
    if value.denominator != 1:
        raise UnitError(text, what, accepted, f"is not a whole number of {target} ({float(value):g} {target})")
    return int(value)


def _base(text: object, table: dict[str, int], what: str, accepted: str) -> Fraction:
    number, unit = _split(text, what, accepted)
    if "/" in unit:
        raise UnitError(text, what, accepted, f"unknown unit {unit!r}")
    return number * _unit(unit, table, text, what, accepted)


def parse_duration_ms(text: str) -> int:
    """'90s', '10min', '6h', '30d', '250ms' -> whole milliseconds."""
    return _whole(_base(text, DURATION_UNITS, "duration", _DURATION_HELP), text, "duration", _DURATION_HELP, "ms")


def parse_duration_s(text: str) -> int:
    """'90s', '10min', '6h', '30d' -> whole seconds."""
    ms = _base(text, DURATION_UNITS, "duration", _DURATION_HELP)
    return _whole(ms / 1000, text, "duration", _DURATION_HELP, "s")


def parse_dose_ng(text: str) -> int:
    """'0.1 mg', '50 mcg', '50 ug', '50 µg', '250 ng' -> whole ng."""
    return _whole(_base(text, DOSE_UNITS, "dose", _DOSE_HELP), text, "dose", _DOSE_HELP, "ng")


def parse_volume_nl(text: str) -> int:
    """'2 mL', '500 uL', '500 µL', '120 nL' -> whole nL."""
    return _whole(_base(text, VOLUME_UNITS, "volume", _VOLUME_HELP), text, "volume", _VOLUME_HELP, "nL")


def parse_volume_ul(text: str) -> int:
    """'2 mL', '500 uL' -> whole uL."""
    nl = _base(text, VOLUME_UNITS, "volume", _VOLUME_HELP)
    return _whole(nl / 1000, text, "volume", _VOLUME_HELP, "uL")


def _ratio(text: object, what: str, accepted: str, den_table: dict[str, int]) -> tuple[Fraction, int]:
    number, unit = _split(text, what, accepted)
    num_unit, slash, den_unit = unit.partition("/")
    if not slash or not num_unit or not den_unit:
        raise UnitError(text, what, accepted, f"unknown unit {unit!r}")
    num = _unit(num_unit, DOSE_UNITS, text, what, accepted)
    # A leading count in the denominator ("mg/24h") reads as that many of the unit.
    m = re.fullmatch(r"(\d+)?([^\d].*)", den_unit)
    count = int(m.group(1)) if m and m.group(1) else 1
    den = _unit(m.group(2) if m else den_unit, den_table, text, what, accepted) * count
    if den == 0:
        raise UnitError(text, what, accepted, "divides by zero")
    return number * num, den


def parse_rate_ng_per_day(text: str) -> int:
    """'1.5 mg/day', '62.5 mcg/h', '1 mg/24h' -> whole ng per day."""
    ng, per_ms = _ratio(text, "rate", RATE_UNITS, DURATION_UNITS)
    return _whole(ng * 86_400_000 / per_ms, text, "rate", RATE_UNITS, "ng/day")


def parse_concentration_ng_per_ml(text: str) -> int:
    """'5 mg/mL', '100 mcg/mL', '2 ug/uL' -> whole ng per mL."""
    ng, per_nl = _ratio(text, "concentration", CONCENTRATION_UNITS, VOLUME_UNITS)
    return _whole(ng * 1_000_000 / per_nl, text, "concentration", CONCENTRATION_UNITS, "ng/mL")


# ---------------------------------------------------------------- for people


def _num(value: Fraction) -> str:
    """Shortest exact decimal when there is one (up to 6 places), else 3 significant places."""
    for places in range(7):
        scaled = value * 10**places
        if scaled.denominator == 1:
            n = int(scaled)
            s = str(abs(n)).rjust(places + 1, "0")
            body = s if not places else f"{s[:-places]}.{s[-places:]}"
            return ("-" if n < 0 else "") + body
    return f"{float(value):.3g}"


def format_dose(ng: int, unit: str | None = None) -> str:
    """1500000 -> '1.5 mg', 50000 -> '50 mcg', 250 -> '250 ng'; `unit` ('mg', 'mcg', 'ng')
    forces one, e.g. the drug library's unit for the drug: format_dose(100000, 'mg') == '0.1 mg'."""
    if unit is not None:
        size = _unit(unit.translate(_MICRO), DOSE_UNITS, unit, "dose unit", _DOSE_HELP)
        return f"{_num(Fraction(ng, size))} {unit}"
    a = abs(ng)
    if a >= 1_000_000:
        return f"{_num(Fraction(ng, 1_000_000))} mg"
    if a >= 1_000:
        return f"{_num(Fraction(ng, 1_000))} mcg"
    return f"{ng} ng"


def format_volume(nl: int) -> str:
    """2000000 -> '2 mL', 500000 -> '500 uL', 120 -> '120 nL'."""
    a = abs(nl)
    if a >= 1_000_000:
        return f"{_num(Fraction(nl, 1_000_000))} mL"
    if a >= 1_000:
        return f"{_num(Fraction(nl, 1_000))} uL"
    return f"{nl} nL"


def format_rate(ng_per_day: int, unit: str | None = None) -> str:
    return f"{format_dose(ng_per_day, unit)}/day"


def format_concentration(ng_per_ml: int, unit: str | None = None) -> str:
    return f"{format_dose(ng_per_ml, unit)}/mL"


def format_duration(seconds: int) -> str:
    """600 -> '10min', 7200 -> '2h', 90 -> '90s', 5400 -> '1h 30min'."""
    if seconds == 0:
        return "0s"
    neg = seconds < 0
    s = abs(seconds)
    parts = []
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return ("-" if neg else "") + " ".join(parts)
