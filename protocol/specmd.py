"""Markdown building blocks for SPEC.md: headings' anchors, links, tables, hex dumps.

Shared by the protocol's own chapters (protocol/spec.py, protocol/spec_types.py) and the
chapters the host side generates from the firmware and the emulator (tools/spec*.py), so
every table in the document is written the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def anchor(heading: str) -> str:
    """The id GitHub gives a heading (lower case, punctuation dropped, spaces to '-')."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def link(text: str, heading: str | None = None) -> str:
    return f"[{text}](#{anchor(heading if heading is not None else text)})"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(str(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def hex_bytes(data: bytes, group: int = 1) -> str:
    return " ".join(data[i : i + group].hex() for i in range(0, len(data), group))


def hex_block(data: bytes, per_line: int = 32) -> str:
    lines = [hex_bytes(data[i : i + per_line]) for i in range(0, len(data), per_line)] or [""]
    return "```\n" + "\n".join(lines) + "\n```"
