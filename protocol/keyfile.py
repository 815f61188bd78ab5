"""The key file (`keys.json` in a state directory): each role's host-link key, in hex.

One reader for everyone who holds the file: the host tools sign with it, the emulator
writes it on first start, and the firmware provisions its NVM from it on a new pump.
"""

from __future__ import annotations

import json
from pathlib import Path

from .codes import Role

ROLE_NAMES: dict[Role, str] = {
    Role.CLINICIAN: "clinician",
    Role.PATIENT: "patient",
    Role.SIM: "sim",
    Role.PUMP: "pump",
}
ROLES_BY_NAME: dict[str, Role] = {name: role for role, name in ROLE_NAMES.items()}


def load_keys(path: str | Path) -> dict[Role, bytes]:
    """The keys a key file holds (roles it does not name are left out)."""
    raw = json.loads(Path(path).read_text())
    return {ROLES_BY_NAME[k]: bytes.fromhex(v) for k, v in raw.items() if k in ROLES_BY_NAME}


def dumps_keys(keys: dict[Role, bytes]) -> bytes:
    return json.dumps({ROLE_NAMES[r]: k.hex() for r, k in keys.items() if r in ROLE_NAMES}, indent=1).encode()
