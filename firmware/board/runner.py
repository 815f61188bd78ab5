"""`thecal firmware`: the controller as its own process on a pump-link pty (split mode).

The process announces itself with CONTROLLER_START, then turns every chunk of bytes from
the pump into the controller's answer. Its NVM is the file `firmware-nvm.bin` in the
state directory, so a killed and restarted process recovers from it alone. The keys are
provisioned from the state directory's key file on first boot; after that the copy in
NVM is the one used.
"""

from __future__ import annotations

import os
import select
import sys
from pathlib import Path

from protocol import codec
from protocol.keyfile import load_keys
from protocol.messages import ControllerStart

from ..controller import Controller
from .config import load_config
from .druglib import load_library
from .filenvm import NVM_FILE, FileNvm


def run_firmware(
    port: str,
    state_dir: str,
    exit_on_stdin_eof: bool = False,
    config_file: str | None = None,
    drug_library: str | None = None,
) -> int:
    import serial

    sd = Path(state_dir)
    nvm_path = sd / NVM_FILE
    keys = {}
    try:
        keys = load_keys(sd / "keys.json")
    except FileNotFoundError:
        if not nvm_path.exists():
            print(f"thecal firmware: no keys.json in {sd} to provision a new pump from", file=sys.stderr)
            return 2
    except (OSError, ValueError) as e:
        print(f"thecal firmware: cannot read keys from {sd}: {e}", file=sys.stderr)
        return 2
    try:
        config = load_config(config_file)
        drugs = load_library(drug_library)
    except (OSError, ValueError) as e:  # (DrugLibraryError is a ValueError)
        print(f"thecal firmware: {e}", file=sys.stderr)
        return 2
    try:
        nvm = FileNvm(nvm_path, config.log_capacity)
    except OSError as e:  # (NvmFileError: one line naming the file, the error and what to do)
        print(f"thecal firmware: {e}", file=sys.stderr)
        return 2
    ctl = Controller(keys, nvm, drugs, config)
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
                if not data:
                    return 4  # the pump side closed the link
                out = ctl.feed(data)
                if out:
                    try:
                        os.write(fd, out)
                    except OSError:
                        return 4  # the emulator went away first: device lost, not a crash
