"""SR-059: a clinician replaces or revokes a person role's key (a lost or stolen handset).

Only the patient's key may be revoked: the clinician's may be replaced but never revoked,
or no one could ever program the pump again. The new key arrives wrapped (protocol/auth.py
key_pad) and is 32 bytes, or the request is empty (revoke).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.auth import KEY_SIZE
from protocol.codes import Role

from . import Refusal, out_of_range

PERSON_ROLES = (Role.CLINICIAN, Role.PATIENT)


@dataclass(frozen=True)
class KeyUpdateFacts:
    role: Role
    wrapped_len: int


def refusal(f: KeyUpdateFacts) -> Refusal | None:
    if f.role not in PERSON_ROLES:
        return out_of_range(
            "role", f"only a person role's key can be changed here (clinician or patient), not {f.role.name.lower()}"
        )
    if f.wrapped_len not in (0, KEY_SIZE):
        return out_of_range("wrapped_key", f"a new key is {KEY_SIZE} bytes (or none, to revoke), not {f.wrapped_len}")
    if f.wrapped_len == 0 and f.role is Role.CLINICIAN:
        return out_of_range("role", "the clinician's key can be replaced, never revoked: no one could program the pump")
    return None
