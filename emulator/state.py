"""The state directory: what outlives one emulator process.

    pump.json   physical state (reservoir, catheter, battery, clock, counters), readable
    pump.ckpt   the same state as the simulation moves, newer than pump.json after a
                kill (emulator/journal.py); a clean exit folds it into pump.json
    keys.json   the host-link keys for each role, owner-only (0600), made on first start
    port        the host port path (the `--link` symlink if one was asked for)
    pump_port   the pump-link port path in --split mode
    firmware-nvm.bin  the controller firmware's non-volatile memory (firmware/nvm.py)
    lock        held (flock) by the emulator using the directory, with its pid

Files are replaced atomically (write, fsync, rename) so a kill never leaves half a file.
A write refused by the filesystem (full, read-only) raises StateError with one line
naming the file, the error and what to do (`cannot_write`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from protocol.auth import new_key
from protocol.codes import Role
from protocol.keyfile import ROLE_NAMES, dumps_keys

# The controller firmware's NVM file in the state directory (firmware/board/filenvm.py
# names it; the emulator does not import the firmware). Once it exists the firmware holds
# the keys it was provisioned with.
FIRMWARE_NVM = "firmware-nvm.bin"


FRESH_ADVICE = (
    "start on new pump hardware with --new-hardware (the firmware is told, and trusts nothing physical it remembered), "
    "or move the state directory away to start a whole new pump"
)


class StateError(RuntimeError):
    pass


PUMP_FORMAT = 2  # format 2: a checksum over the rest, every field checked at load
U32_MAX = (1 << 32) - 1
U63_MAX = (1 << 63) - 1  # times and totals: room below the wire's u64, never past it
# Every field of pump.json (emulator/pump.py to_state, rig.state) and its range. A field
# that is missing, unknown, of another type or out of range refuses the whole file.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "time_ms": (0, U63_MAX),
    "reservoir_nl": (0, U32_MAX),
    "reservoir_fg": (0, U63_MAX),
    "pending_nl": (0, U32_MAX),
    "pending_fg": (0, U63_MAX),
    "delivered_nl": (0, U63_MAX),
    "delivered_fg": (0, U63_MAX),
    "leaked_nl": (0, U63_MAX),
    "pocket_nl": (0, U63_MAX),
    "battery_used_nv": (0, U63_MAX),
    "tones_total": (0, U32_MAX),
    "odometer_strokes": (0, U32_MAX),
    "boot_count": (0, U32_MAX),
    "rtc_epoch_s": (0, U63_MAX // 1000),
    "leak_ppm": (0, 1_000_000),
    "stroke_fault_ppm": (-500_000, 1_000_000),
    "sim_counter": (0, (1 << 64) - 1),
}
_BOOLS = ("occluded", "stall_fault", "motor_stalled")
CHECKPOINT_SEQ = "checkpoint_seq"  # in pump.json: the checkpoint slot it is as new as


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def validate_pump(body: dict[str, Any]) -> str | None:
    """What is wrong with a pump state's fields (pump.json's, or a checkpoint's), or None."""
    known = {*_INT_RANGES, *_BOOLS, "catheter", "forced_mv"}
    for key in body:
        if key not in known:
            return f"unknown field {key!r}"
    for key in sorted(known):
        if key not in body:
            return f"field {key!r} is missing"
    for key, (lo, hi) in _INT_RANGES.items():
        v = body[key]
        if type(v) is not int:
            return f"{key} must be a whole number, not {v!r}"
        if not lo <= v <= hi:
            return f"{key} = {v} is outside {lo}..{hi}"
    for key in _BOOLS:
        if type(body[key]) is not bool:
            return f"{key} must be true or false, not {body[key]!r}"
    mv = body["forced_mv"]
    if mv is not None and (type(mv) is not int or not 0 <= mv <= 0xFFFF):
        return f"forced_mv must be null or 0..65535 mV, not {mv!r}"
    cath = body["catheter"]
    if not isinstance(cath, list) or len(cath) > 10_000:
        return "catheter must be a list of [nL, fg] segments"
    for i, seg in enumerate(cath):
        if (
            not isinstance(seg, list)
            or len(seg) != 2
            or any(type(x) is not int for x in seg)
            or not 0 < seg[0] <= U32_MAX
            or not 0 <= seg[1] <= U63_MAX
        ):
            return f"catheter[{i}] must be [nL > 0, fg >= 0], not {seg!r}"
    return None


# What to do about a write the filesystem refused, by errno (anything else: the disk).
_ADVICE = {
    errno.ENOSPC: "free space on its filesystem",
    errno.EDQUOT: "free space within the disk quota",
    errno.EROFS: "remount its filesystem read-write",
    errno.EACCES: "make it writable by this user",
    errno.EPERM: "make it writable by this user",
}


def advice(e: OSError) -> str:
    return _ADVICE.get(e.errno or 0, "check the disk (the kernel log says more)")


def cannot_write(path: Path, e: OSError, what: str = "") -> str:
    """One line for a write the filesystem refused: the file, the error, what to do."""
    name = errno.errorcode.get(e.errno or 0, "error")
    return f"cannot write {what or path} ({e.strerror or e}, {name}): {advice(e)} in {path.parent}"


def refused(directory: Path, path: Path, e: OSError) -> StateError:
    """A write refused at start: one line naming the directory, the file, the error and
    what to do (or to give another --state-dir)."""
    return StateError(f"state directory {directory}: {cannot_write(path, e, path.name)}, or give another --state-dir")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:  # (a short write on a nearly full disk is not an error by itself)
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError:
        # A half-written temporary file on a full disk holds the very space needed to
        # retry: remove it (the file it was to replace is untouched).
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


class StateDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"state directory {self.path}: {cannot_write(self.path, e)}") from None

    def refused(self, path: Path, e: OSError) -> StateError:
        return refused(self.path, path, e)

    def lock(self) -> None:
        """Take the directory for this process, or raise StateError naming who has it. Two
        emulators on one directory would race on its files and its ports. The lock is
        the kernel's (flock): it goes with the process, however it ends, so a killed
        emulator never leaves the directory locked."""
        path = self.path / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise self.refused(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"state directory {self.path} is in use by another emulator (pid {holder}): stop it, "
                "or give another --state-dir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise self.refused(path, e) from None
        self._lock_fd = fd  # held open for the life of the process

    @property
    def pump_file(self) -> Path:
        return self.path / "pump.json"

    @property
    def keys_file(self) -> Path:
        return self.path / "keys.json"

    def load_pump(self) -> dict[str, Any] | None:
        """The physical state, checked whole: its checksum and every field's range. None
        for a new pump; a missing pump.json beside a firmware that has run here, or a
        damaged one, is refused (a fresh pump under a firmware that remembers therapy
        would be a different pump than the one it thinks it drives)."""
        return self.load_pump_and_seq()[0]

    def set_aside(self, *names: str) -> None:
        """New hardware: the old hardware's files renamed NAME.replaced (an earlier one of
        that name goes), so what it was is still there to look at."""
        for name in names:
            path = self.path / name
            if path.exists():
                os.replace(path, path.with_name(name + ".replaced"))

    def load_pump_and_seq(self) -> tuple[dict[str, Any] | None, int]:
        """load_pump, and the checkpoint sequence number pump.json is as new as (0 when
        it names none): a checkpoint slot with a higher number is newer."""
        fresh = FRESH_ADVICE
        try:
            data = json.loads(self.pump_file.read_text())
        except FileNotFoundError:
            nvm = self.path / FIRMWARE_NVM
            if nvm.exists() and nvm.stat().st_size > 0:
                raise StateError(
                    f"{self.pump_file} is missing, but the firmware has run on this pump ({nvm.name}): restore "
                    f"pump.json, or {fresh}"
                ) from None
            return None, 0
        except (OSError, ValueError) as e:
            raise StateError(f"{self.pump_file} is unreadable ({e}); {fresh}") from None
        if not isinstance(data, dict) or data.get("format") != PUMP_FORMAT:
            got = data.get("format") if isinstance(data, dict) else None
            raise StateError(
                f"{self.pump_file} is not a Thecal pump state of format {PUMP_FORMAT} (format {got!r}); {fresh}"
            )
        body = {k: v for k, v in data.items() if k not in ("format", "checksum")}
        if data.get("checksum") != _checksum(body):
            raise StateError(f"{self.pump_file} is damaged (its checksum does not match its contents); {fresh}")
        # Optional (pump.json from before the checkpoint names none), covered by the checksum.
        seq = body.pop(CHECKPOINT_SEQ, 0)
        if type(seq) is not int or not 0 <= seq <= U63_MAX:
            raise StateError(f"{self.pump_file}: {CHECKPOINT_SEQ} must be a whole number >= 0, not {seq!r}; {fresh}")
        wrong = validate_pump(body)
        if wrong is not None:
            raise StateError(f"{self.pump_file}: {wrong}; {fresh}")
        return body, seq

    def save_pump(self, state: dict[str, Any], checkpoint_seq: int = 0) -> None:
        """Write pump.json (atomically, fsync'd): `state`, as new as checkpoint slot
        number `checkpoint_seq`. OSError when the filesystem refuses it."""
        body = {**state, CHECKPOINT_SEQ: checkpoint_seq} if checkpoint_seq else state
        doc = {"format": PUMP_FORMAT, **body, "checksum": _checksum(body)}
        write_atomic(self.pump_file, json.dumps(doc, indent=1).encode())

    def keys(self) -> dict[Role, bytes]:
        """The role keys, created with owner-only permissions on first use."""
        try:
            mode = self.keys_file.stat().st_mode & 0o777
            if mode & 0o077:
                raise StateError(
                    f"{self.keys_file} is readable by others (mode {mode:o}); "
                    f"run `chmod 600 {self.keys_file}` or provision new keys"
                )
            raw = json.loads(self.keys_file.read_text())
            if isinstance(raw, dict) and ROLE_NAMES[Role.PUMP] not in raw:
                return self._add_pump_key(raw)
            return {role: bytes.fromhex(raw[name]) for role, name in ROLE_NAMES.items()}
        except FileNotFoundError:
            pass
        except (KeyError, ValueError, TypeError) as e:
            raise StateError(f"{self.keys_file} is malformed ({e})") from None
        nvm = self.path / FIRMWARE_NVM
        if nvm.exists() and nvm.stat().st_size > 0:
            # New keys would not be the ones the firmware keeps in its NVM: every command
            # would fail authentication and count toward the lockout, with no hint why.
            raise StateError(
                f"{self.keys_file} is missing, but the firmware in {self.path} was provisioned with keys it keeps "
                f"in {nvm.name}: put the keys.json it was provisioned from back, or re-provision the pump by "
                f"moving {nvm.name} away (the firmware then starts as a new pump, its prescription and history gone)"
            )
        keys = {role: new_key() for role in ROLE_NAMES}
        try:
            write_atomic(self.keys_file, dumps_keys(keys), mode=0o600)
        except OSError as e:
            raise self.refused(self.keys_file, e) from None
        return keys

    def _add_pump_key(self, raw: dict[str, str]) -> dict[Role, bytes]:
        """A keys.json from before the pump signed its answers (SR-058): the pump key is
        made and added, once; the firmware takes it into its NVM at its next boot."""
        keys = {role: bytes.fromhex(raw[name]) for role, name in ROLE_NAMES.items() if role is not Role.PUMP}
        keys[Role.PUMP] = new_key()
        try:
            write_atomic(self.keys_file, dumps_keys(keys), mode=0o600)
        except OSError as e:
            raise self.refused(self.keys_file, e) from None
        return keys

    def write_ports(self, host: str, pump: str | None) -> None:
        pump_file = self.path / "pump_port"
        path = self.path / "port"
        try:
            write_atomic(path, (host + "\n").encode())
            path = pump_file
            if pump:
                write_atomic(pump_file, (pump + "\n").encode())
            elif pump_file.exists():
                pump_file.unlink()
        except OSError as e:
            raise self.refused(path, e) from None

    def clear_ports(self, host: str) -> str | None:
        """On exit: pty numbers are reused, so a port file left behind could lead a later
        client to another emulator's port. Only our own entry is removed (another emulator
        may have taken over this state directory since). What could not be removed, or None."""
        try:
            ours = self.host_port() == host
        except OSError as e:  # (EIO reading it back: leave it, and say so)
            return f"cannot read {self.path / 'port'} ({e.strerror or e}): a stale port file may be left behind"
        if ours:
            for name in ("port", "pump_port"):
                try:
                    (self.path / name).unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    return f"{cannot_write(self.path / name, e)} (a stale port file was left behind)"
        return None

    def host_port(self) -> str | None:
        try:
            return (self.path / "port").read_text().strip() or None
        except FileNotFoundError:
            return None
