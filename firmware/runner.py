"""`thecal firmware`: the controller as its own process on a pump-link pty (split mode).

The process announces itself with CONTROLLER_START, then turns every chunk of bytes from
the pump into the controller's answer. Keys come from the state directory's key file.
Its NVM is in memory until issue 5 brings the file-backed store: a restarted process
starts from nothing.
"""

from __future__ import annotations

import os
import select
import sys

from protocol import codec
from protocol.messages import ControllerStart

from .controller import Controller
from .nvm import MemoryNvm


def run_firmware(port: str, state_dir: str, exit_on_stdin_eof: bool = False) -> int:
    import serial

    from tools.client import load_keys

    try:
        keys = load_keys(os.path.join(state_dir, "keys.json"))
    except (OSError, ValueError) as e:
        print(f"thecal firmware: cannot read keys from {state_dir}: {e}", file=sys.stderr)
        return 2
    ctl = Controller(keys, MemoryNvm())
    try:
        ser = serial.Serial(port, timeout=0)
    except serial.SerialException as e:
        print(f"thecal firmware: cannot open {port}: {e}", file=sys.stderr)
        return 4
    with ser:
        fd = ser.fileno()
        stdin = sys.stdin.fileno() if exit_on_stdin_eof else None
        watch = [fd] + ([stdin] if stdin is not None else [])
        os.write(fd, codec.encode(ControllerStart(), 0))
        while True:
            ready, _, _ = select.select(watch, [], [], 1.0)
            if stdin is not None and stdin in ready and not os.read(stdin, 4096):
                return 0
            if fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    return 4
                out = ctl.feed(data)
                if out:
                    os.write(fd, out)
