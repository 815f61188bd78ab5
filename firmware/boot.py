"""Power-on: restore from NVM, then doubt it, and the pump's time, against the hardware's
counters (SR-015, SR-034, SR-035, SR-042, SR-044), or as told (SR-057).

POWER_ON is the one message that cannot arrive stale after a reset: it carries the
pump's time, real-time clock, boot count and odometer. From them, and what NVM held:
  * the controller's time and local time go on from where they were, never back
    (rules/clock.py); a step back is logged and raises the clock alarm;
  * an NVM the counters prove older than the hardware, or blank on a pump that booted
    before, is a critical memory error (rules/memory.py): halted, the prescription not
    trusted, patient boluses denied for a day;
  * damaged records found by the store are logged; a lost newest copy is critical too;
  * strokes the runs before the reset made after their last report are counted, once
    HW_INFO has said what a stroke is.
"""

from __future__ import annotations

from protocol.codes import AlarmId, LogEvent, ResetCause, TherapyState
from protocol.messages import PowerOn

from .nvm import NvmFault
from .parts import Parts
from .persist import Persist, Saved
from .rules import clock as clock_rule
from .rules import lockout, memory


def power_on(p: Parts, persist: Persist, msg: PowerOn) -> int | None:
    """Restore and doubt; returns POWER_ON's odometer when the strokes since the last
    report are to be counted at HW_INFO, None when the count starts afresh."""
    saved = persist.restore(p)
    faults = persist.nvm.faults()
    verdict = clock_rule.at_boot(
        clock_rule.BootTime(
            pump_ms=msg.time_ms,
            rtc_s=msg.rtc_s,
            skew_ms=saved.skew_ms,
            offset_s=saved.offset_s,
            seen_ms=saved.seen_ms,
            seen_local_ms=saved.seen_local_ms,
        )
    )
    p.clock.boot(msg.time_ms, msg.rtc_s, verdict.skew_ms, verdict.offset_s)
    p.hardware.boot_count = msg.boot_count
    out = p.outbox
    out.record(LogEvent.BOOT, int(msg.reset_cause), msg.boot_count)
    if msg.reset_cause is ResetCause.WATCHDOG:
        out.record(LogEvent.WATCHDOG_RESET)
    out.touch("boot")
    _faults(p, persist, faults)
    facts = memory.MemoryFacts(
        nvm_blank=saved.blank,
        hw_boot_count=msg.boot_count,
        nvm_boot_count=saved.boot_count,
        hw_odometer=msg.odometer_strokes,
        nvm_odometer=p.guard.odometer,
        unreported_bound=p.guard.unreported_bound(p.clock.now_ms),
    )
    if msg.reset_cause is ResetCause.HARDWARE_REPLACED and not saved.blank:
        _hardware_replaced(p, persist, msg)
        return None
    outdated = memory.outdated(facts)
    if outdated is not None:
        out.record(LogEvent.NVM_OUTDATED, int(outdated.proof), outdated.by)
        _memory_lost(p, persist, drop_prescription=True)
        p.guard.rebase(msg.odometer_strokes)
        return None
    if verdict.went_back or memory.hardware_older(facts):
        _hardware_went_back(p, saved, verdict, msg)
        return None
    if saved.blank:
        p.guard.rebase(msg.odometer_strokes)  # a new pump
        return None
    return msg.odometer_strokes


def _hardware_went_back(p: Parts, saved: Saved, verdict: clock_rule.TimeVerdict, msg: PowerOn) -> None:
    """SR-042: the hardware restarted from older state. Time and local time go on from
    where they were (the skew and offset already say so); what the hardware counts from
    now on is its own, so the odometer is counted afresh from it."""
    out = p.outbox
    out.record(LogEvent.CLOCK_WENT_BACK, verdict.pump_back_ms // 1000, verdict.rtc_back_ms // 1000)
    known = p.guard.odometer
    if known is not None and msg.odometer_strokes < known:
        out.record(LogEvent.ODOMETER_WENT_BACK, known, msg.odometer_strokes)
    p.guard.rebase(msg.odometer_strokes)
    p.supervisor.latch(AlarmId.CLOCK_ERROR)


def _hardware_replaced(p: Parts, persist: Persist, msg: PowerOn) -> None:
    """SR-057: the hardware says it is new (its state was lost or it was replaced), so
    nothing physical the controller remembers is taken on trust: the reservoir is not known
    until a fill is recorded, the catheter's contents are not known (its volume is kept),
    the odometer is counted afresh, and a pump that was delivering is stopped, not resumed
    on a guess (the stopped-pump reminder follows). Time and local time go on from where
    they were; no clock alarm, since the cause is known. The prescription, the delivery
    history (the 24 h limit) and the log are the controller's own and stay."""
    out = p.outbox
    out.record(LogEvent.HARDWARE_REPLACED, msg.boot_count, (p.guard.odometer or 0) & 0xFFFFFFFF)
    p.guard.rebase(msg.odometer_strokes)
    e = p.engine
    e.reservoir.fill = None
    e.reservoir.volume_nl = 0
    e.catheter = None  # made again at HW_INFO from the prescription's volume: contents unknown
    s = p.supervisor
    s.resume_running = False
    if s.saved_state in (TherapyState.RUNNING, TherapyState.REFILL):
        s.saved_state = TherapyState.STOPPED
    persist.rewrite_all(p)


def _faults(p: Parts, persist: Persist, faults: list[NvmFault]) -> None:
    """SR-034: log what the store found damaged. A lost record (or an unreadable minute of
    the delivery history) leaves the controller unable to vouch for its own state."""
    if not faults:
        return
    lost = set()
    for f in faults:
        p.outbox.record(LogEvent.NVM_ERROR, f.record_id, f.slots | (f.position << 2))
        if f.critical:
            lost.add(f.record)
    persist.rewrite_all(p)
    if lost:
        history = bool(lost & {"superblock", "history", "bolus_starts"})
        _memory_lost(p, persist, drop_prescription=False, history_lost=history)


def _memory_lost(p: Parts, persist: Persist, drop_prescription: bool, history_lost: bool = True) -> None:
    """A critical memory error: the memory-error alarm halts therapy until a clinician
    acknowledges it, and the pump never resumes on its own after that. When what was
    delivered in the last 24 h is not known, no patient bolus for a day."""
    s = p.supervisor
    s.resume_running = False
    if drop_prescription:
        p.engine.rx = None  # an older copy's prescription is not the one in force
    if history_lost:
        p.engine.lockout_until_ms = lockout.after_memory_loss(p.clock.now_ms, p.engine.lockout_until_ms)
    persist.rewrite_all(p)
    s.latch(AlarmId.MEMORY_ERROR)
