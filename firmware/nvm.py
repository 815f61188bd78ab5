"""Non-volatile memory as the controller sees it: records that outlive a reset.

The controller is handed a store with the Nvm interface: MemoryNvm (here) for unit tests
and the fast in-process benchmark, or the file laid out as flash would be
(firmware/board/filenvm.py) on a real run. What goes in each record is
firmware/persist.py's business; this module names the records and bounds their size.

Corruption found at load is reported as an NvmFault. It is critical when the newest
committed copy of a record is lost (the other slot would roll the record back without
anyone knowing), or when a delivery-history minute cannot be read, since an
under-counted history could let the 24 h limit be exceeded; the controller then raises
the memory-error alarm and stays halted. A bad copy that was already superseded costs
nothing and is only logged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


class Nvm(Protocol):
    def load(self) -> dict[str, Any] | None: ...

    def save(self, record: str, value: Any) -> None: ...

    def save_items(self, record: str, items: dict[Any, Any], drop: Iterable[Any] = ()) -> None:
        """Update some keys of a map record and remove the keys in `drop`. Keys are
        integers, or their decimal strings (a store gives either back)."""
        ...

    def commit(self) -> None:
        """Make everything saved since the last commit durable, all of it or none."""
        ...

    def faults(self) -> list[NvmFault]:
        """What the last load() found damaged."""
        ...


@dataclass(frozen=True)
class NvmFault:
    record: str
    record_id: int
    slots: int  # bit 0: slot A bad, bit 1: slot B bad
    critical: bool
    position: int = 0  # which entry of a ring record


class NvmError(Exception):
    """A value does not fit its record's slot (a bug: records are bounded)."""


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

    def save_items(self, record: str, items: dict[Any, Any], drop: Iterable[Any] = ()) -> None:
        m = self.records.setdefault(record, {})
        m.update(items)
        for k in drop:
            m.pop(k, None)
        self.writes += 1

    def commit(self) -> None:
        pass

    def faults(self) -> list[NvmFault]:
        return []


# ---------------------------------------------------------------- the records

# Scalar records: (name, slot size in bytes). Ids are positions in this tuple and appear
# in NVM_ERROR log entries, so only ever append. Sizes bound each value (24 basal steps,
# 64 bolus starts, 32 command ids, 9 runs ...) with room to spare.
SCALARS: tuple[tuple[str, int], ...] = (
    ("superblock", 0),  # id 0 is the superblock itself
    # the therapy state, what a halt or refill returns to, and the stopped-pump reminder's count
    ("state", 64),
    ("prescription", 2048),
    # basal owed, reservoir, catheter, bolus, odometer, the runs commanded, and the clock:
    # the latest controller and local time committed, its skew and the clock offset
    ("delivery", 2048),
    ("boot", 32),  # the hardware's boot count at the last boot
    ("fill", 128),  # what the last fill put in the reservoir
    ("bolus_starts", 1536),
    ("alarms", 1024),
    ("log", 64),
    ("limits", 768),  # the patient-bolus lockout and the command ids accepted
    ("auth_counters", 256),
    ("keys", 512),
    ("auth_lockouts", 512),  # retired: keys are never locked out (SR-055); kept, never written, so ids stay
    ("timed", 32),  # the local time of the latest timed bolus dealt with (SR-053)
)
SCALAR_IDS = {name: i for i, (name, _) in enumerate(SCALARS)}
# Ring records: (name, id, slot size). An entry's position is its key modulo the ring's
# length; the key is stored in the slot, so a position reused by a later key is told apart.
RING_HISTORY = ("history", 100, 64)
RING_LOG = ("log_entries", 101, 128)
