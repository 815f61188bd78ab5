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
"""

from __future__ import annotations

from protocol.auth import AuthResult, FrameVerifier
from protocol.codes import LogEvent, NakReason, Role
from protocol.framing import Frame

from .clock import Clock
from .config import FirmwareConfig
from .outbox import Outbox
from .refusals import RefusalLog
from .rules import auth_failure
from .rules.auth_failure import Answer
from .rules.budget import Budget, full

OTHER_KEYS = 0  # the NAK budget and log kind shared by unsigned frames and unknown key ids
PERSON_ROLES = (Role.CLINICIAN, Role.PATIENT)  # the sim key never reaches the controller


class Auth:
    def __init__(
        self, clock: Clock, config: FirmwareConfig, outbox: Outbox, refusals: RefusalLog, keys: dict[Role, bytes]
    ) -> None:
        self.clock = clock
        self.config = config
        self.outbox = outbox
        self.refusals = refusals
        self.keys = {r: k for r, k in keys.items() if r in PERSON_ROLES}
        self.verifier = FrameVerifier(self.keys)
        # The NAK budget of each key id bucket (RAM only: a reset refills them).
        self.nak_budgets: dict[int, Budget] = {}

    def use_keys(self, keys: dict[Role, bytes], counters: dict[int, int]) -> None:
        """The keys and counters NVM holds (on a pump provisioned before)."""
        self.keys = keys
        self.verifier = FrameVerifier(keys)
        self.verifier.last_counters.update(counters)

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
        if v.result is AuthResult.COUNTER_OUT_OF_RANGE:
            return None, NakReason.AUTH_FAILED, "counter at the top of its range (not stored): sign with a lower one"
        return None, NakReason.AUTH_FAILED, "authentication failed"

    # ------------------------------------------------------------ NVM

    def counters_data(self) -> dict[str, int]:
        return {str(k): v for k, v in self.verifier.last_counters.items()}
