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
        try:
            data = json.loads(self.pump_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StateError(f"{self.pump_file} is unreadable ({e}); move it away to start a fresh pump") from None
        if not isinstance(data, dict) or data.get("format") != 1:
            raise StateError(f"{self.pump_file} is not a Thecal pump state (format 1)")
        return data

    def save_pump(self, state: dict[str, Any]) -> None:
        write_atomic(self.pump_file, json.dumps({"format": 1, **state}, indent=1).encode())

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
