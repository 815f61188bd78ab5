"""Host requests relayed to the controller: check, act, answer exactly once.

Order of checks for every frame: it must be a host request (anything else, pump-link
types included, is UNKNOWN_TYPE), then authentic and fresh (AUTH_FAILED, REPLAYED), then
allowed for the signer's role (NOT_PERMITTED), then well-formed (BAD_LENGTH,
OUT_OF_RANGE), then allowed now. Authentication comes before parsing so an
unauthenticated sender learns nothing about the payload.

A handler gathers facts, asks its rule (firmware/rules/) once and applies the answer: no
rule is written here. A refusal changes nothing and is logged through the refusal log,
rate-bounded per kind (SR-056); a frame that fails authentication may go unanswered
(SR-055).
"""

from __future__ import annotations

from collections.abc import Callable

from protocol import codec
from protocol.codes import AlarmId, BolusKind, BolusOutcome, CatheterState, LogEvent, NakReason, TherapyState
from protocol.errors import DecodeError
from protocol.framing import Frame, FrameErrorKind, parse_body
from protocol.messages import (
    HOST_LINK_TYPES,
    REGISTRY,
    AlarmAck,
    AlarmAckAck,
    BolusRequest,
    BolusRequestAck,
    CatheterReplaced,
    CatheterReplacedAck,
    ClinicianBolus,
    ClinicianBolusAck,
    Hello,
    KeyUpdate,
    KeyUpdateAck,
    LogRead,
    Message,
    Prime,
    PrimeAck,
    Program,
    ProgramAck,
    ReadPrescription,
    RefillBegin,
    RefillBeginAck,
    RefillComplete,
    RefillCompleteAck,
    SetClock,
    SetClockAck,
    Start,
    StartAck,
    Status,
    Stop,
    StopAck,
)
from protocol.schema import NONE_I32, NONE_U32, NONE_U64, MessageFamily, family_of

from .delivery import ActiveBolus, Fill
from .dose import FG_PER_NG, volume_nl
from .parts import Parts
from .prescription import Prescription
from .reports import hello, log_read, read_prescription, status
from .rules import (
    Refusal,
    catheter,
    clinician_bolus,
    patient_bolus,
    prime,
    program,
    ready,
    refill,
    start,
    wrong_state,
)
from .rules import clock as clock_rule
from .rules import key_update as key_rule
from .rules import lockout as lockout_rule
from .rules import reservoir as reservoir_rule
from .rules.run import Purpose

STOPPED = TherapyState.STOPPED


def handle_frame(p: Parts, body: bytes) -> None:
    out = p.outbox
    f = parse_body(body)
    if not isinstance(f, Frame):
        if f.msg_type is not None and f.kind is FrameErrorKind.BAD_LENGTH:
            # (no trailer could be read: bound to none)
            out.host_reply(codec.nak_for(f.msg_type, NakReason.BAD_LENGTH, "", "frame length"), f.seq, None)
        return
    t, seq = f.msg_type, f.seq
    tag = f.auth.tag if f.auth is not None else None  # every answer is bound to it (SR-058)
    if not _is_host_request(t):
        out.host_reply(codec.nak_for(t, NakReason.UNKNOWN_TYPE, "", f"0x{t:02X} is not a host request"), seq, tag)
        return
    role, nak, detail = p.auth.verify(f)
    if role is None:
        if nak is not None:  # (None: over its key id's NAK budget, dropped unanswered)
            out.host_reply(codec.nak_for(t, nak, "", detail), seq, tag)
        return
    cls = REGISTRY[t]
    if role not in cls.ROLES:
        p.refusals.refused(LogEvent.NOT_PERMITTED, int(role), t)
        out.host_reply(
            codec.nak_for(t, NakReason.NOT_PERMITTED, "", f"{role.name.lower()} may not send {cls.NAME}"), seq, tag
        )
        return
    try:
        msg = codec.decode(f)
    except DecodeError as e:
        p.refusals.refused(LogEvent.COMMAND_REFUSED, t, int(e.reason))
        out.host_reply(codec.nak_for(t, e.reason, e.field or "", e.detail), seq, tag)
        return
    answer = HANDLERS[cls](p, msg)
    if isinstance(answer, Refusal):
        if cls is Program:
            p.refusals.refused(LogEvent.PROGRAM_REFUSED, msg.command_id, int(answer.reason))
        else:
            p.refusals.refused(LogEvent.COMMAND_REFUSED, t, int(answer.reason))
        out.host_reply(codec.nak_for(t, answer.reason, answer.field, answer.detail), seq, tag)
        return
    out.host_reply(answer, seq, tag)


def _is_host_request(msg_type: int) -> bool:
    return msg_type in HOST_LINK_TYPES and family_of(msg_type) is MessageFamily.HOST_REQUEST and msg_type in REGISTRY


def _ready(p: Parts) -> ready.ReadyFacts:
    return ready.ReadyFacts(
        has_prescription=p.engine.rx is not None,
        holds_another_drug=_holds_another_drug(p),
        high_alarm=p.supervisor.high_alarm(),
        holding=tuple((a.alarm, a.condition) for a in p.alarms.holding()),
        reservoir_known=p.engine.reservoir_known,
        catheter_empty=_catheter_empty(p),
    )


def _catheter_empty(p: Parts) -> bool:
    return p.engine.catheter is not None and p.engine.catheter.state is CatheterState.EMPTY


def _holds_another_drug(p: Parts) -> str | None:
    rx, fill = p.engine.rx, p.engine.reservoir.fill
    if rx is None or program.matches_fill(rx, fill):
        return None
    return program.holds(fill, p.drugs)


# ------------------------------------------------------------ therapy changes


def program_request(p: Parts, msg: Program) -> ProgramAck | Refusal:
    rx = Prescription.from_message(msg)
    refused = p.commands.refusal(msg.command_id) or program.refusal(
        program.ProgramFacts(
            state=p.supervisor.state,
            bolus_active=p.engine.bolus is not None,
            prescription=rx,
            drugs=p.drugs,
            limits=p.hardware.limits,
            empty_reservoir_ul=p.config.empty_reservoir_ul,
            fill=p.engine.reservoir.fill,
        )
    )
    if refused is not None:
        return refused
    running = p.supervisor.running
    p.engine.program(rx, running)
    p.outbox.record(LogEvent.PROGRAM_ACCEPTED, msg.command_id)
    p.commands.accept(msg.command_id)
    p.engine.project_low(running)
    p.supervisor.check_reservoir()
    return ProgramAck(command_id=msg.command_id)


def start_request(p: Parts, msg: Start) -> StartAck | Refusal:
    s = p.supervisor
    refused = p.commands.refusal(msg.command_id) or start.refusal(
        start.StartFacts(state=s.state, ready=_ready(p), reservoir_empty=p.engine.reservoir_empty())
    )
    if refused is not None:
        return refused
    if not s.therapy.fire("start_therapy"):
        return wrong_state("therapy cannot start now")
    p.commands.accept(msg.command_id)
    p.engine.project_low(True)
    return StartAck(command_id=msg.command_id, state=s.state)


def stop_request(p: Parts, msg: Stop) -> StopAck | Refusal:
    s = p.supervisor
    refused = p.commands.refusal(msg.command_id)
    if refused is not None:
        return refused
    if s.state is STOPPED and p.engine.bolus is not None:
        # A single or priming bolus while stopped: STOP ends it, as it would running.
        p.engine.end_bolus(BolusOutcome.STOPPED)
    elif not s.therapy.fire("stop_therapy"):
        return wrong_state(f"stop needs state running or halted, not {s.state.name.lower()}")
    s.resume_running = False
    p.commands.accept(msg.command_id)
    return StopAck(command_id=msg.command_id, state=s.state)


def bolus_request(p: Parts, msg: BolusRequest) -> BolusRequestAck | Refusal:
    refused = p.commands.refusal(msg.command_id)
    if refused is not None:
        return refused
    e, s = p.engine, p.supervisor
    rx = e.rx
    pb = rx.patient_bolus if rx else None
    now = p.clock.now_ms
    running = s.running
    verdict = patient_bolus.decide(
        patient_bolus.BolusFacts(
            now_ms=now,
            running=running,
            has_patient_bolus=pb is not None,
            high_alarm_active=s.high_alarm(),
            bolus_active_until_ms=e.bolus_active_until_ms(),
            lockout_until_ms=e.lockout_until_ms,
            boluses_in_window=e.history.boluses_in_window(now),
            max_per_24h=pb.max_per_24h if pb else 0,
            oldest_start_in_window_ms=e.history.oldest_bolus_in_window(now),
            dose_fg=e.bolus_strokes(pb.dose_ng) * e.tip_stroke_fg() if pb else 0,  # as it will be given
            window=e.window(running) if pb else None,
            reservoir_nl=e.reservoir.volume_nl,
            bolus_volume_nl=volume_nl(pb.dose_ng, rx.concentration_ng_per_ml) if pb else 0,
            empty_level_nl=e.empty_level_nl,
        )
    )
    # A granted request is a therapy record; a denied one a refusal, rate-bounded (SR-056).
    log = p.outbox.record if verdict.granted else p.refusals.refused
    log(LogEvent.BOLUS_REQUEST, msg.command_id, int(verdict.decision))
    p.commands.accept(msg.command_id)
    if verdict.granted:
        _begin(p, msg.command_id, BolusKind.PATIENT, pb.dose_ng, pb.duration_s)
    nxt = verdict.next_available_at_ms
    return BolusRequestAck(
        command_id=msg.command_id,
        decision=verdict.decision,
        dose_ng=pb.dose_ng if verdict.granted else 0,
        duration_s=pb.duration_s if verdict.granted else 0,
        next_available_at_s=-(-nxt // 1000) if nxt is not None else NONE_U64,
    )


def clinician_bolus_request(p: Parts, msg: ClinicianBolus) -> ClinicianBolusAck | Refusal:
    """Running: a bolus on top of basal. Stopped: a single bolus (SR-048), after which
    the pump stays stopped."""
    e, s = p.engine, p.supervisor
    rx = e.rx
    lim = p.hardware.limits
    conc = rx.concentration_ng_per_ml if rx else 0
    vol = volume_nl(msg.dose_ng, conc) if rx else 0
    strokes = e.bolus_strokes(msg.dose_ng) if rx and msg.dose_ng > 0 else 1
    refused = p.commands.refusal(msg.command_id) or clinician_bolus.refusal(
        clinician_bolus.ClinicianBolusFacts(
            state=s.state,
            ready=_ready(p),
            bolus_active=e.bolus is not None,
            dose_ng=msg.dose_ng,
            dose_fg=strokes * e.tip_stroke_fg() if rx else 0,  # as it will be given
            duration_s=msg.duration_s,
            max_dose_24h_ng=rx.max_dose_24h_ng if rx else 0,
            strokes=strokes,
            min_stroke_interval_ms=lim.min_stroke_interval_ms,
            window=e.window(s.running) if rx else None,
            volume_nl=vol,
            reservoir_nl=e.reservoir.volume_nl,
            empty_level_nl=e.empty_level_nl,
        )
    )
    if refused is not None:
        return refused
    p.commands.accept(msg.command_id)
    _begin(p, msg.command_id, BolusKind.CLINICIAN, msg.dose_ng, msg.duration_s)
    return ClinicianBolusAck(command_id=msg.command_id, volume_nl=vol)


def prime_request(p: Parts, msg: Prime) -> PrimeAck | Refusal:
    e, s = p.engine, p.supervisor
    lim = p.hardware.limits
    rx = e.rx
    strokes = -(-msg.volume_nl // lim.stroke_nl)
    drug = p.drugs.get(rx.drug) if rx else None
    drug_fg = e.drug_out_fg(strokes * lim.stroke_nl) if rx else 0
    refused = p.commands.refusal(msg.command_id) or prime.refusal(
        prime.PrimeFacts(
            stopped=s.state is STOPPED,
            has_prescription=rx is not None,
            holds_another_drug=_holds_another_drug(p),
            bolus_active=e.bolus is not None,
            volume_nl=msg.volume_nl,
            stroke_nl=lim.stroke_nl,
            catheter_volume_nl=rx.catheter_volume_nl if rx else 0,
            drug_fg=drug_fg,
            window_fg=e.history.window_fg(p.clock.now_ms),
            max_dose_24h_fg=e.max_dose_24h_fg,
            drug_unit=drug.unit if drug else "mg",
            reservoir_known=e.reservoir_known,
            reservoir_nl=e.reservoir.volume_nl,
            empty_level_nl=e.empty_level_nl,
        )
    )
    if refused is not None:
        return refused
    p.commands.accept(msg.command_id)
    e.start_bolus(
        ActiveBolus(
            command_id=msg.command_id,
            kind=BolusKind.PRIMING,
            dose_ng=drug_fg // FG_PER_NG,
            volume_nl=strokes * lim.stroke_nl,
            duration_s=strokes * lim.min_stroke_interval_ms // 1000 + 1,
            started_ms=p.clock.now_ms,
            planned_strokes=strokes,
            interval_ms=lim.min_stroke_interval_ms,
        )
    )
    return PrimeAck(command_id=msg.command_id)


def catheter_replaced(p: Parts, msg: CatheterReplaced) -> CatheterReplacedAck | Refusal:
    """SR-049: the clinician declares the catheter new and empty."""
    e = p.engine
    rx = e.rx
    refused = p.commands.refusal(msg.command_id) or catheter.replaced_refusal(
        catheter.ReplacedFacts(
            state=p.supervisor.state,
            has_prescription=rx is not None,
            catheter_volume_nl=rx.catheter_volume_nl if rx else 0,
            bolus_active=e.bolus is not None,
            now_ms=p.clock.now_ms,
            last_replaced_ms=e.catheter.replaced_at_ms if e.catheter else None,
        )
    )
    if refused is not None:
        return refused
    p.commands.accept(msg.command_id)
    e.replace_catheter(msg.command_id)
    return CatheterReplacedAck(
        command_id=msg.command_id, catheter_state=e.catheter.state, catheter_volume_nl=e.catheter.volume_nl
    )


def _begin(p: Parts, command_id: int, kind: BolusKind, dose_ng: int, duration_s: int) -> None:
    e = p.engine
    lim = p.hardware.limits
    strokes = e.bolus_strokes(dose_ng)
    e.start_bolus(
        ActiveBolus(
            command_id=command_id,
            kind=kind,
            dose_ng=dose_ng,
            volume_nl=strokes * lim.stroke_nl,
            duration_s=duration_s,
            started_ms=p.clock.now_ms,
            planned_strokes=strokes,
            interval_ms=max(lim.min_stroke_interval_ms, duration_s * 1000 // strokes),
        )
    )
    e.project_low(p.supervisor.running)


# ------------------------------------------------------------ refill, alarms, clock


def refill_begin(p: Parts, msg: RefillBegin) -> RefillBeginAck | Refusal:
    s = p.supervisor
    refused = p.commands.refusal(msg.command_id)
    if refused is not None:
        return refused
    was_running = s.running
    if not s.therapy.fire("begin_refill"):
        return wrong_state(f"refill cannot begin in state {s.state.name.lower()}")
    s.resume_running = was_running or s.resume_running
    p.outbox.record(LogEvent.REFILL_BEGIN, msg.command_id)
    p.commands.accept(msg.command_id)
    p.outbox.touch("state")
    e = p.engine
    expected = e.reservoir.volume_nl if e.reservoir_known else NONE_U32
    return RefillBeginAck(command_id=msg.command_id, expected_reservoir_nl=expected)


def refill_complete(p: Parts, msg: RefillComplete) -> RefillCompleteAck | Refusal:
    e, s, cfg = p.engine, p.supervisor, p.config
    refused = p.commands.refusal(msg.command_id)
    if refused is not None:
        return refused
    verdict = refill.decide(
        refill.RefillFacts(
            state=s.state,
            volume_nl=e.reservoir.volume_nl,
            capacity_nl=e.reservoir.capacity_nl,
            withdrawn_nl=msg.withdrawn_nl,
            added_nl=msg.added_nl,
            drug=msg.drug,
            concentration_ng_per_ml=msg.concentration_ng_per_ml,
            prescription=e.rx,
            drugs=p.drugs,
            limits=p.hardware.limits,
            empty_reservoir_ul=cfg.empty_reservoir_ul,
        )
    )
    if verdict.refusal is not None:
        return verdict.refusal
    old = e.rx
    initial = not e.reservoir_known  # the first fill of a new pump: nothing to compare with
    discrepancy = e.reservoir.refill(msg.withdrawn_nl, msg.added_nl, Fill(msg.drug, msg.concentration_ng_per_ml))
    if verdict.prescription is not None:
        e.rx = verdict.prescription  # the catheter keeps the old drug: bridging
        pb = old.patient_bolus
        e.lockout_until_ms = lockout_rule.after_change(p.clock.now_ms, pb.lockout_s if pb else None, e.lockout_until_ms)
    p.outbox.record(LogEvent.REFILL_COMPLETE, msg.withdrawn_nl, msg.added_nl)
    for alarm in (AlarmId.LOW_RESERVOIR, AlarmId.EMPTY_RESERVOIR):
        s.clear(alarm)
    if not initial and reservoir_rule.discrepancy_consequential(
        discrepancy, e.reservoir.capacity_nl, cfg.refill_discrepancy_small_ul, cfg.refill_discrepancy_large_ul
    ):
        s.latch(AlarmId.REFILL_DISCREPANCY)
    if reservoir_rule.impossible_withdrawal(msg.withdrawn_nl, e.reservoir.capacity_nl):
        s.latch(AlarmId.IMPOSSIBLE_WITHDRAWAL)
    p.commands.accept(msg.command_id)
    p.outbox.touch("prescription", "delivery", "limits", "fill")
    if not (s.resume_running and s.therapy.fire("finish_refill_running")):
        s.therapy.fire("finish_refill_stopped")
    s.resume_running = False
    # The reservoir alarms were cleared for the new fill: raise them again at once if it
    # is at or below the low (or the empty) level, not at the next stroke (never, stopped).
    s.check_reservoir()
    e.project_low(s.running)
    return RefillCompleteAck(
        command_id=msg.command_id,
        discrepancy_nl=NONE_I32 if initial else max(NONE_I32 + 1, min(2**31 - 1, discrepancy)),
        reservoir_nl=e.reservoir.volume_nl,
    )


def alarm_ack(p: Parts, msg: AlarmAck) -> AlarmAckAck | Refusal:
    s = p.supervisor
    held = p.alarms.active.get(msg.alarm)
    was, still = s.acknowledge(msg.alarm)
    if not was:
        return wrong_state(f"{msg.alarm.name.lower()} is not active", "alarm")
    # SR-052: whether it was a reset, or only silenced one that needs acknowledging again.
    return AlarmAckAck(
        alarm=msg.alarm,
        still_active=still,
        priority=held.priority,
        needs_reset=still and s.needs_reset(msg.alarm),
        state=s.state,
    )


def set_clock(p: Parts, msg: SetClock) -> SetClockAck | Refusal:
    refused = p.commands.refusal(msg.command_id) or clock_rule.set_clock_refusal(msg.clock_s)
    if refused is not None:
        return refused
    e = p.engine
    if e.rx is not None and p.supervisor.running:
        e.acc.accrue(e.rx.basal, p.clock.local_ms)  # the old clock up to now
    p.clock.set_local(msg.clock_s)
    e.restart_accrual()  # basal is owed for time that passed, not for a jump of the clock
    p.guard.stop_if(Purpose.BASAL)  # SR-013: the schedule's step in force may have changed
    p.outbox.record(LogEvent.CLOCK_SET, msg.clock_s)
    p.commands.accept(msg.command_id)
    return SetClockAck(command_id=msg.command_id, clock_s=p.clock.clock_s)


def key_update(p: Parts, msg: KeyUpdate) -> KeyUpdateAck | Refusal:
    """SR-059: replace or revoke a person role's key, persisted in NVM at once."""
    refused = p.commands.refusal(msg.command_id) or key_rule.refusal(
        key_rule.KeyUpdateFacts(role=msg.role, wrapped_len=len(msg.wrapped_key))
    )
    if refused is not None:
        return refused
    revoked = p.auth.update_key(msg.role, msg.wrapped_key)
    p.outbox.record(LogEvent.KEY_UPDATED, int(msg.role), int(revoked))
    p.commands.accept(msg.command_id)
    return KeyUpdateAck(command_id=msg.command_id, role=msg.role, revoked=revoked)


HANDLERS: dict[type[Message], Callable] = {
    Hello: hello,
    Status: status,
    Program: program_request,
    Start: start_request,
    Stop: stop_request,
    BolusRequest: bolus_request,
    ClinicianBolus: clinician_bolus_request,
    Prime: prime_request,
    CatheterReplaced: catheter_replaced,
    KeyUpdate: key_update,
    RefillBegin: refill_begin,
    RefillComplete: refill_complete,
    AlarmAck: alarm_ack,
    LogRead: log_read,
    SetClock: set_clock,
    ReadPrescription: read_prescription,
}
