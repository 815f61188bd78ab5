"""The drug library: which drugs may be programmed and their ceilings, whether stopping
a drug is dangerous, and how therapy recovers from a fault with each.

Loaded once at start from a data file (firmware/drugs.toml by default), never from code
constants, so a site can edit it; loading it is the board's (firmware/board/druglib.py),
and the controller is handed the library.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import AlarmId

from .rules.recovery import DEFAULTS, Policy

UNITS = ("mg", "mcg")
WITHDRAWAL = ("ordinary", "dangerous")  # `withdrawal = "dangerous"`: the stopped-pump reminder is medium


@dataclass(frozen=True)
class Drug:
    name: str
    unit: str
    max_concentration_ng_per_ml: int
    max_daily_dose_ng: int
    withdrawal_dangerous: bool = False  # an abrupt stop can be life-threatening (baclofen)
    recovery: tuple[tuple[AlarmId, Policy], ...] = ()  # the library's policies where not the default

    def policy(self, alarm: AlarmId) -> Policy:
        """The recovery policy of a high-priority alarm with this drug (rules/recovery.py)."""
        for a, p in self.recovery:
            if a is alarm:
                return p
        return DEFAULTS.get(alarm, Policy.HOLD)


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
