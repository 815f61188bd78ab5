"""What the parts commit to NVM, and what they are restored from at boot (SR-033, SR-035).

Each part touches the records its change affects (firmware/outbox.py); after each input
that changed anything the controller commits exactly those, before anything queued goes
out on the pump link. Records group what changes together: a stroke rewrites `delivery`
(basal owed, reservoir, catheter, bolus, odometer, runs, and how far time had got) and
one history minute; a patient bolus adds `bolus_starts` and `limits`. Whether the NVM
restored can be trusted is the boot's question (firmware/boot.py), answered from `Saved`.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import LogEvent, Role, TherapyState

from .catheter import Catheter
from .delivery import ActiveBolus, Fill
from .dose import BasalAccumulator
from .eventlog import LogRecord
from .guard import Run
from .history import BUCKETS, MINUTE_MS, DeliveryHistory
from .nvm import Nvm
from .parts import Parts
from .prescription import Prescription


@dataclass(frozen=True)
class Saved:
    """What NVM held that the boot doubts against the hardware."""

    blank: bool  # nothing at all: a new pump, or a memory lost
    boot_count: int | None
    seen_ms: int | None  # the latest controller time committed
    seen_local_ms: int | None
    skew_ms: int
    offset_s: int


class Persist:
    def __init__(self, nvm: Nvm) -> None:
        self.nvm = nvm
        self._log_oldest = 1  # oldest log entry NVM holds

    # ------------------------------------------------------------ boot

    def restore(self, p: Parts) -> Saved:
        """Every part as NVM holds it (on a new pump: the keys it was handed are queued to
        be provisioned)."""
        data = self.nvm.load() or {}
        self._log_oldest = 1
        st = data.get("state")
        if st is not None:
            p.supervisor.saved_state = TherapyState(st[0])
            p.supervisor.resume_running = bool(st[1])
            if len(st) > 3:  # (the reminder's count of time not running, since issue 12)
                p.supervisor.stopped_since_ms, p.supervisor.run_since_ms = st[2], st[3]
        rx = data.get("prescription")
        e = p.engine
        e.rx = Prescription.from_dict(rx) if rx else None
        d = data.get("delivery")
        clock = None
        if d is not None:
            (
                owed,
                at_ms,
                e.reservoir.volume_nl,
                e.delivered_total_nl,
                cath,
                bolus,
                odometer,
                last_stroke,
                runs,
                clock,
            ) = d
            e.acc = BasalAccumulator(owed, at_ms)
            if cath is not None:
                e.catheter = Catheter.from_data(cath)
            e.bolus = ActiveBolus.from_data(bolus) if bolus else None
            p.guard.restore(odometer, last_stroke, [Run.from_data(r) for r in runs])
        fill = data.get("fill")
        e.reservoir.fill = Fill(fill[0], fill[1]) if fill else None
        if "history" in data or "bolus_starts" in data:
            # Minutes older than the rolling 24 h may still be in the ring (their slots are
            # reused a day later, not erased): loading drops them.
            e.history = DeliveryHistory.from_data(data.get("history", {}), data.get("bolus_starts", []))
        if "alarms" in data:
            p.alarms.load(data["alarms"])
        log = data.get("log")
        if log:
            entries = sorted((int(q), v) for q, v in data.get("log_entries", {}).items())
            p.log.entries.clear()
            p.log.entries.extend(LogRecord(q, t, LogEvent(ev), a0, a1) for q, (t, ev, a0, a1) in entries)
            p.log.next_seq = log["next_seq"]
            self._log_oldest = p.log.oldest_seq
        e.timed_done_local_ms = data.get("timed")
        limits = data.get("limits")
        if limits is not None:
            e.lockout_until_ms, p.commands.last_id, recent = limits
            p.commands.recent.extend(recent)
        keys = data.get("keys")
        if keys:
            if p.auth.use_keys(
                {Role(int(r)): bytes.fromhex(k) for r, k in keys.items()},
                {int(k): v for k, v in (data.get("auth_counters") or {}).items()},
            ):
                p.outbox.touch("keys")  # provisioned before pump keys: add the one handed over
        else:
            p.outbox.touch("keys")  # a new pump: provision the keys it was handed into NVM
        seen_ms, seen_local_ms, skew_ms, offset_s = clock if clock else (None, None, 0, 0)
        return Saved(
            blank=not data,
            boot_count=data.get("boot"),
            seen_ms=seen_ms,
            seen_local_ms=seen_local_ms,
            skew_ms=skew_ms,
            offset_s=offset_s,
        )

    # ------------------------------------------------------------ commit

    def commit(self, p: Parts) -> None:
        """Write what changed, all of it or none, before the pump is told anything further."""
        touched = p.outbox.touched
        if not touched:
            return
        nvm = self.nvm
        c = p.clock
        e = p.engine
        s = p.supervisor
        if "state" in touched:
            state = s.state if s.state is not TherapyState.BOOT else s.saved_state
            nvm.save("state", [int(state), int(s.resume_running), s.stopped_since_ms, s.run_since_ms])
        if "prescription" in touched:
            nvm.save("prescription", e.rx.to_dict() if e.rx else None)
        # Every commit writes `delivery`, which says how far time had got: at the next boot,
        # a pump whose time is earlier than this restarted from older state (rules/clock.py).
        g = p.guard
        nvm.save(
            "delivery",
            [
                e.acc.owed,
                e.acc.at_ms,
                e.reservoir.volume_nl,
                e.delivered_total_nl,
                e.catheter.to_data() if e.catheter else None,
                e.bolus.to_data() if e.bolus else None,
                g.odometer,
                g.last_stroke_ms,
                g.runs_data(),
                [c.now_ms, c.local_ms, c.skew_ms, c.offset_s],
            ],
        )
        h = e.history
        if h.dirty_minutes:
            # A history minute shares its ring slot with the minute a window earlier, and
            # replaces it (a minute already out of the window is not written back).
            lo = c.now_ms // MINUTE_MS - (BUCKETS - 1)
            fresh = [m for m in h.dirty_minutes if m >= lo]
            nvm.save_items("history", {m: h.bucket(m) for m in fresh}, [m - BUCKETS for m in fresh])
            h.dirty_minutes.clear()
        if "fill" in touched:
            fill = e.reservoir.fill
            nvm.save("fill", [fill.drug, fill.concentration_ng_per_ml] if fill else None)
        if "bolus_starts" in touched:
            nvm.save("bolus_starts", list(e.history.bolus_starts))
        if "alarms" in touched:
            nvm.save("alarms", p.alarms.to_data())
        if "log" in touched:
            # The entries themselves, not only the numbering: the log must outlive a reset.
            oldest = p.log.oldest_seq
            unsaved = p.outbox.unsaved
            fresh = {str(r.seq): [r.time_s, int(r.event), r.arg0, r.arg1] for r in unsaved if r.seq >= oldest}
            gone = [str(q) for q in range(self._log_oldest, oldest)]
            nvm.save_items("log_entries", fresh, gone)
            nvm.save("log", {"next_seq": p.log.next_seq})
            unsaved.clear()
            self._log_oldest = oldest
        if "limits" in touched:
            nvm.save("limits", [e.lockout_until_ms, p.commands.last_id, list(p.commands.recent)])
        if "timed" in touched:
            nvm.save("timed", e.timed_done_local_ms)  # SR-053: a timed bolus is dealt with once
        if "auth" in touched:
            nvm.save("auth_counters", p.auth.counters_data())
        if "keys" in touched:
            nvm.save("keys", p.auth.keys_data())
        if "boot" in touched:
            nvm.save("boot", p.hardware.boot_count)
        nvm.commit()
        touched.clear()

    def rewrite_all(self, p: Parts) -> None:
        """After damage was found: every record is written again at the next commit, so
        damaged copies are replaced."""
        p.outbox.touch("state", "prescription", "delivery", "fill", "bolus_starts", "alarms", "log", "limits", "timed")
        p.outbox.touch("auth", "keys", "boot")
