"""Seeded line noise on a link: drop, corrupt, duplicate or delay bytes at a rate.

Applied to bytes as they leave the emulator toward a peer and as they arrive from it.
With no noise configured the bytes pass untouched (the common case costs one check).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from protocol.codes import Fault

NOISE_FAULTS = (Fault.LINK_DROP, Fault.LINK_CORRUPT, Fault.LINK_DUPLICATE, Fault.LINK_DELAY)


@dataclass(frozen=True)
class NoiseSetting:
    fault: Fault
    rate_ppm: int
    value: int  # delay in ms for LINK_DELAY


class NoisyChannel:
    """One direction of one link. `now_ms` is whatever clock the link runs on."""

    def __init__(self) -> None:
        self.settings: dict[Fault, NoiseSetting] = {}
        self.rng = random.Random(0)
        # (release at ms, bytes, tag) for LINK_DELAY; the tag says whose bytes they are (on
        # the host link, which client's), so held bytes are released to their owner.
        self._held: list[tuple[int, bytes, object]] = []
        self.counts = dict.fromkeys((f.name.lower() for f in NOISE_FAULTS), 0)

    @property
    def active(self) -> bool:
        return bool(self.settings) or bool(self._held)

    def set(self, fault: Fault, rate_ppm: int, value: int, seed: int) -> None:
        self.settings[fault] = NoiseSetting(fault, rate_ppm, value)
        self.rng = random.Random(seed)

    def clear(self, fault: Fault) -> None:
        self.settings.pop(fault, None)

    def apply(self, data: bytes, now_ms: int, tag: object = None) -> bytes:
        if not self.settings:
            return self.release(now_ms) + data if self._held else data
        rnd = self.rng.random
        drop = self._p(Fault.LINK_DROP)
        corrupt = self._p(Fault.LINK_CORRUPT)
        dup = self._p(Fault.LINK_DUPLICATE)
        delay = self.settings.get(Fault.LINK_DELAY)
        delay_p = delay.rate_ppm / 1e6 if delay else 0.0
        out = bytearray()
        for i, b in enumerate(data):
            if drop and rnd() < drop:
                self.counts["link_drop"] += 1
                continue
            if corrupt and rnd() < corrupt:
                b ^= 1 << self.rng.randrange(8)
                self.counts["link_corrupt"] += 1
            if delay_p and rnd() < delay_p:
                # Hold this byte and everything after it in this write: order is kept.
                rest = bytes([b]) + data[i + 1 :]
                self._held.append((now_ms + delay.value, rest, tag))
                self.counts["link_delay"] += 1
                break
            out.append(b)
            if dup and rnd() < dup:
                out.append(b)
                self.counts["link_duplicate"] += 1
        return self.release(now_ms) + bytes(out)

    def release(self, now_ms: int) -> bytes:
        """Delayed bytes whose time has come (whatever their tags)."""
        return b"".join(d for _, d in self.release_tagged(now_ms))

    def release_tagged(self, now_ms: int) -> list[tuple[object, bytes]]:
        """Delayed bytes whose time has come, each with the tag it was held with, in order."""
        if not self._held:
            return []
        ready = [(tag, d) for t, d, tag in self._held if t <= now_ms]
        self._held = [h for h in self._held if h[0] > now_ms]
        return ready

    def next_release_ms(self) -> int | None:
        if not self._held:  # (asked at every event: most of the time nothing is held)
            return None
        return min(h[0] for h in self._held)

    def _p(self, fault: Fault) -> float:
        s = self.settings.get(fault)
        return s.rate_ppm / 1e6 if s else 0.0
