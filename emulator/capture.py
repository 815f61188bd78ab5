"""Capture of every frame on both links to a pcap file Wireshark opens.

Link type DLT_USER0 (147). Each record's pcap timestamp is the *simulated* time, so a
lockstep run is reproducible to the byte; the pseudo-header carries the wall time as well
(zero when wall time is switched off for bit-for-bit comparisons).

Record data: pseudo-header (16 bytes, little-endian) then the frame body (before COBS):
    version u8 (1) | link u8 (1 host, 2 pump) | direction u8 | flags u8 (0)
    | sim_time_ms u32 (low 32 bits; the full value is in the pcap timestamp) | wall_time_us u64
direction: 0 host -> pump, 1 pump -> host, 2 controller -> pump, 3 pump -> controller.

Records are kept in memory and written whole (at flush(), which the emulator calls at
each periodic save, or when BUFFER_BYTES have gathered). A write the filesystem refuses
(full, read-only) is never an exception in the middle of the simulation: the file is cut
back to its last whole record, the records wait in memory (up to HOLD_BYTES, then new
ones are dropped and counted) and the error is returned by flush() for the emulator to
report; the next flush() tries again.
"""

from __future__ import annotations

import os
import struct
import time
from enum import IntEnum
from pathlib import Path

LINKTYPE_USER0 = 147
PCAP_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")
PSEUDO_HEADER = struct.Struct("<BBBBIQ")
PSEUDO_VERSION = 1
SNAPLEN = 65535
BUFFER_BYTES = 1 << 16  # written once this much has gathered
HOLD_BYTES = 64 << 20  # kept in memory while the file cannot be written; beyond, dropped


class Link(IntEnum):
    HOST = 1
    PUMP = 2


class Direction(IntEnum):
    HOST_TO_PUMP = 0
    PUMP_TO_HOST = 1
    CONTROLLER_TO_PUMP = 2
    PUMP_TO_CONTROLLER = 3


class Capture:
    def __init__(self, path: str | Path | None, wall_time: bool = True) -> None:
        self.path = Path(path) if path else None
        self.wall_time = wall_time
        self.records = 0
        self.dropped = 0  # records dropped while the file could not be written
        self.error: OSError | None = None  # the last write's failure (None: it worked)
        self._fd = -1
        self._pending = bytearray()
        self._written = 0  # bytes of whole records in the file
        if self.path is not None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._pending += PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_USER0)
            self.flush()

    def frame(self, link: Link, direction: Direction, sim_ms: int, body: bytes) -> None:
        if self._fd < 0:
            return
        if len(self._pending) >= HOLD_BYTES:
            self.dropped += 1
            return
        wall_us = time.time_ns() // 1000 if self.wall_time else 0
        data = PSEUDO_HEADER.pack(PSEUDO_VERSION, link, direction, 0, sim_ms & 0xFFFFFFFF, wall_us) + body
        sec, ms = divmod(sim_ms, 1000)
        self._pending += RECORD_HEADER.pack(sec & 0xFFFFFFFF, ms * 1000, len(data), len(data))
        self._pending += data
        self.records += 1
        if len(self._pending) >= BUFFER_BYTES and self.error is None:
            self.flush()

    def flush(self) -> OSError | None:
        """Write what has gathered; the error if the filesystem refused it (kept to retry)."""
        if self._fd < 0 or not self._pending:
            return self.error if self._fd >= 0 else None
        data = bytes(self._pending)
        try:
            done = 0
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as e:
            # Part of it may be in the file: cut back to whole records, keep it all to retry.
            self.error = e
            try:
                os.ftruncate(self._fd, self._written)
                os.lseek(self._fd, self._written, os.SEEK_SET)
            except OSError:
                pass
            return e
        self._written += len(self._pending)
        self._pending.clear()
        self.error = None
        return None

    def close(self) -> OSError | None:
        """Write what is left and close; the error if it could not be written."""
        if self._fd < 0:
            return None
        error = self.flush()
        os.close(self._fd)
        self._fd = -1
        return error


def read_capture(path: str | Path) -> list[dict]:
    """Records of a capture file (for tests and `thecal decode`)."""
    out = []
    with open(path, "rb") as f:
        head = f.read(PCAP_HEADER.size)
        magic, *_rest, linktype = PCAP_HEADER.unpack(head)
        if magic != 0xA1B2C3D4 or linktype != LINKTYPE_USER0:
            raise ValueError(f"{path} is not a Thecal capture")
        while rec := f.read(RECORD_HEADER.size):
            sec, usec, incl, _orig = RECORD_HEADER.unpack(rec)
            data = f.read(incl)
            _v, link, direction, _flags, _sim_lo, wall_us = PSEUDO_HEADER.unpack_from(data)
            out.append(
                {
                    "sim_ms": sec * 1000 + usec // 1000,
                    "wall_us": wall_us,
                    "link": Link(link),
                    "direction": Direction(direction),
                    "body": data[PSEUDO_HEADER.size :],
                }
            )
    return out
