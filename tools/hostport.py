"""Where a host program meets the pump: a serial port (the emulator's pty, a real device)
opened with pyserial, or the emulator's host socket (`host.sock` in its state
directory), which any number of programs may use at once.

`open_port` returns either behind the few calls the client makes of pyserial's Serial
(read with a timeout, in_waiting, write, flush, reset_input_buffer, close).
"""

from __future__ import annotations

import os
import select
import stat
from pathlib import Path

import serial

from emulator.hostlink import SOCKET_NAME, connect
from tools.client_errors import NoAnswer

READ_TIMEOUT_S = 0.05


class SocketPort:
    """A connection to the emulator's host socket, read and written like a serial port."""

    def __init__(self, path: str | Path, timeout: float = READ_TIMEOUT_S) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.sock = connect(path)
        self._buf = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def _fill(self, wait_s: float) -> None:
        if not select.select([self.sock], [], [], wait_s)[0]:
            return
        data = self.sock.recv(65536)
        if not data:
            raise OSError(f"the emulator closed {self.path}")
        self._buf += data

    @property
    def in_waiting(self) -> int:
        if not self._buf:
            self._fill(0)
        return len(self._buf)

    def read(self, n: int = 1) -> bytes:
        if not self._buf:
            self._fill(self.timeout)
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass  # sendall has handed everything to the kernel

    def reset_input_buffer(self) -> None:
        self._buf = b""  # a new connection holds nothing meant for someone else

    def close(self) -> None:
        self.sock.close()


def is_socket(path: str | Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def open_port(path: str | Path) -> serial.Serial | SocketPort:
    """The host socket if `path` is one, else the serial port (pty or device) at `path`."""
    if is_socket(path):
        return SocketPort(path)
    return serial.Serial(str(path), timeout=READ_TIMEOUT_S)


def socket_of(state_dir: str | Path) -> Path | None:
    """The host socket of the emulator running on state_dir, if it has one."""
    p = Path(state_dir) / SOCKET_NAME
    return p if is_socket(p) else None


def port_of(state_dir: str | Path) -> str:
    """Where to reach the emulator running on state_dir: its host socket, which several
    programs may share, or else the pty it advertised in `port`."""
    d = Path(state_dir)
    sock = socket_of(d)
    if sock is not None:
        return str(sock)
    try:
        return (d / "port").read_text().strip()
    except FileNotFoundError:
        raise NoAnswer(
            f"no emulator is running on {d} (no {d / 'port'}): start one with `thecal emulator --state-dir {d}`, "
            "or give --port"
        ) from None
