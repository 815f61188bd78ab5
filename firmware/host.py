"""Host requests relayed to the controller: check, act, answer exactly once.

Order of checks for every frame: it must be a host request (anything else, pump-link
types included, is UNKNOWN_TYPE), then authentic and fresh (AUTH_FAILED, REPLAYED), then
allowed for the signer's role (NOT_PERMITTED), then well-formed (BAD_LENGTH,
OUT_OF_RANGE), then allowed in the current state. Authentication comes before parsing so
an unauthenticated sender learns nothing about the payload. A refusal changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import accumulate
from typing import TYPE_CHECKING

from protocol import codec
from protocol.codes import AlarmId, BolusKind, LogEvent, NakReason
from protocol.errors import DecodeError
from protocol.framing import PROTOCOL_VERSION, Frame, FrameErrorKind, parse_body
from protocol.messages import (
    REGISTRY,
    AlarmAck,
    AlarmAckAck,
    AlarmEntry,
    BolusRequest,
    BolusRequestAck,
    ClinicianBolus,
    ClinicianBolusAck,
    Hello,
    HelloAck,
    LogEntry,
    LogRead,
    LogReadAck,
    Message,
    Prime,
    PrimeAck,
    Program,
    ProgramAck,
    ReadPrescription,
    ReadPrescriptionAck,
    RefillBegin,
    RefillBeginAck,
    RefillComplete,
    RefillCompleteAck,
    SetClock,
    SetClockAck,
    Start,
    StartAck,
    Status,
    StatusAck,
    Stop,
    StopAck,
)
from protocol.schema import NONE_U64

from . import bolus as bolus_rule
from .delivery import ActiveBolus
from .dose import FG_PER_NG, MS_PER_DAY, BasalAccumulator, strokes_for, volume_nl
from .history import BUCKETS, MINUTE_MS, max_future_window_fg
from .prescription import MAX_BOLUS_DURATION_S, MIN_BOLUS_DURATION_S, Prescription, PrescriptionError, validate

if TYPE_CHECKING:
    from .controller import Controller

FIRMWARE_VERSION = "0.1.0"  # reported in HELLO_ACK
LOG_PAGE_MAX = 32
CLOCK_MIN_S = 946_684_800  # 2000-01-01
CLOCK_MAX_S = 4_102_444_800  # 2100-01-01


class Refusal(Exception):
    def __init__(self, reason: NakReason, field: str = "", detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


def handle_frame(ctl: Controller, body: bytes) -> None:
    from .controller import is_host_request, verify_role

    f = parse_body(body)
    if not isinstance(f, Frame):
        if f.msg_type is not None and f.kind is FrameErrorKind.BAD_LENGTH:
            ctl.host_reply(codec.nak_for(f.msg_type, NakReason.BAD_LENGTH, "", "frame length"), f.seq)
        return
    t, seq = f.msg_type, f.seq
    if not is_host_request(t) or t not in REGISTRY:
        ctl.host_reply(codec.nak_for(t, NakReason.UNKNOWN_TYPE, "", f"0x{t:02X} is not a host request"), seq)
        return
    role, nak, detail = verify_role(ctl, f)
    if nak is not None:
        ctl.host_reply(codec.nak_for(t, nak, "", detail), seq)
        return
    cls = REGISTRY[t]
    if role not in cls.ROLES:
        ctl.log_event(LogEvent.NOT_PERMITTED, int(role), t)
        ctl.host_reply(
            codec.nak_for(t, NakReason.NOT_PERMITTED, "", f"{role.name.lower()} may not send {cls.NAME}"), seq
        )
        return
    try:
        msg = codec.decode(f)
    except DecodeError as e:
        ctl.log_event(LogEvent.COMMAND_REFUSED, t, int(e.reason))
        ctl.host_reply(codec.nak_for(t, e.reason, e.field or "", e.detail), seq)
        return
    handler = HANDLERS[cls]
    try:
        reply = handler(ctl, msg)
    except Refusal as r:
        if cls is Program:
            ctl.log_event(LogEvent.PROGRAM_REFUSED, msg.command_id, int(r.reason))
        else:
            ctl.log_event(LogEvent.COMMAND_REFUSED, t, int(r.reason))
        ctl.host_reply(codec.nak_for(t, r.reason, r.field, r.detail), seq)
        return
    ctl.host_reply(reply, seq)


def _accept_command(ctl: Controller, command_id: int) -> None:
    """A command carrying an id was accepted: STATUS reports it so a host that lost the
    answer can find out instead of sending again."""
    ctl.last_command_id = command_id
    ctl.recent_command_ids.append(command_id)
    ctl.dirty("limits")


def _check_new_command(ctl: Controller, command_id: int) -> None:
    if command_id == 0:
        raise Refusal(NakReason.OUT_OF_RANGE, "command_id", "command ids start at 1")
    if command_id in ctl.recent_command_ids:
        raise Refusal(NakReason.WRONG_STATE, "command_id", f"command {command_id} was already accepted: ask STATUS")


# ------------------------------------------------------------ information


def hello(ctl: Controller, msg: Hello) -> HelloAck:
    hw = ctl.hw
    return HelloAck(
        serial=hw.serial,
        firmware_version=FIRMWARE_VERSION,
        protocol_version=PROTOCOL_VERSION,
        reservoir_capacity_ul=hw.reservoir_capacity_ul,
        stroke_nl=hw.stroke_nl,
    )


def status(ctl: Controller, msg: Status) -> StatusAck:
    rx = ctl.prescription
    now = ctl.now_ms
    running = ctl.therapy.state == "running"
    pb = rx.patient_bolus if rx else None
    return StatusAck(
        state=ctl.therapy.code,
        bolus_active=ctl.bolus is not None,
        time_s=ctl.now_s,
        clock_s=ctl.clock_s,
        drug=rx.drug if rx else "",
        concentration_ng_per_ml=rx.concentration_ng_per_ml if rx else 0,
        basal_rate_ng_per_day=rx.rate_at(ctl.local_ms // 1000 % 86_400) if rx and running else 0,
        reservoir_nl=ctl.reservoir.volume_nl,
        low_reservoir_at_s=ctl.low_at_ms // 1000 if ctl.low_at_ms is not None else NONE_U64,
        lockout_remaining_s=max(0, -(-(ctl.lockout_until_ms - now) // 1000)),
        boluses_24h=min(255, ctl.history.boluses_in_window(now)),
        max_boluses_24h=pb.max_per_24h if pb else 0,
        dose_24h_ng=min(0xFFFFFFFF, ctl.history.window_fg(now) // FG_PER_NG),
        max_dose_24h_ng=rx.max_dose_24h_ng if rx else 0,
        alarms=tuple(
            AlarmEntry(alarm=a.alarm, priority=a.priority, acknowledged=a.acknowledged)
            for a in list(ctl.alarms.active.values())[:16]
        ),
        battery_mv=min(0xFFFF, ctl.battery_mv),
        last_command_id=ctl.last_command_id,
    )


def read_prescription(ctl: Controller, msg: ReadPrescription) -> ReadPrescriptionAck:
    rx = ctl.prescription
    if rx is None:
        return ReadPrescriptionAck(
            present=False,
            drug="",
            concentration_ng_per_ml=0,
            basal=(),
            bolus_dose_ng=0,
            bolus_duration_s=0,
            bolus_lockout_s=0,
            bolus_max_per_24h=0,
            max_dose_24h_ng=0,
            low_reservoir_ul=0,
        )
    return ReadPrescriptionAck(present=True, **rx.wire_fields())


def log_read(ctl: Controller, msg: LogRead) -> LogReadAck:
    if not 1 <= msg.max_entries <= LOG_PAGE_MAX:
        raise Refusal(NakReason.OUT_OF_RANGE, "max_entries", f"page size is 1..{LOG_PAGE_MAX}")
    entries = ctl.log.read(msg.from_seq, msg.max_entries)
    return LogReadAck(
        oldest_seq=ctl.log.oldest_seq,
        next_seq=ctl.log.next_seq,
        entries=tuple(LogEntry(seq=e.seq, time_s=e.time_s, event=e.event, arg0=e.arg0, arg1=e.arg1) for e in entries),
    )


# ------------------------------------------------------------ therapy changes


def program(ctl: Controller, msg: Program) -> ProgramAck:
    _check_new_command(ctl, msg.command_id)
    if ctl.therapy.state in ("boot", "refill"):
        raise Refusal(NakReason.WRONG_STATE, "", f"cannot program in state {ctl.therapy.state}")
    if ctl.bolus is not None:
        raise Refusal(NakReason.WRONG_STATE, "", "a bolus is in progress: wait for it or stop therapy")
    rx = Prescription.from_message(msg)
    try:
        validate(rx, ctl.drugs, ctl.limits, ctl.config)
    except PrescriptionError as e:
        raise Refusal(NakReason.OUT_OF_RANGE, e.field, e.error) from None
    if ctl.therapy.state == "running":
        ctl.acc.accrue(ctl.prescription.basal, ctl.local_ms)  # the old schedule up to now
    first = ctl.prescription is None
    ctl.prescription = rx
    if first and ctl.catheter is not None:
        ctl.catheter.fill(rx.concentration_ng_per_ml)  # a primed catheter holds this drug
    if rx.patient_bolus is not None:
        ctl.lockout_until_ms = max(ctl.lockout_until_ms, ctl.now_ms + rx.patient_bolus.lockout_s * 1000)
    ctl.replan_basal()
    ctl.log_event(LogEvent.PROGRAM_ACCEPTED, msg.command_id)
    _accept_command(ctl, msg.command_id)
    ctl.dirty("prescription", "delivery", "limits")
    project_low(ctl)
    ctl._check_reservoir()
    return ProgramAck(command_id=msg.command_id)


def start(ctl: Controller, msg: Start) -> StartAck:
    _check_new_command(ctl, msg.command_id)
    if ctl.therapy.state != "stopped":
        raise Refusal(NakReason.WRONG_STATE, "", f"start needs state stopped, not {ctl.therapy.state}")
    if ctl.prescription is None:
        raise Refusal(NakReason.WRONG_STATE, "", "no prescription programmed")
    if ctl.alarms.high_active():
        raise Refusal(NakReason.WRONG_STATE, "", "a high-priority alarm stands")
    if ctl.reservoir_empty():
        raise Refusal(NakReason.WRONG_STATE, "", "reservoir at the empty level: refill first")
    if not ctl.therapy.fire("start_therapy"):
        raise Refusal(NakReason.WRONG_STATE, "", "therapy cannot start now")
    _accept_command(ctl, msg.command_id)
    project_low(ctl)
    return StartAck(command_id=msg.command_id, state=ctl.therapy.code)


def stop(ctl: Controller, msg: Stop) -> StopAck:
    _check_new_command(ctl, msg.command_id)
    if not ctl.therapy.fire("stop_therapy"):
        raise Refusal(NakReason.WRONG_STATE, "", f"stop needs state running or halted, not {ctl.therapy.state}")
    ctl.resume_running = False
    _accept_command(ctl, msg.command_id)
    return StopAck(command_id=msg.command_id, state=ctl.therapy.code)


def bolus_request(ctl: Controller, msg: BolusRequest) -> BolusRequestAck:
    _check_new_command(ctl, msg.command_id)
    rx = ctl.prescription
    pb = rx.patient_bolus if rx else None
    now = ctl.now_ms
    facts_dose = pb.dose_ng if pb else 0
    vol = volume_nl(facts_dose, rx.concentration_ng_per_ml) if pb else 0
    facts = bolus_rule.BolusFacts(
        now_ms=now,
        running=ctl.therapy.state == "running",
        has_patient_bolus=pb is not None,
        high_alarm_active=ctl.alarms.high_active(),
        bolus_active_until_ms=ctl.bolus_active_until_ms(),
        lockout_until_ms=ctl.lockout_until_ms,
        boluses_in_window=ctl.history.boluses_in_window(now),
        max_per_24h=pb.max_per_24h if pb else 0,
        oldest_start_in_window_ms=ctl.history.oldest_bolus_in_window(now),
        projected_max_window_fg=0,
        max_dose_24h_fg=rx.max_dose_24h_ng * FG_PER_NG if rx else 0,
        past_per_minute_fg=(),
        reservoir_nl=ctl.reservoir.volume_nl,
        bolus_volume_nl=vol,
        empty_level_nl=ctl.config.empty_reservoir_ul * 1000,
    )
    verdict = bolus_rule.decide(facts)
    if verdict.decision in (bolus_rule.BolusDecision.GRANTED, bolus_rule.BolusDecision.RESERVOIR):
        # Every cheaper rule passed: now the 24 h projection, which costs a scan of the
        # next day, decides the dose rule (it comes before the reservoir rule).
        facts = replace(
            facts,
            projected_max_window_fg=_projected_max_window_fg(ctl, facts_dose),
            past_per_minute_fg=tuple(ctl.history.per_minute(now)),
        )
        verdict = bolus_rule.decide(facts)
    ctl.log_event(LogEvent.BOLUS_REQUEST, msg.command_id, int(verdict.decision))
    _accept_command(ctl, msg.command_id)
    if verdict.granted:
        _begin(ctl, msg.command_id, BolusKind.PATIENT, pb.dose_ng, pb.duration_s)
    nxt = verdict.next_available_at_ms
    if verdict.decision is bolus_rule.BolusDecision.DOSE_LIMIT:
        # The rule's own estimate counts only past delivery leaving the window; basal
        # keeps entering it meanwhile, so that time came too early (a request then was
        # denied again). Say when the bolus really fits.
        nxt = _dose_limit_lifts_at_ms(ctl, pb.dose_ng)
    return BolusRequestAck(
        command_id=msg.command_id,
        decision=verdict.decision,
        dose_ng=pb.dose_ng if verdict.granted else 0,
        duration_s=pb.duration_s if verdict.granted else 0,
        next_available_at_s=-(-nxt // 1000) if nxt is not None else NONE_U64,
    )


def clinician_bolus(ctl: Controller, msg: ClinicianBolus) -> ClinicianBolusAck:
    _check_new_command(ctl, msg.command_id)
    rx = ctl.prescription
    if ctl.therapy.state != "running" or rx is None:
        raise Refusal(NakReason.WRONG_STATE, "", "a clinician bolus needs therapy running")
    if ctl.bolus is not None:
        raise Refusal(NakReason.WRONG_STATE, "", "a bolus is in progress")
    if msg.dose_ng <= 0 or msg.dose_ng > rx.max_dose_24h_ng:
        raise Refusal(NakReason.OUT_OF_RANGE, "dose_ng", f"dose must be 1..{rx.max_dose_24h_ng} ng (the hard limit)")
    if not MIN_BOLUS_DURATION_S <= msg.duration_s <= MAX_BOLUS_DURATION_S:
        raise Refusal(
            NakReason.OUT_OF_RANGE, "duration_s", f"duration must be {MIN_BOLUS_DURATION_S}..{MAX_BOLUS_DURATION_S} s"
        )
    lim = ctl.limits
    strokes = strokes_for(msg.dose_ng, lim.stroke_nl, rx.concentration_ng_per_ml)
    if msg.duration_s * 1000 // strokes < lim.min_stroke_interval_ms:
        raise Refusal(NakReason.OUT_OF_RANGE, "duration_s", "faster than the mechanism can deliver")
    if _projected_max_window_fg(ctl, msg.dose_ng) > rx.max_dose_24h_ng * FG_PER_NG:
        raise Refusal(NakReason.OUT_OF_RANGE, "dose_ng", "would exceed the rolling 24 h hard limit with basal")
    vol = volume_nl(msg.dose_ng, rx.concentration_ng_per_ml)
    if ctl.reservoir.volume_nl - vol < ctl.config.empty_reservoir_ul * 1000:
        raise Refusal(NakReason.OUT_OF_RANGE, "dose_ng", "the reservoir does not hold it above the empty level")
    _accept_command(ctl, msg.command_id)
    _begin(ctl, msg.command_id, BolusKind.CLINICIAN, msg.dose_ng, msg.duration_s)
    return ClinicianBolusAck(command_id=msg.command_id, volume_nl=vol)


def prime(ctl: Controller, msg: Prime) -> PrimeAck:
    _check_new_command(ctl, msg.command_id)
    if ctl.therapy.state != "stopped":
        raise Refusal(NakReason.WRONG_STATE, "", "prime with therapy stopped")
    if ctl.prescription is None:
        raise Refusal(NakReason.WRONG_STATE, "", "program the drug before priming")
    if ctl.bolus is not None:
        raise Refusal(NakReason.WRONG_STATE, "", "a bolus is in progress")
    lim = ctl.limits
    dead = ctl.hw.catheter_dead_volume_nl
    if not lim.stroke_nl <= msg.volume_nl <= max(2 * dead, lim.stroke_nl):
        raise Refusal(NakReason.OUT_OF_RANGE, "volume_nl", f"priming volume is {lim.stroke_nl}..{2 * dead} nL")
    if ctl.reservoir.volume_nl - msg.volume_nl < ctl.config.empty_reservoir_ul * 1000:
        raise Refusal(NakReason.OUT_OF_RANGE, "volume_nl", "the reservoir does not hold it above the empty level")
    strokes = -(-msg.volume_nl // lim.stroke_nl)
    _accept_command(ctl, msg.command_id)
    ctl.start_bolus(
        ActiveBolus(
            command_id=msg.command_id,
            kind=BolusKind.PRIMING,
            dose_ng=0,
            volume_nl=strokes * lim.stroke_nl,
            duration_s=strokes * lim.min_stroke_interval_ms // 1000 + 1,
            started_ms=ctl.now_ms,
            planned_strokes=strokes,
            interval_ms=lim.min_stroke_interval_ms,
        )
    )
    return PrimeAck(command_id=msg.command_id)


def _begin(ctl: Controller, command_id: int, kind: BolusKind, dose_ng: int, duration_s: int) -> None:
    lim = ctl.limits
    sfg = ctl.tip_stroke_fg()
    strokes = max(1, (dose_ng * FG_PER_NG + sfg // 2) // sfg)
    interval = max(lim.min_stroke_interval_ms, duration_s * 1000 // strokes)
    ctl.start_bolus(
        ActiveBolus(
            command_id=command_id,
            kind=kind,
            dose_ng=dose_ng,
            volume_nl=strokes * lim.stroke_nl,
            duration_s=duration_s,
            started_ms=ctl.now_ms,
            planned_strokes=strokes,
            interval_ms=interval,
        )
    )
    project_low(ctl)


def _basal_plan_fg(steps, local_ms: int, into_minute_ms: int, minutes: int) -> list[int]:
    """Planned basal per minute (fg): the numbers of dose.basal_per_minute_fg (minute 0
    is the rest of the current minute; each minute is the step of the exact running
    integral rounded down), in one pass over minutes and schedule changes instead of an
    integral per minute: a bolus request projects two days of them."""
    starts = [st.start_s * 1000 for st in steps]
    rates = [st.rate_ng_per_day * FG_PER_NG for st in steps]
    last = len(steps) - 1
    day0 = local_ms - local_ms % MS_PER_DAY
    tod = local_ms - day0
    i = max((k for k, st in enumerate(starts) if st <= tod), default=-1)  # -1: yesterday's last step

    def change_after(k: int, day: int) -> int:
        return day + starts[k + 1] if k < last else day + MS_PER_DAY + starts[0]

    change = change_after(i, day0)
    rate = rates[i]
    if i == -1:
        day0 -= MS_PER_DAY
        i = last
    out = []
    t = local_ms
    end = local_ms - into_minute_ms + MINUTE_MS
    exact = given = 0  # fg*ms/day units, fg
    for _ in range(minutes):
        while change <= end:
            exact += rate * (change - t)
            t = change
            i += 1
            if i > last:
                i = 0
                day0 += MS_PER_DAY
            rate = rates[i]
            change = change_after(i, day0)
        exact += rate * (end - t)
        t = end
        total = exact // MS_PER_DAY
        out.append(total - given)
        given = total
        end += MINUTE_MS
    return out


def _owed_now_fg(ctl: Controller) -> int:
    """Basal accrued up to now and not yet delivered (fg). The accumulator is brought up
    to date at strokes and wake-ups, not continuously, so its owed lags by the time since
    (it can even read negative mid-run); a copy is accrued to now instead, or a
    projection would leave out up to a stroke that is already due."""
    rx = ctl.prescription
    if rx is None or ctl.therapy.state != "running":
        return 0
    acc = BasalAccumulator(ctl.acc.owed, ctl.acc.at_ms)
    acc.accrue(rx.basal, ctl.local_ms)
    return max(0, acc.owed) // MS_PER_DAY


def _projected_max_window_fg(ctl: Controller, dose_ng: int) -> int:
    """Largest rolling-24 h total from now on if this bolus is given now: past delivery,
    planned basal (including what is owed) and the bolus, counted whole from this minute.
    Whole, not spread over its duration: the safety layer lets a bolus run start only if
    the window already holds room for it, so a bolus granted on a spread projection
    could be refused at its first stroke, abandoned undelivered and counted in full."""
    rx = ctl.prescription
    now = ctl.now_ms
    past = ctl.history.per_minute(now)
    minute0 = now // MINUTE_MS * MINUTE_MS
    plan = _basal_plan_fg(rx.basal, ctl.local_ms, now - minute0, BUCKETS)
    plan[0] += _owed_now_fg(ctl) + dose_ng * FG_PER_NG
    return max_future_window_fg(past, plan)


def _dose_limit_lifts_at_ms(ctl: Controller, dose_ng: int) -> int | None:
    """The first minute from which a patient bolus of dose_ng passes the rolling 24 h
    check (_projected_max_window_fg), if nothing but the planned basal is given
    meanwhile; None if not within a day.

    Window j (minutes from now) holds the past minutes still in it and the planned basal
    up to minute j; a bolus started in minute a must keep every window from a to a + 24 h
    within the hard limit with its whole dose in it. Windows that end more than a day
    from now have dropped minutes between now and a, where real delivery (in whole
    strokes) may lag the smooth plan by a stroke: one stroke is kept in hand there, so a
    request at the time given is granted."""
    rx = ctl.prescription
    now = ctl.now_ms
    past = ctl.history.per_minute(now)
    n = len(past)  # minutes a window touches; past[n - 1] is the current minute
    minute0 = now // MINUTE_MS * MINUTE_MS
    plan = _basal_plan_fg(rx.basal, ctl.local_ms, now - minute0, 2 * n)
    plan[0] += _owed_now_fg(ctl)
    conc = max(rx.concentration_ng_per_ml, ctl.catheter.tip_concentration if ctl.catheter else 0)
    room = (rx.max_dose_24h_ng - dose_ng) * FG_PER_NG
    stroke = ctl.limits.stroke_nl * conc
    past_from = [*reversed([0, *accumulate(reversed(past))])]  # past_from[i] = sum(past[i:])
    plan_to = [0, *accumulate(plan)]  # plan_to[k] = sum(plan[:k])
    # w[j]: the window ending j minutes from now, without the bolus
    w = [past_from[j] + plan_to[j + 1] for j in range(n)]
    w += [plan_to[j + 1] - plan_to[j - n + 1] for j in range(n, 2 * n)]
    w_after = [*reversed([0, *accumulate(reversed(w[:n]), max)])]  # w_after[x] = max(w[x:n])
    late = 0  # max(w[n:n + a]): windows that dropped minutes between now and a
    for a in range(1, n + 1):
        late = max(late, w[n + a - 1])
        if max(w_after[a], late + stroke) <= room:
            return minute0 + a * MINUTE_MS
    return None


def project_low(ctl: Controller) -> None:
    """Projected pump time of the low-reservoir alarm at the basal schedule (None when
    not running, no prescription, or already low). Recomputed at bolus starts, program
    changes and refills."""
    rx = ctl.prescription
    ctl.low_at_ms = None
    if rx is None or ctl.therapy.state not in ("running",):
        return
    left_nl = ctl.reservoir.volume_nl - rx.low_reservoir_ul * 1000
    if ctl.bolus is not None:
        left_nl -= max(0, ctl.bolus.volume_nl - ctl.bolus.delivered_nl)
    if left_nl <= 0:
        return
    need = left_nl * rx.concentration_ng_per_ml * MS_PER_DAY  # fg*ms/day units
    acc = BasalAccumulator(0, ctl.local_ms)
    due = acc.due_at_ms(rx.basal, need, horizon_ms=400 * MS_PER_DAY)
    if due is not None:
        ctl.low_at_ms = ctl.now_ms + (due - ctl.local_ms)


# ------------------------------------------------------------ refill, alarms, clock


def refill_begin(ctl: Controller, msg: RefillBegin) -> RefillBeginAck:
    _check_new_command(ctl, msg.command_id)
    was_running = ctl.therapy.state == "running"
    if not ctl.therapy.fire("begin_refill"):
        raise Refusal(NakReason.WRONG_STATE, "", f"refill cannot begin in state {ctl.therapy.state}")
    ctl.resume_running = was_running or ctl.resume_running
    ctl.log_event(LogEvent.REFILL_BEGIN, msg.command_id)
    _accept_command(ctl, msg.command_id)
    ctl.dirty("state")
    return RefillBeginAck(command_id=msg.command_id, expected_reservoir_nl=ctl.reservoir.volume_nl)


def refill_complete(ctl: Controller, msg: RefillComplete) -> RefillCompleteAck:
    _check_new_command(ctl, msg.command_id)
    if ctl.therapy.state != "refill":
        raise Refusal(NakReason.WRONG_STATE, "", "REFILL_BEGIN first")
    over = ctl.reservoir.check_overfill(msg.withdrawn_nl, msg.added_nl)
    if msg.added_nl > ctl.reservoir.capacity_nl or over is not None:
        raise Refusal(
            NakReason.OUT_OF_RANGE,
            "added_nl",
            f"{msg.added_nl} nL would overfill the {ctl.reservoir.capacity_nl} nL reservoir",
        )
    rx = ctl.prescription
    new_rx = None
    if rx is not None:
        if msg.drug != rx.drug:
            raise Refusal(NakReason.OUT_OF_RANGE, "drug", f"the pump is programmed for {rx.drug}: reprogram first")
        fields = rx.to_dict()
        fields["concentration_ng_per_ml"] = msg.concentration_ng_per_ml
        new_rx = Prescription.from_dict(fields)
        try:
            validate(new_rx, ctl.drugs, ctl.limits, ctl.config)
        except PrescriptionError as e:
            field = "concentration_ng_per_ml" if e.field == "concentration_ng_per_ml" else e.field
            raise Refusal(NakReason.OUT_OF_RANGE, field, e.error) from None
    elif ctl.drugs.get(msg.drug) is None:
        raise Refusal(NakReason.OUT_OF_RANGE, "drug", f"{msg.drug!r} is not in the drug library")
    result = ctl.reservoir.refill(msg.withdrawn_nl, msg.added_nl, ctl.config)
    if new_rx is not None:
        ctl.prescription = new_rx  # the catheter keeps the old drug: bridging
        if rx.patient_bolus is not None:
            ctl.lockout_until_ms = max(ctl.lockout_until_ms, ctl.now_ms + rx.patient_bolus.lockout_s * 1000)
    ctl.log_event(LogEvent.REFILL_COMPLETE, msg.withdrawn_nl, msg.added_nl)
    for alarm in (AlarmId.LOW_RESERVOIR, AlarmId.EMPTY_RESERVOIR):
        ctl.clear_alarm(alarm)
    if result.consequential:
        # A one-shot condition: it latches until a clinician acknowledges it.
        ctl.set_condition(AlarmId.REFILL_DISCREPANCY, True)
        ctl.set_condition(AlarmId.REFILL_DISCREPANCY, False)
    _accept_command(ctl, msg.command_id)
    ctl.dirty("prescription", "delivery", "limits")
    if not (ctl.resume_running and ctl.therapy.fire("finish_refill_running")):
        ctl.therapy.fire("finish_refill_stopped")
    ctl.resume_running = False
    # The reservoir alarms were cleared for the new fill: raise them again at once if it
    # is at or below the low (or the empty) level, not at the next stroke (never, stopped).
    ctl._check_reservoir()
    project_low(ctl)
    return RefillCompleteAck(
        command_id=msg.command_id,
        discrepancy_nl=max(-(2**31), min(2**31 - 1, result.discrepancy_nl)),
        reservoir_nl=ctl.reservoir.volume_nl,
    )


def alarm_ack(ctl: Controller, msg: AlarmAck) -> AlarmAckAck:
    was, still = ctl.acknowledge(msg.alarm)
    if not was:
        raise Refusal(NakReason.WRONG_STATE, "alarm", f"{msg.alarm.name.lower()} is not active")
    return AlarmAckAck(alarm=msg.alarm, still_active=still)


def set_clock(ctl: Controller, msg: SetClock) -> SetClockAck:
    _check_new_command(ctl, msg.command_id)
    if not CLOCK_MIN_S <= msg.clock_s < CLOCK_MAX_S:
        raise Refusal(NakReason.OUT_OF_RANGE, "clock_s", "the clock must lie in 2000..2099")
    if ctl.prescription is not None and ctl.therapy.state == "running":
        ctl.acc.accrue(ctl.prescription.basal, ctl.local_ms)
    ctl.clock_offset_s += msg.clock_s - ctl.clock_s
    # Basal is owed for time that passed, not for a jump of the clock.
    ctl.acc.at_ms = ctl.local_ms
    ctl.replan_basal()  # the schedule's step in force may have changed
    ctl.log_event(LogEvent.CLOCK_SET, msg.clock_s)
    _accept_command(ctl, msg.command_id)
    ctl.dirty("limits", "delivery")
    return SetClockAck(command_id=msg.command_id, clock_s=ctl.clock_s)


HANDLERS: dict[type[Message], Callable] = {
    Hello: hello,
    Status: status,
    Program: program,
    Start: start,
    Stop: stop,
    BolusRequest: bolus_request,
    ClinicianBolus: clinician_bolus,
    Prime: prime,
    RefillBegin: refill_begin,
    RefillComplete: refill_complete,
    AlarmAck: alarm_ack,
    LogRead: log_read,
    SetClock: set_clock,
    ReadPrescription: read_prescription,
}
