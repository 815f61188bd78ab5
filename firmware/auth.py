"""Authentication of host frames: the keys the pump holds, the counters that reject
replays, and failure accounting with lockouts (SR-027, SR-029, SR-030).

Keys are provisioned into NVM on a new pump; after that NVM's copy is the one used.
Failures (a bad tag or a replay) are counted per key the pump holds; unsigned frames and
every other key id share one count, so memory stays bounded whatever is sent. Too many
failures in the window lock that key out; frames with it are then refused without being
logged one by one, so a flood cannot push the real history out of the log.
"""

from __future__ import annotations

from protocol.auth import AuthResult, FrameVerifier
from protocol.codes import LogEvent, NakReason, Role
from protocol.framing import Frame

from .clock import Clock
from .config import FirmwareConfig
from .outbox import Outbox

OTHER_KEYS = 0  # the failure count and lockout shared by unsigned frames and unknown key ids
PERSON_ROLES = (Role.CLINICIAN, Role.PATIENT)  # the sim key never reaches the controller


class Auth:
    def __init__(self, clock: Clock, config: FirmwareConfig, outbox: Outbox, keys: dict[Role, bytes]) -> None:
        self.clock = clock
        self.config = config
        self.outbox = outbox
        self.keys = {r: k for r, k in keys.items() if r in PERSON_ROLES}
        self.verifier = FrameVerifier(self.keys)
        # Per key: failure times inside the window, and the end of its lockout.
        self.failures: dict[int, list[int]] = {}
        self.locked_until: dict[int, int] = {}

    def use_keys(self, keys: dict[Role, bytes], counters: dict[int, int]) -> None:
        """The keys and counters NVM holds (on a pump provisioned before)."""
        self.keys = keys
        self.verifier = FrameVerifier(keys)
        self.verifier.last_counters.update(counters)

    def verify(self, frame: Frame) -> tuple[Role | None, NakReason | None, str]:
        """(role, None, "") for an authentic fresh frame, else (None, NAK reason, detail);
        security events are logged and counters persisted before the answer goes out."""
        now = self.clock.now_ms
        key = frame.auth.key_id if frame.auth else 0
        bucket = key if key in self.keys else OTHER_KEYS
        until = self.locked_until.get(bucket, 0)
        if now < until:
            return None, NakReason.AUTH_FAILED, f"key locked out for {-(-(until - now) // 1000)} s"
        v = self.verifier.check(frame)
        if v.ok:
            self.outbox.touch("auth")
            return v.role, None, ""
        if v.result is AuthResult.REPLAYED:
            self.outbox.record(LogEvent.REPLAY_REJECTED, key, frame.msg_type)
            nak, detail = NakReason.REPLAYED, "replay"
        else:
            self.outbox.record(LogEvent.AUTH_FAILED, key, frame.msg_type)
            nak, detail = NakReason.AUTH_FAILED, "authentication failed"
        self._failure(bucket)
        return None, nak, detail

    def _failure(self, bucket: int) -> None:
        cfg = self.config
        now = self.clock.now_ms
        recent = [t for t in self.failures.get(bucket, []) if now - t < cfg.auth_failure_window_ms]
        recent.append(now)
        if len(recent) >= cfg.auth_max_failures:
            self.locked_until[bucket] = now + cfg.auth_lockout_ms
            self.outbox.record(LogEvent.KEY_LOCKED_OUT, bucket, cfg.auth_lockout_ms // 1000)
            recent = []
        self.failures[bucket] = recent
        self.outbox.touch("auth")

    # ------------------------------------------------------------ NVM

    def counters_data(self) -> dict[str, int]:
        return {str(k): v for k, v in self.verifier.last_counters.items()}

    def lockouts_data(self) -> dict[str, list]:
        return {str(int(k)): [self.locked_until.get(k, 0), self.failures.get(k, [])] for k in (*self.keys, OTHER_KEYS)}

    def load_lockouts(self, data: dict[str, list]) -> None:
        for k, (until, failures) in data.items():
            self.locked_until[int(k)] = until
            self.failures[int(k)] = list(failures)
