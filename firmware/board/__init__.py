"""The board: where the firmware meets the world. Files (the NVM, the key file, the drug
library) and processes live here; the controller core is handed instances of them.

`controller_factory` builds controllers over a state directory's NVM file, for the
emulator to run in its own process (it is handed the factory; it does not assemble the
firmware); `runner` runs the controller as a process of its own on a pty.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from protocol.codes import Role

from ..config import FirmwareConfig
from ..controller import Controller
from ..nvm import MemoryNvm, Nvm
from .druglib import load_library
from .filenvm import NVM_FILE, FileNvm


class ControllerFactory:
    """A fresh controller per (re)start over one NVM, as a real part restarts over its
    flash: the NVM file in a state directory (a power cycle, or a restarted emulator,
    recovers from it alone), or memory when no directory is given."""

    def __init__(
        self,
        keys: dict[Role, bytes],
        state_dir: str | Path | None = None,
        config: FirmwareConfig | None = None,
    ) -> None:
        self.keys = keys
        self.config = config or FirmwareConfig()
        self.nvm: Nvm = (
            FileNvm(Path(state_dir) / NVM_FILE, self.config.log_capacity) if state_dir is not None else MemoryNvm()
        )
        self.drugs = load_library()

    def __call__(self) -> Controller:
        return Controller(self.keys, self.nvm, self.drugs, self.config)


def controller_factory(state_dir: str | Path, keys: dict[Role, bytes]) -> Callable[[], Controller]:
    """What `thecal emulator` is handed to run the firmware in its own process."""
    return ControllerFactory(keys, state_dir)
