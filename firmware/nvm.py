"""Non-volatile memory as the controller sees it: records that outlive a reset.

This is the interface and an in-memory store (it survives a controller object being
replaced, which is what a power cycle of the in-process firmware does). The file-backed
store with two slots per record, generations and CRCs is issue 5's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Protocol


class Nvm(Protocol):
    def load(self) -> dict[str, Any] | None: ...

    def save(self, record: str, value: Any) -> None: ...

    def save_items(self, record: str, items: dict[str, Any], drop: Iterable[str] = ()) -> None:
        """Update some keys of a map record and remove the keys in `drop`."""
        ...


class MemoryNvm:
    def __init__(self) -> None:
        self.records: dict[str, Any] = {}
        self.writes = 0

    def load(self) -> dict[str, Any] | None:
        return copy.deepcopy(self.records) if self.records else None

    def save(self, record: str, value: Any) -> None:
        # Callers pass fresh values (to_data() copies), so no copy is taken here: the
        # controller saves after every stroke and a deepcopy would dominate the cost.
        self.records[record] = value
        self.writes += 1

    def save_items(self, record: str, items: dict[str, Any], drop: Iterable[str] = ()) -> None:
        m = self.records.setdefault(record, {})
        m.update(items)
        for k in drop:
            m.pop(k, None)
        self.writes += 1
