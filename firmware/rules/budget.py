"""A budget in pump time (a token bucket): what SR-055's NAKs and SR-056's log entries are
rationed by.

`burst` may be spent at once, and one more comes back every `every_ms` up to `burst`
again. Tokens are whole numbers and `at_ms` is how far the refill has been counted, so
the part of an interval already waited is never lost. Time that goes back (it cannot on
the controller's own clock) adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    tokens: int
    at_ms: int  # the refill is counted up to here


def full(burst: int, now_ms: int) -> Budget:
    return Budget(burst, now_ms)


def refilled(b: Budget, now_ms: int, burst: int, every_ms: int) -> Budget:
    """The budget at now_ms: a token for every whole interval since at_ms, up to burst."""
    if b.tokens >= burst:
        return Budget(burst, max(b.at_ms, now_ms))
    n = (now_ms - b.at_ms) // every_ms
    if n <= 0:
        return b
    if b.tokens + n >= burst:
        return Budget(burst, now_ms)  # full: the next refill counts from the next spend
    return Budget(b.tokens + n, b.at_ms + n * every_ms)


def take(b: Budget, now_ms: int, burst: int, every_ms: int) -> tuple[Budget, bool]:
    """Spend one token if there is one: (the budget after, whether one was spent)."""
    b = refilled(b, now_ms, burst, every_ms)
    if b.tokens <= 0:
        return b, False
    return Budget(b.tokens - 1, b.at_ms), True


def next_token_ms(b: Budget, burst: int, every_ms: int) -> int | None:
    """When the next token comes back (None: the budget is full)."""
    return None if b.tokens >= burst else b.at_ms + every_ms
