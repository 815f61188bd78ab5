"""The physical state's checkpoint: what the hardware did, written as the simulation moves.

pump.json is written at exit and about once a second; a SIGKILL between two writes used
to lose what the hardware had done since (strokes, delivery, the clock going back). The
checkpoint file `pump.ckpt` in the state directory closes that gap:

  * fixed size (two slots of SLOT_SIZE bytes), preallocated with posix_fallocate, so no
    later write to it can meet a full disk: a write through a mapping of a sparse file
    on a full filesystem is a SIGBUS, not an error;
  * written through a shared mapping: a commit is a memory copy, not a system call, and
    the page cache keeps it through a SIGKILL of the process (not through a power loss
    of the host: pump.json, fsync'd, is the copy for that);
  * two slots, written alternately, each [magic, sequence number, length, payload,
    CRC-32]: a kill part-way through one leaves the other whole;
  * the payload is a struct image of exactly the fields of PumpHardware.to_state() and
    the sim counter (Rig.state()), checked at load with pump.json's own field ranges.

pump.json records the sequence number it is as new as (`checkpoint_seq`): at start the
newest of pump.json and the valid slots wins. A state too large for a slot (a catheter of
hundreds of segments) is written to pump.json instead, atomically, as new as that number.
A clean exit writes pump.json and then blanks both slots, so pump.json alone is the state
again (and an older pump.json put back by hand is what the next start uses).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.codes import MotorState

from .state import FRESH_ADVICE, StateDir, StateError, refused, validate_pump

CHECKPOINT_FILE = "pump.ckpt"
MAGIC = b"THECALCK"
SLOT_SIZE = 4096  # a page: a slot is one page of the mapping
FILE_SIZE = 2 * SLOT_SIZE
_HEAD = struct.Struct("<8sQI")  # magic, sequence number, payload length
_CRC = struct.Struct("<I")
# Rig.state() in a fixed order: the u32 fields of pump.json as I, its u63 ones as Q (a value
# outside what the struct holds does not fit, and goes to pump.json instead), forced_mv as
# i (-1: none), the three flags as one byte, then the catheter's segment count.
_FIXED = struct.Struct("<QIQIQQQQQQIIIQiiiBQI")
_SEGMENT = struct.Struct("<IQ")  # one catheter segment: nL, fg
MAX_PAYLOAD = SLOT_SIZE - _HEAD.size - _CRC.size
MAX_SEGMENTS = (MAX_PAYLOAD - _FIXED.size) // _SEGMENT.size
_OCCLUDED, _STALL_FAULT, _MOTOR_STALLED = 1, 2, 4

Fallback = Callable[[dict[str, Any], int], None]  # (state, sequence number): write pump.json

if TYPE_CHECKING:
    from .pump import PumpHardware


def pack(state: dict[str, Any]) -> bytes | None:
    """The payload for a state, or None when it does not fit a slot."""
    cath = state["catheter"]
    if len(cath) > MAX_SEGMENTS:
        return None
    mv = state["forced_mv"]
    flags = (
        (_OCCLUDED if state["occluded"] else 0)
        | (_STALL_FAULT if state["stall_fault"] else 0)
        | (_MOTOR_STALLED if state["motor_stalled"] else 0)
    )
    try:
        fixed = _FIXED.pack(
            state["time_ms"],
            state["reservoir_nl"],
            state["reservoir_fg"],
            state["pending_nl"],
            state["pending_fg"],
            state["delivered_nl"],
            state["delivered_fg"],
            state["leaked_nl"],
            state["pocket_nl"],
            state["battery_used_nv"],
            state["tones_total"],
            state["odometer_strokes"],
            state["boot_count"],
            state["rtc_epoch_s"],
            state["leak_ppm"],
            state["stroke_fault_ppm"],
            -1 if mv is None else mv,
            flags,
            state["sim_counter"],
            len(cath),
        )
        return fixed + b"".join([_SEGMENT.pack(nl, fg) for nl, fg in cath])
    except struct.error:
        return None  # a value beyond its field's width: pump.json holds it (and judges it at load)


def pack_hardware(hw: PumpHardware, sim_counter: int) -> bytes | None:
    """pack({**hw.to_state(), "sim_counter": sim_counter}) without building the dict: the
    rig checkpoints before nearly every message to the controller, and the 30-day run
    makes some 27,000 of them (tests hold the two to the same bytes)."""
    f = hw.fluid
    cath = f.catheter
    if len(cath) > MAX_SEGMENTS:
        return None
    mv = hw.battery.forced_mv
    flags = (
        (_OCCLUDED if f.occluded else 0)
        | (_STALL_FAULT if hw.stall_fault else 0)
        | (_MOTOR_STALLED if hw.motor_state is MotorState.STALLED else 0)
    )
    try:
        fixed = _FIXED.pack(
            hw.sched.now_ms,
            f.reservoir_nl,
            f.reservoir_fg,
            f.pending_nl,
            f.pending_fg,
            f.delivered_nl,
            f.delivered_fg,
            f.leaked_nl,
            f.pocket_nl,
            hw.battery.used_nv,
            hw.beeper.total,
            hw.odometer,
            hw.boot_count,
            hw.rtc_epoch_s,
            f.leak_ppm,
            hw.stroke_fault_ppm,
            -1 if mv is None else mv,
            flags,
            sim_counter,
            len(cath),
        )
        if len(cath) == 1:
            return fixed + _SEGMENT.pack(*cath[0])
        return fixed + b"".join([_SEGMENT.pack(nl, fg) for nl, fg in cath])
    except struct.error:
        return None


def unpack(payload: bytes) -> dict[str, Any] | None:
    """The state a payload holds, or None when it is not a whole one."""
    if len(payload) < _FIXED.size:
        return None
    (
        time_ms,
        reservoir_nl,
        reservoir_fg,
        pending_nl,
        pending_fg,
        delivered_nl,
        delivered_fg,
        leaked_nl,
        pocket_nl,
        battery_used_nv,
        tones_total,
        odometer,
        boot_count,
        rtc_epoch_s,
        leak_ppm,
        stroke_fault_ppm,
        mv,
        flags,
        sim_counter,
        n,
    ) = _FIXED.unpack_from(payload)
    if len(payload) != _FIXED.size + n * _SEGMENT.size:
        return None
    cath = [list(_SEGMENT.unpack_from(payload, _FIXED.size + i * _SEGMENT.size)) for i in range(n)]
    return {
        "time_ms": time_ms,
        "reservoir_nl": reservoir_nl,
        "reservoir_fg": reservoir_fg,
        "catheter": cath,
        "pending_nl": pending_nl,
        "pending_fg": pending_fg,
        "delivered_nl": delivered_nl,
        "delivered_fg": delivered_fg,
        "leaked_nl": leaked_nl,
        "pocket_nl": pocket_nl,
        "battery_used_nv": battery_used_nv,
        "tones_total": tones_total,
        "odometer_strokes": odometer,
        "boot_count": boot_count,
        "rtc_epoch_s": rtc_epoch_s,
        "occluded": bool(flags & _OCCLUDED),
        "leak_ppm": leak_ppm,
        "stall_fault": bool(flags & _STALL_FAULT),
        "stroke_fault_ppm": stroke_fault_ppm,
        "forced_mv": None if mv < 0 else mv,
        "motor_stalled": bool(flags & _MOTOR_STALLED),
        "sim_counter": sim_counter,
    }


class Journal:
    """pump.ckpt: the two-slot checkpoint of the physical state."""

    def __init__(self, path: str | Path, fallback: Fallback | None = None) -> None:
        self.path = Path(path)
        self.fallback = fallback
        self.error: OSError | None = None  # the last fallback write's failure (None: it worked)
        self.commits = 0
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise refused(self.path.parent, self.path, e) from None
        try:
            # Blocks on the disk now, so that no write through the mapping ever needs one.
            os.posix_fallocate(fd, 0, FILE_SIZE)
            self._mm = mmap.mmap(fd, FILE_SIZE)
        except OSError as e:
            raise refused(self.path.parent, self.path, e) from None
        finally:
            os.close(fd)  # the mapping keeps the file
        newest = self.newest()
        self.seq = newest[0] if newest is not None else 0

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None and not mm.closed:
            mm.close()

    def _slot(self, index: int) -> tuple[int, dict[str, Any]] | None:
        """(sequence number, state) of one slot, or None: blank, torn or damaged."""
        off = index * SLOT_SIZE
        raw = self._mm[off : off + SLOT_SIZE]
        magic, seq, n = _HEAD.unpack_from(raw)
        end = _HEAD.size + n
        if magic != MAGIC or n > MAX_PAYLOAD or zlib.crc32(raw[:end]) != _CRC.unpack_from(raw, end)[0]:
            return None
        state = unpack(raw[_HEAD.size : end])
        if state is None or validate_pump(state) is not None:
            return None
        return seq, state

    def newest(self) -> tuple[int, dict[str, Any]] | None:
        """The newest valid slot as (sequence number, state), or None. A damaged slot (a
        kill part-way through writing it) leaves the other."""
        slots = [s for s in (self._slot(0), self._slot(1)) if s is not None]
        return max(slots, key=lambda s: s[0], default=None)

    def commit(self, state: dict[str, Any]) -> int:
        """Write `state` (Rig.state()) as the next sequence number; return that number.
        Never raises: a fallback write that fails leaves its error in `error`."""
        payload = pack(state)
        if payload is None:
            return self._fall_back(state)
        return self._write(payload)

    def commit_hardware(self, hw: PumpHardware, sim_counter: int) -> int:
        """commit(), from the hardware itself (the rig's fast path)."""
        payload = pack_hardware(hw, sim_counter)
        if payload is None:
            return self._fall_back({**hw.to_state(), "sim_counter": sim_counter})
        return self._write(payload)

    def _write(self, payload: bytes) -> int:
        seq = self.seq = self.seq + 1
        self.commits += 1
        head = _HEAD.pack(MAGIC, seq, len(payload)) + payload
        off = (seq & 1) * SLOT_SIZE
        self._mm[off : off + len(head) + 4] = head + _CRC.pack(zlib.crc32(head))
        return seq

    def _fall_back(self, state: dict[str, Any]) -> int:
        """A state too large for a slot: pump.json, as new as the next number."""
        seq = self.seq = self.seq + 1
        self.commits += 1
        if self.fallback is not None:
            try:
                self.fallback(state, seq)
                self.error = None
            except OSError as e:
                self.error = e
        return seq

    def clear(self) -> None:
        """Blank both slots: pump.json, just written, holds everything they did."""
        self._mm[:] = bytes(FILE_SIZE)


def load_state(sd: StateDir, journal: Journal) -> dict[str, Any] | None:
    """The pump's physical state at start: the newest of pump.json and the checkpoint's
    valid slots (None for a new pump). A checkpoint holding a state without a pump.json is
    refused as a missing pump.json is: the directory is not a whole pump's."""
    saved, saved_seq = sd.load_pump_and_seq()
    newest = journal.newest()
    if saved is None:
        if newest is not None:
            raise StateError(
                f"{sd.pump_file} is missing, but {journal.path.name} holds a pump's state: restore pump.json, or "
                + FRESH_ADVICE
            )
        return None
    # Numbers go on from the newest of either, so that every later slot is newer than both.
    journal.seq = max(journal.seq, saved_seq)
    if newest is not None and newest[0] > saved_seq:
        return newest[1]
    return saved
