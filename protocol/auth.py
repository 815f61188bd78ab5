"""Host-link authentication: HMAC-SHA256 truncated to 128 bits, a 64-bit counter per key.

The tag covers the frame header, the payload, the key id and the counter, so nothing a
receiver acts on is unsigned. A receiver accepts a counter only if it is greater than
the last one it accepted for that key (replay protection); it checks the tag first, so
a forged frame cannot move the counter on.

The pump signs what it sends the host too (SR-058): answers and events under the pump's
own key (Role.PUMP), sim-control answers under the sim key. An answer's tag also covers
the tag of the request it answers (`bound`), so a genuine answer recorded earlier cannot
pass as the answer to a new request: ResponseVerifier checks both, and that events'
counters only go up.

This module holds the mechanism. Who keeps keys and counters (the firmware, in its
non-volatile memory; the host tools, in the state directory) is decided elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from .codes import Role
from .framing import AUTH_PREFIX, TAG_SIZE, Frame, Signer

KEY_SIZE = 32
COUNTER_MAX = (1 << 64) - 1
# Counters at or above this are refused and never stored: a frame signed at the top of
# the range (2**64 - 1 was accepted once) would otherwise leave nothing above it, and the
# key would be dead for good. Hosts count wall-clock microseconds (about 2**61 in 2026):
# 2**63 lasts some 290,000 years.
COUNTER_CEILING = 1 << 63
# What an answer is bound to when its request had no auth trailer (or none could be read).
NO_REQUEST_TAG = bytes(TAG_SIZE)
_sha256 = hashlib.sha256
_pack_prefix = AUTH_PREFIX.pack


def new_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


class _Hmac:
    """HMAC-SHA256 with the padded key states computed once (about twice as fast as
    hmac.digest per call, which matters on the codec hot path)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < 16:
            raise ValueError("an authentication key must be at least 16 bytes")
        block = bytes(key).ljust(64, b"\x00") if len(key) <= 64 else _sha256(key).digest().ljust(64, b"\x00")
        self._inner = _sha256(bytes(b ^ 0x36 for b in block))
        self._outer = _sha256(bytes(b ^ 0x5C for b in block))

    def tag(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:TAG_SIZE]


def compute_tag(key: bytes, signed: bytes) -> bytes:
    """The 16-byte tag of `signed` (header, payload, key id, counter) under `key`."""
    return hmac.digest(key, signed, "sha256")[:TAG_SIZE]


class FrameSigner:
    """Signs outgoing frames for one key. Pass an instance as `signer` to encode_frame.

    `counter` is the last value used; each frame takes the next. A host that restarts
    must start above every counter the pump has accepted (tools.client.WallClockSigner
    keeps the counter at or above the wall clock in microseconds)."""

    __slots__ = ("_mac", "_on_use", "counter", "key_id")

    def __init__(
        self,
        key_id: int | Role,
        key: bytes,
        counter: int = 0,
        on_use: Callable[[int], None] | None = None,
    ) -> None:
        self.key_id = int(key_id)
        if not 0 < self.key_id < 256:
            raise ValueError(f"key_id {self.key_id} is not 1..255")
        self.counter = counter
        self._mac = _Hmac(key)
        self._on_use = on_use

    def __call__(self, head: bytes) -> bytes:
        return self._sign(head, b"")

    def bound(self, request_tag: bytes | None) -> Signer:
        """A signer for the answer to a request with `request_tag` (None: the request
        carried none, and NO_REQUEST_TAG stands in): the tag covers it too, after the
        counter, though it is not sent."""
        bound = request_tag if request_tag is not None else NO_REQUEST_TAG
        return lambda head: self._sign(head, bound)

    def _sign(self, head: bytes, bound: bytes) -> bytes:
        if self.counter + 1 >= COUNTER_CEILING:
            raise ValueError("authentication counter at the top of its range; provision a new key")
        self.counter += 1
        if self._on_use is not None:
            self._on_use(self.counter)
        prefix = _pack_prefix(self.key_id, self.counter)
        return prefix + self._mac.tag(head + prefix + bound)


KEY_WRAP_LABEL = b"thecal key update"


def key_pad(clinician_key: bytes, role: int, counter: int) -> bytes:
    """The pad a KEY_UPDATE's new key is XORed with: bound to the clinician's key, the role
    and the counter of the frame that carries it (never used twice under that key)."""
    return hmac.digest(clinician_key, KEY_WRAP_LABEL + bytes([role]) + counter.to_bytes(8, "little"), "sha256")


def wrap_key(clinician_key: bytes, role: int, counter: int, key: bytes) -> bytes:
    """KEY_UPDATE's wrapped_key for `key` (also its own inverse: unwraps)."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"a key is {KEY_SIZE} bytes, not {len(key)}")
    return bytes(a ^ b for a, b in zip(key, key_pad(clinician_key, role, counter), strict=True))


class AuthResult(Enum):
    OK = "ok"
    NO_TRAILER = "no_trailer"
    UNKNOWN_KEY = "unknown_key"
    BAD_TAG = "bad_tag"
    REPLAYED = "replayed"
    COUNTER_OUT_OF_RANGE = "counter_out_of_range"  # at or above COUNTER_CEILING: refused, not stored


@dataclass(frozen=True)
class Verdict:
    result: AuthResult
    role: Role | None = None
    counter: int = 0

    @property
    def ok(self) -> bool:
        return self.result is AuthResult.OK


class FrameVerifier:
    """Checks the auth trailer of received frames against known keys and counters.

    `last_counters` maps key id to the highest counter accepted; `on_accept(key_id,
    counter)` is called before the verdict is returned, so a caller can persist the
    counter before acting on the frame."""

    def __init__(
        self,
        keys: Mapping[int, bytes],
        last_counters: Mapping[int, int] | None = None,
        on_accept: Callable[[int, int], None] | None = None,
    ) -> None:
        self._macs = {int(k): _Hmac(v) for k, v in keys.items()}
        self.last_counters: dict[int, int] = {int(k): 0 for k in keys}
        if last_counters:
            self.last_counters.update({int(k): v for k, v in last_counters.items()})
        self._on_accept = on_accept

    def check(self, frame: Frame) -> Verdict:
        auth = frame.auth
        if auth is None:
            return Verdict(AuthResult.NO_TRAILER)
        mac = self._macs.get(auth.key_id)
        if mac is None:
            return Verdict(AuthResult.UNKNOWN_KEY)
        if not hmac.compare_digest(mac.tag(frame.signed), auth.tag):
            return Verdict(AuthResult.BAD_TAG)
        try:
            role = Role(auth.key_id)
        except ValueError:
            return Verdict(AuthResult.UNKNOWN_KEY)
        if auth.counter >= COUNTER_CEILING:
            return Verdict(AuthResult.COUNTER_OUT_OF_RANGE, role, auth.counter)
        if auth.counter <= self.last_counters[auth.key_id]:
            return Verdict(AuthResult.REPLAYED, role, auth.counter)
        self.last_counters[auth.key_id] = auth.counter
        if self._on_accept is not None:
            self._on_accept(auth.key_id, auth.counter)
        return Verdict(AuthResult.OK, role, auth.counter)


class ResponseVerifier:
    """The host's check of what the pump sends it (SR-058): answers under the key its
    request calls for, bound to that request's tag; events under the pump key, each with a
    counter above the last event's. Only the keys given are checked; a frame whose key
    the host does not hold passes unchecked (None)."""

    def __init__(self, keys: Mapping[int, bytes]) -> None:
        self._macs = {int(k): _Hmac(v) for k, v in keys.items() if int(k) in (Role.PUMP, Role.SIM)}
        self.last_event_counter = 0

    def holds(self, key_id: int) -> bool:
        return int(key_id) in self._macs

    def answer(self, frame: Frame, key_id: int, request_tag: bytes | None) -> AuthResult | None:
        """The verdict on an answer that must be signed with `key_id` and bound to
        `request_tag` (None: the request had no trailer)."""
        mac = self._macs.get(int(key_id))
        if mac is None:
            return None
        auth = frame.auth
        if auth is None:
            return AuthResult.NO_TRAILER
        if auth.key_id != key_id:
            return AuthResult.UNKNOWN_KEY
        bound = request_tag if request_tag is not None else NO_REQUEST_TAG
        if not hmac.compare_digest(mac.tag(frame.signed + bound), auth.tag):
            return AuthResult.BAD_TAG
        return AuthResult.OK

    def event(self, frame: Frame) -> AuthResult | None:
        mac = self._macs.get(Role.PUMP)
        if mac is None:
            return None
        auth = frame.auth
        if auth is None:
            return AuthResult.NO_TRAILER
        if auth.key_id != Role.PUMP:
            return AuthResult.UNKNOWN_KEY
        if not hmac.compare_digest(mac.tag(frame.signed), auth.tag):
            return AuthResult.BAD_TAG
        if auth.counter <= self.last_event_counter:
            return AuthResult.REPLAYED
        self.last_event_counter = auth.counter
        return AuthResult.OK
