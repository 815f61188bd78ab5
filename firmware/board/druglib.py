"""Loading the drug library from its data file: an edge, which validates every entry and
names the one that is wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from protocol.codes import AlarmId

from ..druglib import UNITS, WITHDRAWAL, Drug, DrugLibrary
from ..rules.recovery import DEFAULTS, HOLD_ONLY, Policy

DEFAULT_LIBRARY = Path(__file__).resolve().parents[1] / "drugs.toml"
REQUIRED = ("unit", "max_concentration_ng_per_ml", "max_daily_dose_ng")
OPTIONAL = ("withdrawal", "recovery")
POLICIES = tuple(p.value for p in Policy)


class DrugLibraryError(ValueError):
    pass


def load_library(path: str | Path | None = None) -> DrugLibrary:
    p = Path(path) if path else DEFAULT_LIBRARY
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise DrugLibraryError(f"drug library {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise DrugLibraryError(f"drug library {p}: {e}") from None
    drugs = []
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise DrugLibraryError(f"drug library {p}: [{name}] must be a table")
        if not set(REQUIRED) <= set(entry) <= {*REQUIRED, *OPTIONAL}:
            raise DrugLibraryError(
                f"drug library {p}: [{name}] needs exactly {sorted(REQUIRED)} (and may have "
                f"{sorted(OPTIONAL)}), has {sorted(entry)}"
            )
        if entry["unit"] not in UNITS:
            raise DrugLibraryError(f"drug library {p}: [{name}] unit must be one of {UNITS}")
        for k in ("max_concentration_ng_per_ml", "max_daily_dose_ng"):
            v = entry[k]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**32:
                raise DrugLibraryError(f"drug library {p}: [{name}] {k} must be a positive integer below 2**32")
        if len(name.encode()) > 24:
            raise DrugLibraryError(f"drug library {p}: drug name {name!r} is longer than 24 bytes")
        withdrawal = entry.get("withdrawal", "ordinary")
        if withdrawal not in WITHDRAWAL:
            raise DrugLibraryError(
                f"drug library {p}: [{name}] withdrawal must be one of {WITHDRAWAL}, got {withdrawal!r}"
            )
        drugs.append(
            Drug(
                name,
                entry["unit"],
                entry["max_concentration_ng_per_ml"],
                entry["max_daily_dose_ng"],
                withdrawal_dangerous=withdrawal == "dangerous",
                recovery=_recovery(p, name, entry.get("recovery", {})),
            )
        )
    if not drugs:
        raise DrugLibraryError(f"drug library {p} lists no drugs")
    return DrugLibrary(tuple(drugs))


def _recovery(p: Path, name: str, table: Any) -> tuple[tuple[AlarmId, Policy], ...]:
    """`[drug.recovery]`: a high-priority alarm's name = "resume" or "hold" (rules/recovery.py)."""
    where = f"drug library {p}: [{name}.recovery]"
    if not isinstance(table, dict):
        raise DrugLibraryError(f'{where} must be a table of alarm = "resume" or "hold"')
    known = {a.name.lower(): a for a in DEFAULTS}
    out = []
    for key, value in table.items():
        alarm = known.get(key)
        if alarm is None:
            raise DrugLibraryError(f"{where}: {key!r} is not a high-priority alarm; one of {sorted(known)}")
        if value not in POLICIES:
            raise DrugLibraryError(f"{where}: {key} must be one of {POLICIES}, got {value!r}")
        policy = Policy(value)
        if policy is Policy.RESUME and alarm in HOLD_ONLY:
            raise DrugLibraryError(f'{where}: {key} can only be "hold": {HOLD_ONLY[alarm]}')
        out.append((alarm, policy))
    return tuple(out)
