"""Reading the firmware's settings from a TOML file: an edge, which names the file and the
key that is wrong."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from ..config import FirmwareConfig


def load_config(path: str | Path | None) -> FirmwareConfig:
    if path is None:
        return FirmwareConfig()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"firmware config {path}: {e}") from None
    known = {f.name for f in dataclasses.fields(FirmwareConfig)}
    for key in data:
        if key not in known:
            raise ValueError(f"firmware config {path}: unknown key {key!r}")
    return FirmwareConfig(**data)
