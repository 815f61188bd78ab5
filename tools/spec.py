"""`thecal spec`: protocol/SPEC.md and protocol/vectors.json, generated and checked.

The protocol package renders what it defines itself (protocol/spec.py); the chapters
that come from the firmware and the emulator (the therapy states, the drug library, the
alarms, the pump-link timing) are generated here on the host side, which may import
them, and handed to it. `make spec` runs `thecal spec --write`; a test fails when the
committed files differ from what this renders now.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol import spec as protocol_spec
from protocol.vectors import VECTORS_PATH, build_vectors, render_vectors

from . import spec_driven, spec_firmware

ROOT = protocol_spec.HERE.parent
SPEC_PATH = protocol_spec.SPEC_PATH
__all__ = ["SPEC_PATH", "VECTORS_PATH", "main", "render", "stale_files"]


def chapters() -> dict[str, Callable[[], str]]:
    """The placeholders of spec_template.md that the host side fills: from the firmware's
    and the emulator's declarations, and from driving the firmware. A name both define is
    an error, as is one the protocol defines too."""
    declared, driven = spec_firmware.chapters(), spec_driven.chapters()
    both = declared.keys() & driven.keys()
    if both:
        raise KeyError(f"chapters defined twice: {sorted(both)}")
    return {**declared, **driven}


def render(vectors: list[dict[str, Any]] | None = None) -> str:
    """The whole of SPEC.md."""
    return protocol_spec.render_spec(vectors, chapters())


def _outputs() -> dict[Path, str]:
    vectors = build_vectors()
    return {SPEC_PATH: render(vectors), VECTORS_PATH: render_vectors(vectors)}


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _stale(outputs: dict[Path, str]) -> list[Path]:
    return [p for p, text in outputs.items() if not p.exists() or p.read_bytes() != text.encode("utf-8")]


def stale_files() -> list[Path]:
    """Committed files that differ from what the code generates now."""
    return _stale(_outputs())


def main(write: bool = False, check: bool = False) -> int:
    """Print SPEC.md; --write rewrites SPEC.md and vectors.json; --check exits 1 if stale."""
    outputs = _outputs()
    if write:
        for path, text in outputs.items():
            data = text.encode("utf-8")
            if path.exists() and path.read_bytes() == data:
                print(f"{_rel(path)} is up to date")
            else:
                path.write_bytes(data)
                print(f"wrote {_rel(path)}")
        return 0
    if check:
        stale = _stale(outputs)
        for p in stale:
            print(f"{_rel(p)} is stale: run `thecal spec --write`", file=sys.stderr)
        if not stale:
            print("protocol/SPEC.md and protocol/vectors.json are up to date")
        return 1 if stale else 0
    sys.stdout.write(outputs[SPEC_PATH])
    return 0
