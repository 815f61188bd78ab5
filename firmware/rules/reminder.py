"""A pump left stopped reminds (SR-050).

Stopping everything is not a safe state for intrathecal therapy: a pump stopped for a
scan or a procedure and never started again leaves the patient without drug, silently
(the Generic PCA requirements and the MiniMed 2007 implantable alarm when a pump stays
paused). So once therapy has not run for longer than the reminder time (1 h by default,
`therapy_stopped_alarm_ms`) on a pump that has a prescription and a recorded fill, the
`therapy_stopped` alarm is raised: low priority, medium for a drug whose withdrawal is
dangerous (baclofen: the drug library's `withdrawal = "dangerous"`). It is present while
therapy is stopped or a refill is left open; while therapy is halted the high alarm that
halted it already says so, and the time still counts. Starting therapy clears it.

Time not running is counted from when therapy stopped, and a run only starts the count
afresh once it has lasted the reminder time itself: a shorter run pauses it, so starting
and stopping again does not put the reminder off. The count is kept in NVM, so a reset
does not either.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import Priority, TherapyState

# Therapy not running by a person's decision: a pump left like this reminds.
LEFT_STOPPED = (TherapyState.STOPPED, TherapyState.REFILL)


@dataclass(frozen=True)
class StoppedFacts:
    now_ms: int
    state: TherapyState
    commissioned: bool  # a prescription in force and a fill recorded
    stopped_since_ms: int | None  # time not running counts from here (see stopped_since_after_run)
    remind_after_ms: int
    withdrawal_dangerous: bool  # the drug library says so of the drug in force


@dataclass(frozen=True)
class Reminder:
    present: bool
    priority: Priority
    due_ms: int | None  # when it will be present if nothing changes; None if it is, or will not be


def therapy_stopped(f: StoppedFacts) -> Reminder:
    """SR-050: whether the therapy_stopped alarm's condition holds now, at which priority,
    and when it will otherwise."""
    priority = Priority.MEDIUM if f.withdrawal_dangerous else Priority.LOW
    if f.state not in LEFT_STOPPED or not f.commissioned or f.stopped_since_ms is None:
        return Reminder(False, priority, None)
    due = f.stopped_since_ms + f.remind_after_ms
    if f.now_ms >= due:
        return Reminder(True, priority, None)
    return Reminder(False, priority, due)


def stopped_since_after_run(
    stopped_since_ms: int | None, run_since_ms: int | None, now_ms: int, remind_after_ms: int
) -> int:
    """SR-050: therapy stops running at now_ms, having run since run_since_ms. A run of the
    reminder time or longer starts the count of time not running afresh; a shorter one
    only paused it (the count goes on from where it was)."""
    if stopped_since_ms is None or run_since_ms is None or now_ms - run_since_ms >= remind_after_ms:
        return now_ms
    return stopped_since_ms + (now_ms - run_since_ms)
