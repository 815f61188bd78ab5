"""The state directory: what outlives one emulator process.

    pump.json   physical state (reservoir, catheter, battery, clock, counters)
    keys.json   the host-link keys for each role, owner-only (0600), made on first start
    port        the host port path (the `--link` symlink if one was asked for)
    pump_port   the pump-link port path in --split mode
    firmware-nvm.bin  the controller firmware's non-volatile memory (firmware/nvm.py)
    lock        held (flock) by the emulator using the directory, with its pid

Files are replaced atomically (write, fsync, rename) so a kill never leaves half a file.
"""

from __future__ import annotations

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


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _validate_pump(body: dict[str, Any]) -> str | None:
    """What is wrong with pump.json's fields, or None."""
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


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class StateDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def lock(self) -> None:
        """Take the directory for this process, or raise StateError naming who has it. Two
        emulators on one directory would race on its files and its ports. The lock is
        the kernel's (flock): it goes with the process, however it ends, so a killed
        emulator never leaves the directory locked."""
        path = self.path / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"state directory {self.path} is in use by another emulator (pid {holder}): stop it, "
                "or give another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
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
        fresh = "move the state directory away to start a fresh pump"
        try:
            data = json.loads(self.pump_file.read_text())
        except FileNotFoundError:
            nvm = self.path / FIRMWARE_NVM
            if nvm.exists() and nvm.stat().st_size > 0:
                raise StateError(
                    f"{self.pump_file} is missing, but the firmware has run on this pump ({nvm.name}): restore "
                    f"pump.json, or {fresh}"
                ) from None
            return None
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
        wrong = _validate_pump(body)
        if wrong is not None:
            raise StateError(f"{self.pump_file}: {wrong}; {fresh}")
        return body

    def save_pump(self, state: dict[str, Any]) -> None:
        doc = {"format": PUMP_FORMAT, **state, "checksum": _checksum(state)}
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
        write_atomic(self.keys_file, dumps_keys(keys), mode=0o600)
        return keys

    def write_ports(self, host: str, pump: str | None) -> None:
        write_atomic(self.path / "port", (host + "\n").encode())
        pump_file = self.path / "pump_port"
        if pump:
            write_atomic(pump_file, (pump + "\n").encode())
        elif pump_file.exists():
            pump_file.unlink()

    def clear_ports(self, host: str) -> None:
        """On exit: pty numbers are reused, so a port file left behind could lead a later
        client to another emulator's port. Only our own entry is removed (another emulator
        may have taken over this state directory since)."""
        if self.host_port() == host:
            for name in ("port", "pump_port"):
                try:
                    (self.path / name).unlink()
                except FileNotFoundError:
                    pass

    def host_port(self) -> str | None:
        try:
            return (self.path / "port").read_text().strip() or None
        except FileNotFoundError:
            return None
