"""Refusals and authentication failures go into the event log rate-bounded, per kind, so
that no flood of them can push a therapy record out of the ring (SR-056).

The kinds are authentication failures per key id claimed (the clinician's, the patient's,
and one for unsigned frames and key ids the pump does not hold) and the four refusals of
authentic requests: NOT_PERMITTED, COMMAND_REFUSED, PROGRAM_REFUSED and a denied
BOLUS_REQUEST (the patient pressing the button 10,000 times). Each kind has a budget of
log entries: while it lasts a refusal is logged one by one, as always; beyond it the
refusals are counted, and the count goes into the log as one summary entry as soon as
the kind has budget again. A kind therefore puts at most `burst` entries, and one more
per interval, into the log, however many refusals it sees. The arithmetic against the
ring is docs/safety-requirements.md's SR-056.
"""

from __future__ import annotations

from dataclasses import dataclass

from .budget import Budget, next_token_ms, take

COUNT_MAX = 0xFFFF_FFFF  # a summary's count is a u32 log argument: it saturates, never wraps


@dataclass(frozen=True)
class KindLog:
    budget: Budget  # of log entries
    unlogged: int = 0  # refusals of this kind since its last entry, not logged one by one


@dataclass(frozen=True)
class Verdict:
    kind: KindLog  # after this refusal
    summary: int  # a summary entry to log first with this count (0: none)
    one_by_one: bool  # log this refusal itself


def log_refusal(k: KindLog, now_ms: int, burst: int, every_ms: int) -> Verdict:
    """SR-056: one more refusal of a kind. The count of those not logged goes out first
    when there is budget for it (so the log stays in time order); then this one is
    logged if the budget still allows, else counted."""
    k, summary = summary_due(k, now_ms, burst, every_ms)
    budget, spent = take(k.budget, now_ms, burst, every_ms)
    if spent:
        return Verdict(KindLog(budget, 0), summary, True)
    return Verdict(KindLog(budget, min(COUNT_MAX, k.unlogged + 1)), summary, False)


def summary_due(k: KindLog, now_ms: int, burst: int, every_ms: int) -> tuple[KindLog, int]:
    """SR-056: the count of refusals not logged one by one, if the kind may log it now
    (0: nothing to log, or no budget yet)."""
    if not k.unlogged:
        return k, 0
    budget, spent = take(k.budget, now_ms, burst, every_ms)
    if not spent:
        return KindLog(budget, k.unlogged), 0
    return KindLog(budget, 0), k.unlogged


def summary_at_ms(k: KindLog, burst: int, every_ms: int) -> int | None:
    """When a count waiting to be logged can be (None: none is waiting)."""
    if not k.unlogged:
        return None
    at = next_token_ms(k.budget, burst, every_ms)
    return k.budget.at_ms if at is None else at
