"""The controller's NVM as a file laid out as flash would be (firmware/nvm.py names the
records; this is the medium).

Every record has two fixed slots, each holding a generation number, a length, the value
and a CRC-32. Writes are grouped into commits. Every slot written during a commit
carries that commit's number as its generation; the commit ends by writing the
superblock (itself two slots) with the new commit number and the generation each record
now has. On load a slot counts only if its CRC holds and its generation is not above the
committed number, so a process killed at any instant, even part-way through a slot,
leaves every record as it was after the previous commit or after the new one, never a
mixture and never neither. Slots of a commit that never finished are erased at load, so
their generation cannot become valid when the numbering reaches it again.

The file's blocks are allocated when it is opened (posix_fallocate), not left sparse: a
write through the mapping into a hole on a full filesystem would be a SIGBUS, killing
the process mid-commit, where an allocation refused at open is a clear error at start.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..history import BUCKETS
from ..nvm import RING_HISTORY, RING_LOG, SCALARS, NvmError, NvmFault

# Disks and flash translation layers write a 512-byte sector whole or not at all. A ring
# slot never straddles a sector (each region starts on one, slot sizes divide it), so a
# power loss cannot tear one; larger records are covered by the superblock's generations.
SECTOR = 512

NVM_FILE = "firmware-nvm.bin"  # in the state directory
MAGIC = b"THECAL-NVM"
FORMAT = 2  # 2: a binary superblock, and the records of firmware/nvm.py since issue 11
SUPER_SLOT = 1024
_HEAD = struct.Struct("<IH")  # generation, payload length
_CRC = struct.Struct("<I")
# The superblock, written at every commit: magic, layout fingerprint, the commit number,
# then each scalar record's generation (0: never written). Binary, so a commit costs no
# JSON encoding of the generation table.
N_SCALARS = len(SCALARS)
_SUPER = struct.Struct(f"<10s8sI{N_SCALARS}I")
SLOT_A, SLOT_B = 1, 2


def _pack(gen: int, payload: bytes, size: int) -> bytes:
    body = _HEAD.pack(gen, len(payload)) + payload
    if len(body) + _CRC.size > size:
        raise NvmError(f"{len(payload)} bytes do not fit a {size}-byte slot")
    return body + _CRC.pack(zlib.crc32(body))


def _unpack(raw: bytes) -> tuple[int, bytes | None] | None:
    """(generation, payload); None for a blank (never written or erased) slot. A damaged
    slot gives payload None with whatever generation its header shows."""
    if not raw.strip(b"\0"):
        return None
    gen, n = _HEAD.unpack_from(raw)
    end = _HEAD.size + n
    if end + _CRC.size > len(raw) or zlib.crc32(raw[:end]) != _CRC.unpack_from(raw, end)[0]:
        return gen, None
    return gen, raw[_HEAD.size : end]


def _dumps(value: Any) -> bytes:
    """JSON, with fast paths for what is written at every stroke: an integer, and a short
    list of integers (a history minute)."""
    t = type(value)
    if t is int:
        return str(value).encode()
    if value is None:
        return b"null"
    if t is list and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return f"[{value[0]},{value[1]}]".encode()
    return _ENCODER.encode(value).encode()


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps builds one per call


@dataclass(frozen=True)
class _Region:
    name: str
    record_id: int
    offset: int
    slot_size: int
    positions: int  # 1 for a scalar record

    def slot_offset(self, position: int, slot: int) -> int:
        return self.offset + (position * 2 + slot) * self.slot_size

    @property
    def end(self) -> int:
        return self.offset + self.positions * 2 * self.slot_size


def layout(log_capacity: int) -> tuple[_Region, dict[str, _Region], str]:
    """The superblock region, every record's region, and a fingerprint of the layout."""
    sup = _Region("superblock", 0, 0, SUPER_SLOT, 1)
    regions: dict[str, _Region] = {}
    off = sup.end
    for rid, (name, size) in enumerate(SCALARS):
        if rid == 0:
            continue
        regions[name] = _Region(name, rid, off, size, 1)
        off = regions[name].end
    for name, rid, size, n in ((*RING_HISTORY, BUCKETS), (*RING_LOG, log_capacity)):
        off = -(-off // SECTOR) * SECTOR
        regions[name] = _Region(name, rid, off, size, n)
        off = regions[name].end
    fingerprint = ";".join(f"{r.name}:{r.record_id}:{r.slot_size}:{r.positions}" for r in regions.values())
    return sup, regions, f"{FORMAT:02d}{zlib.crc32(fingerprint.encode()) & 0xFFFFFF:06x}"


class NvmFileError(OSError):
    """The NVM file cannot be created or opened: one line naming it, the error and what to do."""


def _refused(path: Path, e: OSError) -> NvmFileError:
    what = {
        errno.ENOSPC: "free space on its filesystem",
        errno.EDQUOT: "free space within the disk quota",
        errno.EROFS: "use a writable state directory",
        errno.EACCES: "make it writable by this user",
        errno.EPERM: "make it writable by this user",
    }.get(e.errno or 0, "check the disk")
    err = NvmFileError(f"cannot open the firmware's NVM file {path} ({e.strerror or e}): {what}")
    err.errno = e.errno
    return err


class FileNvm:
    """The two-slot store in one file (created zero-filled, as erased flash)."""

    def __init__(self, path: str | Path, log_capacity: int = 10_000, durable: bool = False) -> None:
        self.path = Path(path)
        self.durable = durable  # fsync at each commit: survives power loss of the host, not only a kill
        self._super, self._regions, self._layout = layout(log_capacity)
        self._layout_tag = self._layout.encode()
        self._size = max(r.end for r in self._regions.values())
        self._fd = -1
        existed = self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            # As erased flash: zeros (a short file is padded), every block allocated now.
            os.posix_fallocate(self._fd, 0, self._size)
            # Written through a shared mapping, as firmware writes flash through its
            # controller: a slot costs a memory copy, not a system call, and the page cache
            # holds it through a SIGKILL exactly as it holds a pwrite.
            self._mm = mmap.mmap(self._fd, self._size)
        except OSError as e:
            self.close()
            if not existed:  # a file of zeros left behind would read as a firmware that has run
                try:
                    self.path.unlink()
                except OSError:
                    pass
            raise _refused(self.path, e) from None
        self.committed = 0
        self._gens = [0] * N_SCALARS  # by scalar record id: generation of its committed copy (0: none)
        self._current: dict[tuple[int, int], int] = {}  # (record id, position) -> slot holding it
        self._pending: dict[tuple[int, int], int] = {}  # written in the open commit -> slot
        self._payloads: dict[tuple[int, int], bytes] = {}  # what each committed copy holds
        self._staged: dict[tuple[int, int], bytes] = {}
        self._faults: list[NvmFault] = []
        self._super_slot = 1  # the next superblock write goes to the other one
        self.writes = 0

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None and not mm.closed:
            mm.close()
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def faults(self) -> list[NvmFault]:
        return list(self._faults)

    # ------------------------------------------------------------ load

    def load(self) -> dict[str, Any] | None:
        """Read every record afresh from the file (nothing is kept from before)."""
        self._faults = []
        self._current.clear()
        self._pending.clear()
        self._payloads.clear()
        self._staged.clear()
        self._gens = [0] * N_SCALARS
        image = self._mm[:]
        if not image.strip(b"\0"):
            self.committed = 0
            return None
        self._super_damaged = False
        self._uncommitted = False
        sup = self._load_super(image)
        if sup is None:
            # Without a superblock nothing can be told committed from torn: trust no record,
            # but keep the log's numbering above every number it may have shown.
            self.committed = 0
            self._faults.append(NvmFault("superblock", 0, SLOT_A | SLOT_B, True))
            floor = self._highest_log_seq(image) + 1
            self._erase_all()
            return {"log": {"next_seq": floor}} if floor > 1 else None
        self.committed = sup[0]
        self._gens = list(sup[1])
        out: dict[str, Any] = {}
        stale: list[tuple[int, int]] = []
        for reg in self._regions.values():
            if reg.positions == 1:
                self._load_scalar(image, reg, out, stale)
            else:
                self._load_ring(image, reg, out, stale)
        if self._super_damaged:
            # Torn by a commit that never finished, or an older copy gone bad: either way the
            # surviving copy is the last finished commit. (The newest copy going bad later
            # would look the same and roll back one commit; it is logged, not hidden.)
            self._faults.append(NvmFault("superblock", 0, SLOT_A | SLOT_B, False))
        for off, size in stale:
            self._erase(off, size)
        return out

    def _highest_log_seq(self, image: bytes) -> int:
        reg = self._regions["log_entries"]
        best = 0
        for pos in range(reg.positions):
            for slot in (0, 1):
                off = reg.slot_offset(pos, slot)
                got = _unpack(image[off : off + reg.slot_size])
                if got is not None and got[1] is not None:
                    try:
                        best = max(best, int(json.loads(got[1])[0]))
                    except (ValueError, TypeError, IndexError):
                        pass
        return best

    def _load_super(self, image: bytes) -> tuple[int, tuple[int, ...]] | None:
        """(commit number, generation of each scalar record) of the newest good copy."""
        best = None
        layout_tag = self._layout.encode()
        for slot in (0, 1):
            off = self._super.slot_offset(0, slot)
            got = _unpack(image[off : off + SUPER_SLOT])
            if got is None:
                continue
            if got[1] is None:
                self._super_damaged = True
                continue
            if len(got[1]) != _SUPER.size:
                continue
            magic, tag, commit, *gens = _SUPER.unpack(got[1])
            if magic != MAGIC or tag != layout_tag:
                continue
            if best is None or commit > best[1][0]:
                best = (slot, (commit, tuple(gens)))
        if best is None:
            return None
        self._super_slot = best[0]
        return best[1]

    def _read_slots(self, image: bytes, reg: _Region, pos: int, stale: list):
        """Both slots of one position: [(slot, gen, payload)] valid and committed, and a
        mask of damaged ones. Slots a finished commit never covered are queued for erasure."""
        good, bad = [], 0
        for slot in (0, 1):
            off = reg.slot_offset(pos, slot)
            got = _unpack(image[off : off + reg.slot_size])
            if got is None:
                continue
            gen, payload = got
            if gen > self.committed:
                # Written by a commit that never finished (torn or whole): not a record.
                stale.append((off, reg.slot_size))
                self._uncommitted = True
                continue
            if payload is None:
                bad |= 1 << slot
                continue
            good.append((slot, gen, payload))
        return good, bad

    def _load_scalar(self, image: bytes, reg: _Region, out: dict, stale: list) -> None:
        good, bad = self._read_slots(image, reg, 0, stale)
        want = self._gens[reg.record_id] or None
        hit = next((g for g in good if g[1] == want), None)
        if want is not None and hit is None:
            # The newest committed copy is gone; an older one would be a silent rollback.
            self._faults.append(NvmFault(reg.name, reg.record_id, bad or SLOT_A | SLOT_B, True))
            for slot in (0, 1):
                if bad & (1 << slot):  # holds nothing usable: erased, so the next boot is clean
                    stale.append((reg.slot_offset(0, slot), reg.slot_size))
            return
        if bad:
            self._faults.append(NvmFault(reg.name, reg.record_id, bad, False))
        if hit is not None:
            out[reg.name] = json.loads(hit[2])
            self._current[(reg.record_id, 0)] = hit[0]
            self._payloads[(reg.record_id, 0)] = hit[2]
            self._repair(reg, 0, bad, hit)

    def _load_ring(self, image: bytes, reg: _Region, out: dict, stale: list) -> None:
        entries: dict[str, Any] = {}
        critical = reg.name == "history"
        for pos in range(reg.positions):
            base = reg.slot_offset(pos, 0)
            if not image[base : base + 2 * reg.slot_size].strip(b"\0"):
                continue
            good, bad = self._read_slots(image, reg, pos, stale)
            if bad:
                self._faults.append(NvmFault(reg.name, reg.record_id, bad, critical, pos))
            if not good:
                for slot in (0, 1):
                    if bad & (1 << slot):
                        stale.append((reg.slot_offset(pos, slot), reg.slot_size))
                continue
            hit = max(good, key=lambda g: g[1])
            key, value = json.loads(hit[2])
            self._current[(reg.record_id, pos)] = hit[0]
            self._payloads[(reg.record_id, pos)] = hit[2]
            self._repair(reg, pos, bad, hit)
            if value is not None:
                entries[str(key)] = value
        out[reg.name] = entries

    def _repair(self, reg: _Region, pos: int, bad: int, hit: tuple[int, int, bytes]) -> None:
        """Copy the good copy over a damaged twin, with the same generation: valid at once,
        and the next write still goes to the slot not holding the current value."""
        slot, gen, payload = hit
        other = 1 - slot
        if bad & (1 << other):
            self._pwrite(_pack(gen, payload, reg.slot_size), reg.slot_offset(pos, other))

    def _pwrite(self, data: bytes, offset: int) -> None:
        self._mm[offset : offset + len(data)] = data

    def _sync(self) -> None:
        self._mm.flush()
        os.fsync(self._fd)

    def _erase(self, offset: int, size: int) -> None:
        self._pwrite(b"\0" * size, offset)

    def _erase_all(self) -> None:
        self._mm[:] = bytes(self._size)

    # ------------------------------------------------------------ save

    def _write(self, reg: _Region, pos: int, payload: bytes) -> None:
        key = (reg.record_id, pos)
        if key not in self._pending and self._payloads.get(key) == payload:
            return  # the committed copy already says this: a write would only wear the medium
        self._staged[key] = payload
        slot = self._pending.get(key)
        if slot is None:
            slot = 1 - self._current.get(key, 1)  # never the slot holding the committed copy
            self._pending[key] = slot
        self._pwrite(_pack(self.committed + 1, payload, reg.slot_size), reg.slot_offset(pos, slot))
        self.writes += 1

    def save(self, record: str, value: Any) -> None:
        reg = self._regions[record]
        self._write(reg, 0, _dumps(value))

    def save_items(self, record: str, items: dict[Any, Any], drop: Iterable[Any] = ()) -> None:
        reg = self._regions[record]
        n = reg.positions
        written = set()
        for k, v in items.items():
            k = int(k)
            self._write(reg, k % n, _dumps([k, v]))
            written.add(k % n)
        for k in drop:
            k = int(k)
            if k % n not in written:
                self._write(reg, k % n, _dumps([k, None]))

    def commit(self) -> None:
        if not self._pending:
            return
        gen = self.committed + 1
        gens = self._gens
        for rid, _pos in self._pending:
            if rid < N_SCALARS:
                gens[rid] = gen
        sup = _SUPER.pack(MAGIC, self._layout_tag, gen, *gens)
        self._super_slot = 1 - self._super_slot
        if self.durable:
            self._sync()  # the records reach the medium before the superblock names them
        self._pwrite(_pack(gen, sup, SUPER_SLOT), self._super.slot_offset(0, self._super_slot))
        if self.durable:
            self._sync()
        self.committed = gen
        self._current.update(self._pending)
        self._payloads.update(self._staged)
        self._pending.clear()
        self._staged.clear()
