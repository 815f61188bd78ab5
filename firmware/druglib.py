"""The drug library: which drugs may be programmed and their ceilings.

Loaded once at start from a data file (firmware/drugs.toml by default), never from code
constants, so a site can edit it; loading it is the board's (firmware/board/druglib.py),
and the controller is handed the library.
"""

from __future__ import annotations

from dataclasses import dataclass

UNITS = ("mg", "mcg")


@dataclass(frozen=True)
class Drug:
    name: str
    unit: str
    max_concentration_ng_per_ml: int
    max_daily_dose_ng: int


@dataclass(frozen=True)
class DrugLibrary:
    drugs: tuple[Drug, ...]

    def get(self, name: str) -> Drug | None:
        for d in self.drugs:
            if d.name == name:
                return d
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.drugs)
