"""Capture of every frame on both links to a pcap file Wireshark opens.

Link type DLT_USER0 (147). Each record's pcap timestamp is the *simulated* time, so a
lockstep run is reproducible to the byte; the pseudo-header carries the wall time as well
(zero when wall time is switched off for bit-for-bit comparisons).

Record data: pseudo-header (16 bytes, little-endian) then the frame body (before COBS):
    version u8 (1) | link u8 (1 host, 2 pump) | direction u8 | flags u8 (0)
    | sim_time_ms u32 (low 32 bits; the full value is in the pcap timestamp) | wall_time_us u64
direction: 0 host -> pump, 1 pump -> host, 2 controller -> pump, 3 pump -> controller.
"""

from __future__ import annotations

import struct
import time
from enum import IntEnum
from pathlib import Path
from typing import BinaryIO

LINKTYPE_USER0 = 147
PCAP_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")
PSEUDO_HEADER = struct.Struct("<BBBBIQ")
PSEUDO_VERSION = 1
SNAPLEN = 65535


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
        self._f: BinaryIO | None = None
        if self.path is not None:
            self._f = open(self.path, "wb")
            self._f.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_USER0))

    def frame(self, link: Link, direction: Direction, sim_ms: int, body: bytes) -> None:
        if self._f is None:
            return
        wall_us = time.time_ns() // 1000 if self.wall_time else 0
        data = PSEUDO_HEADER.pack(PSEUDO_VERSION, link, direction, 0, sim_ms & 0xFFFFFFFF, wall_us) + body
        sec, ms = divmod(sim_ms, 1000)
        self._f.write(RECORD_HEADER.pack(sec & 0xFFFFFFFF, ms * 1000, len(data), len(data)))
        self._f.write(data)
        self.records += 1

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


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
