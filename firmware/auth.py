"""Authentication of host frames: the keys the pump holds, the counters that reject
replays (SR-027, SR-029), and what a failure costs (SR-055, SR-056).

Keys are provisioned into NVM on a new pump; after that NVM's copy is the one used.
Every frame is checked on its own merits: an authentic one with a fresh counter is
served, whatever failed before (there is no key lockout: rules/auth_failure.py says
why). A failure is answered within a NAK budget per key id claimed, the keys the pump
holds each one and unsigned frames and every other key id one between them, so memory
stays bounded whatever is sent; beyond it the frame is dropped unanswered. Failures go to
the event log through the refusal log (firmware/refusals.py), rate-bounded per key id,
and write nothing to NVM of their own.

What the pump sends the host is signed under the pump key (SR-058): answers bound to
their request's tag, events with the pump's counter, whose block rules/pump_counter.py
keeps reserved in NVM ahead of use.
"""

from __future__ import annotations

from protocol.auth import AuthResult, FrameSigner, FrameVerifier, wrap_key
from protocol.codes import LogEvent, NakReason, Role
from protocol.framing import Frame

from .clock import Clock
from .config import FirmwareConfig
from .outbox import Outbox
from .refusals import RefusalLog
from .rules import auth_failure, pump_counter
from .rules.auth_failure import Answer
from .rules.budget import Budget, full

OTHER_KEYS = 0  # the NAK budget and log kind shared by unsigned frames and unknown key ids
PERSON_ROLES = (Role.CLINICIAN, Role.PATIENT)  # the sim key never reaches the controller
PUMP_COUNTER = str(int(Role.PUMP))  # in the auth_counters record: the top of the pump's reserved block


class Auth:
    def __init__(
        self, clock: Clock, config: FirmwareConfig, outbox: Outbox, refusals: RefusalLog, keys: dict[Role, bytes]
    ) -> None:
        self.clock = clock
        self.config = config
        self.outbox = outbox
        self.refusals = refusals
        self.keys = {r: k for r, k in keys.items() if r in PERSON_ROLES}
        self.revoked: set[Role] = set()  # SR-059: refused, and told so
        self.verifier = FrameVerifier(self.keys)
        # The NAK budget of each key id bucket (RAM only: a reset refills them).
        self.nak_budgets: dict[int, Budget] = {}
        self.pump_key: bytes | None = None
        self.pump_reserved = 0  # the top of the pump counter's block reserved in NVM
        self._sign_with(keys.get(Role.PUMP), 0)

    def use_keys(self, keys: dict[Role, bytes], counters: dict[int, int]) -> bool:
        """The keys and counters NVM holds (on a pump provisioned before). True when NVM
        had no pump key and the one handed over is taken (a pump provisioned before
        SR-058): the keys record must then be written again."""
        handed = self.pump_key
        self.keys = {r: k for r, k in keys.items() if r in PERSON_ROLES and k}
        self.revoked = {r for r, k in keys.items() if r in PERSON_ROLES and not k}  # kept as b"" in NVM
        self.verifier = FrameVerifier(self.keys)
        self.verifier.last_counters.update({k: v for k, v in counters.items() if k in self.keys})
        self.pump_reserved = counters.get(int(Role.PUMP), 0)
        # Signing goes on above the block reserved before the reset, never inside it.
        self._sign_with(keys.get(Role.PUMP, handed), self.pump_reserved)
        return Role.PUMP not in keys and handed is not None

    def update_key(self, role: Role, wrapped: bytes) -> bool:
        """SR-059: the KEY_UPDATE just verified (under the clinician's key, its counter the
        last accepted) replaces `role`'s key, or revokes it when `wrapped` is empty. Its
        counter floor stays: a host's counters only rise. Returns True when revoked."""
        if wrapped:
            counter = self.verifier.last_counters[int(Role.CLINICIAN)]
            self.keys[role] = wrap_key(self.keys[Role.CLINICIAN], role, counter, wrapped)
            self.revoked.discard(role)
        else:
            self.keys.pop(role, None)
            self.revoked.add(role)
        counters = self.verifier.last_counters
        self.verifier = FrameVerifier(self.keys)
        self.verifier.last_counters.update({k: v for k, v in counters.items() if k in self.keys})
        self.outbox.touch("keys", "auth")
        return not wrapped

    def _sign_with(self, key: bytes | None, counter: int) -> None:
        self.pump_key = key
        self.outbox.signer = None if key is None else FrameSigner(Role.PUMP, key, counter, self._pump_counter_used)

    def _pump_counter_used(self, counter: int) -> None:
        top = pump_counter.reservation(counter, self.pump_reserved)
        if top is not None:
            self.pump_reserved = top
            self.outbox.touch("auth")  # committed before the frame goes out

    def verify(self, frame: Frame) -> tuple[Role | None, NakReason | None, str]:
        """(role, None, "") for an authentic fresh frame; (None, NAK reason, detail) for a
        failure to answer; (None, None, "") for one to drop unanswered. The counter of an
        authentic frame is persisted before the answer goes out."""
        cfg = self.config
        now = self.clock.now_ms
        v = self.verifier.check(frame)
        key = frame.auth.key_id if frame.auth else 0
        bucket = key if key in self.keys else OTHER_KEYS
        budget = self.nak_budgets.get(bucket) or full(cfg.auth_nak_burst, now)
        answer, self.nak_budgets[bucket] = auth_failure.answer(
            auth_failure.FrameFacts(
                authentic=v.ok,
                now_ms=now,
                nak_budget=budget,
                nak_burst=cfg.auth_nak_burst,
                nak_every_ms=cfg.auth_nak_every_ms,
            )
        )
        if answer is Answer.SERVE:
            self.outbox.touch("auth")
            return v.role, None, ""
        replayed = v.result is AuthResult.REPLAYED
        self.refusals.auth_failure(
            bucket, LogEvent.REPLAY_REJECTED if replayed else LogEvent.AUTH_FAILED, key, frame.msg_type
        )
        if answer is Answer.DROP:
            return None, None, ""
        if replayed:
            return None, NakReason.REPLAYED, "replay"
        if frame.auth is not None and frame.auth.key_id in self.revoked:
            who = Role(frame.auth.key_id).name.lower()
            return None, NakReason.AUTH_FAILED, f"the {who} key was revoked: ask the clinician for a new one"
        if v.result is AuthResult.COUNTER_OUT_OF_RANGE:
            return None, NakReason.AUTH_FAILED, "counter at the top of its range (not stored): sign with a lower one"
        return None, NakReason.AUTH_FAILED, "authentication failed"

    # ------------------------------------------------------------ NVM

    def counters_data(self) -> dict[str, int]:
        data = {str(k): v for k, v in self.verifier.last_counters.items()}
        data[PUMP_COUNTER] = self.pump_reserved
        return data

    def keys_data(self) -> dict[str, str]:
        keys = {**dict.fromkeys(self.revoked, b""), **self.keys}  # a revoked key outlives a reset as b""
        if self.pump_key is not None:
            keys[Role.PUMP] = self.pump_key
        return {str(int(r)): k.hex() for r, k in keys.items()}
