"""The delivery engine: credulous bookkeeping of therapy, and what to run next.

It holds the prescription, the basal accumulator, the bolus in progress, the catheter's
contents, the reservoir estimate and the rolling 24 h history; it turns the strokes the
guard counted into volume and drug (at the catheter tip, where it reaches the patient)
and plans the next run. It decides nothing about safety: it asks the guard
(firmware/guard.py), which alone may move the mechanism, and the rules answer for both.
"""

from __future__ import annotations

from protocol.codes import BolusKind, BolusOutcome, CatheterState, LogEvent, TherapyState
from protocol.messages import BolusFinished, BolusStarted

from .catheter import Catheter
from .clock import Clock
from .config import FirmwareConfig
from .delivery import ActiveBolus
from .dose import FG_PER_NG, MS_PER_DAY, BasalAccumulator, next_change_ms, rate_at, stroke_fg, strokes_for
from .guard import DeliveryFacts, Guard, Made, RunRequest
from .hardware import Hardware
from .history import DeliveryHistory
from .outbox import Outbox
from .prescription import Prescription
from .reservoir import Reservoir
from .rules import catchup, limit24h, lockout, timed_bolus
from .rules import reservoir as reservoir_rule
from .rules.run import Purpose

MILESTONE_NL = 1_000_000  # a log entry for every whole mL delivered
HELD_RETRY_MS = 60_000  # basal held by the hard limit or the reservoir: look again this often


class Engine:
    def __init__(self, clock: Clock, config: FirmwareConfig, hardware: Hardware, outbox: Outbox, guard: Guard) -> None:
        self.clock = clock
        self.config = config
        self.hardware = hardware
        self.outbox = outbox
        self.guard = guard
        self.rx: Prescription | None = None
        self.acc = BasalAccumulator()
        self.catheter: Catheter | None = None
        self.reservoir = Reservoir(20_000, 0)
        self.history = DeliveryHistory()
        self.bolus: ActiveBolus | None = None
        self.delivered_total_nl = 0  # counted from strokes made, since manufacture
        self.lockout_until_ms = 0  # no patient bolus before this
        self.low_at_ms: int | None = None  # projected time of the low-reservoir alarm
        self.low_worst_at_ms: int | None = None  # the same with every patient bolus allowed (SR-054)
        # SR-053: local time of the latest timed bolus dealt with (given, refused, missed);
        # none at or before it is ever given. None: not known (then now).
        self.timed_done_local_ms: int | None = None

    # ------------------------------------------------------------ facts

    @property
    def empty_level_nl(self) -> int:
        return self.config.empty_reservoir_ul * 1000

    @property
    def reservoir_known(self) -> bool:
        """A fill has been recorded: before the first, what the reservoir holds is not known
        (a new pump), and nothing is judged or delivered on a guess."""
        return self.reservoir.fill is not None

    def reservoir_empty(self) -> bool:
        lim = self.hardware.limits
        return reservoir_rule.is_empty(self.reservoir.volume_nl, self.empty_level_nl, lim.stroke_nl if lim else None)

    @property
    def reservoir_ng_per_ml(self) -> int:
        """What the reservoir holds: the last fill's concentration, else the programmed one."""
        fill = self.reservoir.fill
        if fill is not None:
            return fill.concentration_ng_per_ml
        return self.rx.concentration_ng_per_ml if self.rx else 0

    def tip_stroke_fg(self) -> int:
        """Drug in one stroke leaving the catheter tip now."""
        conc = self.catheter.tip_concentration if self.catheter and self.catheter.segments else 0
        if not conc and self.rx:
            conc = self.rx.concentration_ng_per_ml
        return stroke_fg(self.hardware.limits.stroke_nl, conc)

    def bolus_strokes(self, dose_ng: int) -> int:
        """Whole strokes nearest a bolus dose at the drug now leaving the catheter tip."""
        return strokes_for(dose_ng, self.tip_stroke_fg())

    @property
    def max_dose_24h_fg(self) -> int:
        return self.rx.max_dose_24h_ng * FG_PER_NG if self.rx else 0

    def delivery_facts(self, state: TherapyState, high_alarm: bool) -> DeliveryFacts:
        return DeliveryFacts(
            state=state,
            high_alarm=high_alarm,
            reservoir_nl=self.reservoir.volume_nl,
            window_fg=self.history.window_fg(self.clock.now_ms),
            catheter=self.catheter.segments_tip_first() if self.catheter else (),
            reservoir_ng_per_ml=self.reservoir_ng_per_ml,
            max_dose_24h_fg=self.max_dose_24h_fg,
        )

    def window(self, running: bool) -> limit24h.Window:
        """The rolling 24 h as a bolus decision projects it (a prescription is in force)."""
        rx = self.rx
        now = self.clock.now_ms
        conc = max(rx.concentration_ng_per_ml, self.catheter.tip_concentration if self.catheter else 0)
        return limit24h.Window(
            now_ms=now,
            local_ms=self.clock.local_ms,
            past_per_minute_fg=tuple(self.history.per_minute(now)),
            basal=rx.basal,
            owed_fg=self._owed_now_fg() if running else 0,
            max_dose_24h_fg=rx.max_dose_24h_ng * FG_PER_NG,
            stroke_fg=self.hardware.limits.stroke_nl * conc,
            timed_fg=self.timed_plan(self.timed_after_local_ms(), self.hardware.limits.stroke_nl * conc),
        )

    def timed_after_local_ms(self) -> int:
        """SR-053: timed boluses due after this local time are still to come (one held by a
        bolus in progress included)."""
        local = self.clock.local_ms
        done = local if self.timed_done_local_ms is None else self.timed_done_local_ms
        return timed_bolus.planned_after(done, local, self.config.timed_bolus_grace_ms)

    def timed_plan(self, after_local_ms: int, stroke_fg: int) -> tuple[tuple[int, int], ...]:
        """SR-053: the timed boluses due after after_local_ms within two days (what a
        rolling-24 h projection looks at), as (ms from now, fg as given in strokes of
        stroke_fg). Counted whether therapy runs or not: a single bolus is judged as if
        therapy started after it, as basal is."""
        return timed_bolus.planned_fg(self.rx.timed, after_local_ms, self.clock.local_ms, 2 * MS_PER_DAY, stroke_fg)

    def _owed_now_fg(self) -> int:
        """Basal accrued up to now and not yet delivered (fg). The accumulator is brought
        up to date at strokes and wake-ups, not continuously, so its owed lags by the
        time since (it can even read negative mid-run): a copy is accrued to now instead,
        or a projection would leave out up to a stroke that is already due."""
        acc = BasalAccumulator(self.acc.owed, self.acc.at_ms)
        acc.accrue(self.rx.basal, self.clock.local_ms)
        return max(0, acc.owed) // MS_PER_DAY

    def drug_out_fg(self, volume_nl: int) -> int:
        """What pushing volume_nl (whole strokes) would put out of the catheter tip."""
        stroke_nl = self.hardware.limits.stroke_nl
        segments = self.catheter.segments_tip_first() if self.catheter else ()
        return limit24h.drug_out_fg(segments, self.reservoir_ng_per_ml, stroke_nl, -(-volume_nl // stroke_nl))

    # ------------------------------------------------------------ basal

    def accrue(self) -> None:
        """Bring basal owed up to now (therapy running), giving up what is owed beyond the
        catch-up limit (rules/catchup.py)."""
        rx = self.rx
        # Not committed by itself: after a reset basal accrues afresh from the boot (the
        # accumulator's owed is committed with every stroke that pays it).
        self.acc.accrue(rx.basal, self.clock.local_ms)
        if self.hardware.limits is None or self.catheter is None:
            return
        sfg = self.tip_stroke_fg()
        most = max(s.rate_ng_per_day for s in rx.basal)
        give_up = catchup.strokes_to_forfeit(self.acc.owed, sfg * MS_PER_DAY, most, self.config.basal_catchup_max_ms)
        if give_up:
            self.acc.pay(give_up * sfg * MS_PER_DAY)
            self.outbox.record(LogEvent.BASAL_FORFEITED, give_up, give_up * sfg // FG_PER_NG)
            self.outbox.touch("delivery")

    def restart_accrual(self) -> None:
        """Basal is owed from now on (therapy starts running, or the clock was set): none
        for time spent not running, nor for a jump of the clock."""
        self.acc.at_ms = self.clock.local_ms
        self.outbox.touch("delivery")

    # ------------------------------------------------------------ the prescription and the reservoir

    def program(self, rx: Prescription, running: bool) -> None:
        if running:
            self.acc.accrue(self.rx.basal, self.clock.local_ms)  # the old schedule up to now
        self.rx = rx
        if self.catheter is not None:
            was = self.catheter.state
            self.catheter.program(rx.catheter_volume_nl, self.reservoir_ng_per_ml)
            self._catheter_changed(was)
        pb = rx.patient_bolus
        self.lockout_until_ms = lockout.after_change(
            self.clock.now_ms, pb.lockout_s if pb else None, self.lockout_until_ms
        )
        self.guard.stop_if(Purpose.BASAL)  # SR-013: no run planned at the old rate goes on
        # SR-053: a new schedule starts at its next time, never at one already past (nor
        # gives again one that was dealt with under the old schedule).
        local = self.clock.local_ms
        done = self.timed_done_local_ms
        self.timed_done_local_ms = local if done is None else max(done, local)
        self.outbox.touch("prescription", "delivery", "limits", "timed")

    def replace_catheter(self, command_id: int) -> None:
        """SR-049: a new, empty catheter of the prescription's volume (the clinician says so)."""
        was = self.catheter.state
        self.catheter.replaced(self.rx.catheter_volume_nl, self.clock.now_ms)
        self.outbox.record(LogEvent.CATHETER_REPLACED, command_id, self.catheter.volume_nl)
        self._catheter_changed(was)
        self.outbox.touch("delivery")

    def _catheter_changed(self, was: CatheterState) -> None:
        now = self.catheter.state
        if now is not was:
            self.outbox.record(LogEvent.CATHETER_STATE, int(was), int(now))

    # ------------------------------------------------------------ boluses

    def start_bolus(self, b: ActiveBolus) -> None:
        self.bolus = b
        if b.kind is BolusKind.PATIENT:
            now = self.clock.now_ms
            self.history.record_bolus_start(now)
            self.lockout_until_ms = lockout.after_patient_bolus(
                now, self.rx.patient_bolus.lockout_s, self.lockout_until_ms
            )
            self.outbox.touch("limits", "bolus_starts")
        self.guard.stop()  # a basal run gives way; what it owed stays owed
        self.outbox.record(LogEvent.BOLUS_STARTED, b.command_id, int(b.kind))
        self.outbox.host_event(
            BolusStarted(
                time_s=self.clock.now_s,
                command_id=b.command_id,
                kind=b.kind,
                dose_ng=b.dose_ng,
                volume_nl=b.volume_nl,
                duration_s=b.duration_s,
            )
        )
        self.outbox.touch("delivery")

    def end_bolus(self, outcome: BolusOutcome) -> None:
        b = self.bolus
        if b is None:
            return
        self.bolus = None
        if self.guard.run is not None and self.guard.run.purpose is not Purpose.BASAL:
            self.guard.stop()
        if outcome is not BolusOutcome.COMPLETED:
            # SR-011: abandoned, the undelivered part counts toward the limits as if given.
            left = b.dose_ng * FG_PER_NG - b.delivered_fg
            if left > 0:
                self.history.add(self.clock.now_ms, left)
        self.outbox.record(LogEvent.BOLUS_FINISHED, b.command_id, int(outcome))
        self.outbox.host_event(
            BolusFinished(
                time_s=self.clock.now_s,
                command_id=b.command_id,
                kind=b.kind,
                outcome=outcome,
                delivered_ng=b.delivered_fg // FG_PER_NG,
                delivered_nl=b.delivered_nl,
            )
        )
        self.outbox.touch("delivery")

    def bolus_active_until_ms(self) -> int | None:
        return self.bolus.end_ms if self.bolus is not None else None

    def project_low(self, running: bool) -> None:
        """SR-016, SR-053, SR-054: when the low-reservoir alarm will come at the basal
        schedule and the timed boluses, and the same if the patient also takes every
        patient bolus allowed (Prometra's refill date); None when not running, no
        prescription, or already low. Recomputed at bolus starts, timed boluses, program
        changes and refills, as Prometra's PTC does."""
        rx = self.rx
        self.low_at_ms = self.low_worst_at_ms = None
        if rx is None or not running or not self.reservoir_known:
            return
        volume = self.reservoir.volume_nl
        if self.bolus is not None:
            volume -= max(0, self.bolus.volume_nl - self.bolus.delivered_nl)
        now, local = self.clock.now_ms, self.clock.local_ms
        conc = rx.concentration_ng_per_ml
        stroke = self.hardware.limits.stroke_nl * conc if self.hardware.limits else 0
        daily = timed_bolus.daily_fg(rx.timed, stroke)
        after = self.timed_after_local_ms()

        def at(every: reservoir_rule.EveryBolus | None) -> int | None:
            due = reservoir_rule.low_at_local_ms(
                rx.basal, local, volume, rx.low_reservoir_ul, conc, daily, after, every_bolus=every
            )
            return None if due is None else now + (due - local)

        self.low_at_ms = at(None)
        pb = rx.patient_bolus
        self.low_worst_at_ms = self.low_at_ms if pb is None else at(self._every_bolus(stroke))

    def _every_bolus(self, stroke_fg: int) -> reservoir_rule.EveryBolus:
        """SR-054: the patient pressing as soon as the lockout and the count allow."""
        pb = self.rx.patient_bolus
        now = self.clock.now_ms
        first = max(now, self.lockout_until_ms, self.bolus.end_ms if self.bolus is not None else now)
        starts = [t for t in self.history.bolus_starts if now - t < MS_PER_DAY]
        if len(starts) >= pb.max_per_24h:
            first = max(first, starts[len(starts) - pb.max_per_24h] + MS_PER_DAY)
        return reservoir_rule.EveryBolus(
            first_local_ms=self.clock.local_ms + (first - now),
            dose_fg=timed_bolus.given_fg(pb.dose_ng, stroke_fg),
            lockout_ms=pb.lockout_s * 1000,
            max_per_24h=pb.max_per_24h,
        )

    # ------------------------------------------------------------ counting what was made

    def count(self, made: Made, running: bool) -> None:
        """Strokes the guard counted: volume out of the reservoir, drug out of the catheter
        tip into the rolling 24 h, and the basal or the bolus they paid. Strokes of a bolus
        that has ended count as drug only."""
        stroke_nl = self.hardware.limits.stroke_nl
        res_conc = self.reservoir_ng_per_ml
        b = self.bolus
        bolus = b if made.purpose is not Purpose.BASAL and b is not None and b.command_id == made.bolus_id else None
        basal = made.purpose is Purpose.BASAL
        if self.rx is not None and running:
            # Keep basal accrued up to each stroke, so the accumulator (and what NVM holds
            # of it) is never a run behind: a reset loses at most the time since the last
            # stroke, not the time a whole run covered.
            self.acc.accrue(self.rx.basal, self.clock.local_ms)
        now = self.clock.now_ms
        cath = self.catheter
        was = cath.state if cath else None
        for _ in range(made.strokes):
            fg = cath.push(stroke_nl, res_conc) if cath else stroke_nl * res_conc
            self.reservoir.delivered(stroke_nl)
            if bolus is not None:
                bolus.made += 1
                bolus.delivered_nl += stroke_nl
                bolus.delivered_fg += fg
            elif basal:
                self.acc.pay(fg * MS_PER_DAY)
            self.history.add(now, fg)
        if cath is not None:
            self._catheter_changed(was)
        before = self.delivered_total_nl // MILESTONE_NL
        self.delivered_total_nl += made.strokes * stroke_nl
        if self.delivered_total_nl // MILESTONE_NL != before:
            self.outbox.record(LogEvent.DELIVERY_MILESTONE, self.delivered_total_nl // MILESTONE_NL)
        self.outbox.touch("delivery")

    # ------------------------------------------------------------ what to run next

    def deliver(self, state: TherapyState, high_alarm: bool) -> int | None:
        """With no run going: ask the guard for the next run if one is due; return when to
        look again (controller time), None when nothing will fall due."""
        rx = self.rx
        lim = self.hardware.limits
        if rx is None or lim is None or self.catheter is None:
            return None
        now = self.clock.now_ms
        sfg = self.tip_stroke_fg()
        ready = self.guard.ready_ms()
        b = self.bolus
        if b is not None:
            left = b.remaining_strokes(sfg)
            if left == 0:
                self.end_bolus(BolusOutcome.COMPLETED)
            elif ready > now:
                return ready
            else:
                req = RunRequest(
                    Purpose(int(b.kind)),
                    min(max(1, self._cap_run(left)), lim.max_strokes_per_run),
                    max(b.interval_ms, lim.min_stroke_interval_ms),
                    b.command_id,
                )
                if self.guard.admit(req, self.delivery_facts(state, high_alarm)):
                    return None
                self.end_bolus(BolusOutcome.INTERRUPTED)
        if state is not TherapyState.RUNNING:
            return None  # (a priming bolus while stopped): no basal accrues while stopped
        # Basal: accrue to now, pay what is owed (held back during a bolus, never dropped).
        self.accrue()
        cost = sfg * MS_PER_DAY
        owed = self.acc.strokes_due(cost)  # negative while a run paid ahead of accrual
        if owed > 0 and ready > now:
            return ready
        if owed > 0:
            n, interval_ms = self._basal_run_plan(owed, cost)
            window_fg = self.history.window_fg(now)
            n = limit24h.strokes_within(window_fg, sfg, self.max_dose_24h_fg, self._cap_run(n))
            if n:
                req = RunRequest(Purpose.BASAL, min(n, lim.max_strokes_per_run), interval_ms)
                if self.guard.admit(req, self.delivery_facts(state, high_alarm)):
                    return None
            return now + HELD_RETRY_MS
        due_local = self.acc.due_at_ms(rx.basal, cost)
        if due_local is None:
            return now + MS_PER_DAY
        return now + max(1, due_local - self.clock.local_ms)

    def _basal_run_plan(self, owed: int, cost: int) -> tuple[int, int]:
        """Strokes and interval for the next basal run.

        Strokes already owed (after a bolus, say) are paid out at a gentle fixed pace.
        Otherwise one stroke is due now and the run carries on at the current rate's
        stroke spacing (rounded up, so no stroke is ever early) up to the next schedule
        change: the controller then wakes once per stroke, for the progress report,
        instead of twice. The accumulator still pays stroke by stroke."""
        lim = self.hardware.limits
        if owed > 1:
            return owed, lim.min_stroke_interval_ms * self.config.payout_interval_factor
        rx = self.rx
        tod = self.clock.local_ms % MS_PER_DAY
        rate_fg = rate_at(rx.basal, tod) * FG_PER_NG
        if rate_fg <= 0:
            return 1, lim.min_stroke_interval_ms
        interval = max(lim.min_stroke_interval_ms, -(-cost // rate_fg))
        until_change = next_change_ms(rx.basal, tod) - tod
        n = 1 + max(0, until_change - 1) // interval
        return max(1, min(n, lim.max_strokes_per_run)), interval

    def _strokes_to_bridge_end(self) -> int | None:
        """While bridging: strokes until the tip segment (the old drug) is pushed out (the
        last of them may carry some of the new drug). A run must end there, since from
        then on a stroke carries a different dose; None when not bridging."""
        cath = self.catheter
        if cath is None or not cath.bridging:
            return None
        return max(1, -(-cath.segments[0][0] // self.hardware.limits.stroke_nl))

    def _cap_run(self, n: int) -> int:
        """A run's strokes cut to what fits above the empty level and to the bridge end."""
        lim = self.hardware.limits
        n = min(n, reservoir_rule.strokes_above_empty(self.reservoir.volume_nl, self.empty_level_nl, lim.stroke_nl))
        bridge = self._strokes_to_bridge_end()
        return n if bridge is None else min(n, bridge)
