"""Timed boluses at their times of day (SR-053): the wake-up's part that deals with each
occurrence once.

The controller asks this at every wake-up, before the delivery engine plans a run. The
earliest timed bolus due and not yet dealt with goes to its rule
(firmware/rules/timed_bolus.py), and the verdict is applied: started as a bolus like any
other (a basal run gives way; the engine plans its runs and the guard admits each), or
not given and logged; either way it is marked dealt with, committed to NVM with the
bolus's start, so a reset never gives it again. A bolus in progress holds it until it
ends. Returns when to look again.
"""

from __future__ import annotations

from dataclasses import replace

from protocol.codes import BolusKind, LogEvent, TimedBolusOutcome

from .delivery import ActiveBolus
from .dose import volume_nl
from .history import MINUTE_MS
from .parts import Parts
from .prescription import MAX_TIMED
from .rules import timed_bolus

HELD_POLL_MS = 1_000  # held by a bolus that runs past its planned end: look again this often


def serve(p: Parts) -> int | None:
    e = p.engine
    rx, lim = e.rx, p.hardware.limits
    if rx is None or not rx.timed or lim is None or e.catheter is None:
        return None
    clock = p.clock
    if e.timed_done_local_ms is None:
        e.timed_done_local_ms = clock.local_ms  # not known which were given: none of the past
        p.outbox.touch("timed")
    for _ in range(MAX_TIMED + 1):  # at most a day of them at once (rules/timed_bolus.py)
        local = clock.local_ms
        occ = timed_bolus.first_pending(rx.timed, e.timed_done_local_ms, local)
        if occ is None:
            break
        s = p.supervisor
        t = rx.timed[occ.index]
        window = e.window(s.running)
        outcome = timed_bolus.decide(
            timed_bolus.TimedFacts(
                late_ms=local - occ.due_local_ms,
                grace_ms=p.config.timed_bolus_grace_ms,
                running=s.running,
                high_alarm=s.high_alarm(),
                bolus_active=e.bolus is not None,
                dose_fg=timed_bolus.given_fg(t.dose_ng, e.tip_stroke_fg()),  # as it will be given
                window=replace(window, timed_fg=e.timed_plan(occ.due_local_ms, window.stroke_fg)),
                reservoir_nl=e.reservoir.volume_nl,
                volume_nl=volume_nl(t.dose_ng, rx.concentration_ng_per_ml),
                empty_level_nl=e.empty_level_nl,
            )
        )
        if outcome is None:
            return max(e.bolus.end_ms, clock.now_ms + HELD_POLL_MS)
        e.timed_done_local_ms = occ.due_local_ms
        p.outbox.touch("timed")
        p.outbox.record(LogEvent.TIMED_BOLUS, occ.index, int(outcome))
        if outcome is TimedBolusOutcome.STARTED:
            strokes = e.bolus_strokes(t.dose_ng)
            e.start_bolus(
                ActiveBolus(
                    # Not a host's command: the local minute it fell due names it (once).
                    command_id=occ.due_local_ms // MINUTE_MS & 0xFFFF_FFFF,
                    kind=BolusKind.TIMED,
                    dose_ng=t.dose_ng,
                    volume_nl=strokes * lim.stroke_nl,
                    duration_s=t.duration_s,
                    started_ms=clock.now_ms,
                    planned_strokes=strokes,
                    interval_ms=max(lim.min_stroke_interval_ms, t.duration_s * 1000 // strokes),
                )
            )
        e.project_low(s.running)
    nxt = timed_bolus.next_after(rx.timed, max(e.timed_done_local_ms, clock.local_ms))
    return clock.now_ms + (nxt.due_local_ms - clock.local_ms)
