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
from .config import load_config
from .druglib import load_library
from .filenvm import NVM_FILE, FileNvm


class ControllerFactory:
    """A fresh controller per (re)start over one NVM, as a real part restarts over its
    flash: the NVM file in a state directory (a power cycle, or a restarted emulator,
    recovers from it alone), or memory when no directory is given. The settings and the
    drug library are read once, here, so a bad file is reported before anything starts."""

    def __init__(
        self,
        keys: dict[Role, bytes],
        state_dir: str | Path | None = None,
        config: FirmwareConfig | None = None,
        drug_library: str | Path | None = None,
    ) -> None:
        self.keys = keys
        self.config = config or FirmwareConfig()
        self.drugs = load_library(drug_library)
        self.nvm: Nvm = (
            FileNvm(Path(state_dir) / NVM_FILE, self.config.log_capacity) if state_dir is not None else MemoryNvm()
        )

    def __call__(self) -> Controller:
        return Controller(self.keys, self.nvm, self.drugs, self.config)


def controller_factory(
    config_file: str | Path | None = None, drug_library: str | Path | None = None
) -> Callable[[Path, dict[Role, bytes]], Callable[[], Controller]]:
    """What `thecal emulator` is handed to run the firmware in its own process: given the
    state directory and the keys, a ControllerFactory. The files are read at once, so a
    mistake in them is an error at the command line."""
    config = load_config(config_file)
    load_library(drug_library)

    def make(state_dir: Path, keys: dict[Role, bytes]) -> Callable[[], Controller]:
        return ControllerFactory(keys, state_dir, config, drug_library)

    return make
