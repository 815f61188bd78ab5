"""Loading the drug library from its data file: an edge, which validates every entry and
names the one that is wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..druglib import UNITS, Drug, DrugLibrary

DEFAULT_LIBRARY = Path(__file__).resolve().parents[1] / "drugs.toml"


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
        keys = {"unit", "max_concentration_ng_per_ml", "max_daily_dose_ng"}
        if set(entry) != keys:
            raise DrugLibraryError(f"drug library {p}: [{name}] needs exactly {sorted(keys)}, has {sorted(entry)}")
        if entry["unit"] not in UNITS:
            raise DrugLibraryError(f"drug library {p}: [{name}] unit must be one of {UNITS}")
        for k in ("max_concentration_ng_per_ml", "max_daily_dose_ng"):
            v = entry[k]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**32:
                raise DrugLibraryError(f"drug library {p}: [{name}] {k} must be a positive integer below 2**32")
        if len(name.encode()) > 24:
            raise DrugLibraryError(f"drug library {p}: drug name {name!r} is longer than 24 bytes")
        drugs.append(Drug(name, entry["unit"], entry["max_concentration_ng_per_ml"], entry["max_daily_dose_ng"]))
    if not drugs:
        raise DrugLibraryError(f"drug library {p} lists no drugs")
    return DrugLibrary(tuple(drugs))
