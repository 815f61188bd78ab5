"""The host requests that only ask (HELLO, STATUS, READ_PRESCRIPTION, LOG_READ): answers
built from the parts, changing nothing. firmware/host.py checks and dispatches them like
every other request.
"""

from __future__ import annotations

from protocol.codes import CatheterState
from protocol.framing import PROTOCOL_VERSION
from protocol.messages import (
    AlarmEntry,
    Hello,
    HelloAck,
    LogEntry,
    LogRead,
    LogReadAck,
    ReadPrescription,
    ReadPrescriptionAck,
    Status,
    StatusAck,
)
from protocol.schema import NONE_U32, NONE_U64

from .dose import FG_PER_NG, MS_PER_DAY, rate_at
from .parts import Parts
from .rules import Refusal, out_of_range

FIRMWARE_VERSION = "0.1.0"  # reported in HELLO_ACK
LOG_PAGE_MAX = 32


def hello(p: Parts, msg: Hello) -> HelloAck:
    hw = p.hardware.info
    return HelloAck(
        serial=hw.serial,
        firmware_version=FIRMWARE_VERSION,
        protocol_version=PROTOCOL_VERSION,
        reservoir_capacity_ul=hw.reservoir_capacity_ul,
        stroke_nl=hw.stroke_nl,
    )


def status(p: Parts, msg: Status) -> StatusAck:
    e, clock = p.engine, p.clock
    rx = e.rx
    now = clock.now_ms
    pb = rx.patient_bolus if rx else None
    running = p.supervisor.running
    return StatusAck(
        state=p.supervisor.state,
        bolus_active=e.bolus is not None,
        time_s=clock.now_s,
        clock_s=clock.clock_s,
        drug=rx.drug if rx else "",
        concentration_ng_per_ml=rx.concentration_ng_per_ml if rx else 0,
        basal_rate_ng_per_day=rate_at(rx.basal, clock.local_ms % MS_PER_DAY) if rx and running else 0,
        reservoir_nl=e.reservoir.volume_nl if e.reservoir_known else NONE_U32,
        low_reservoir_at_s=e.low_at_ms // 1000 if e.low_at_ms is not None else NONE_U64,
        low_reservoir_worst_at_s=e.low_worst_at_ms // 1000 if e.low_worst_at_ms is not None else NONE_U64,
        lockout_remaining_s=max(0, -(-(e.lockout_until_ms - now) // 1000)),
        boluses_24h=min(255, e.history.boluses_in_window(now)),
        max_boluses_24h=pb.max_per_24h if pb else 0,
        dose_24h_ng=min(0xFFFFFFFF, e.history.window_fg(now) // FG_PER_NG),
        max_dose_24h_ng=rx.max_dose_24h_ng if rx else 0,
        alarms=tuple(
            AlarmEntry(
                alarm=a.alarm,
                priority=a.priority,
                acknowledged=a.acknowledged,
                condition_present=a.condition,
                silenced=now < a.silenced_until_ms,
                needs_reset=p.supervisor.needs_reset(a.alarm),  # SR-052
            )
            for a in list(p.alarms.active.values())[:16]
        ),
        battery_mv=min(0xFFFF, p.hardware.battery_mv),
        last_command_id=p.commands.last_id,
        catheter_state=e.catheter.state if e.catheter else CatheterState.UNKNOWN,
        catheter_volume_nl=rx.catheter_volume_nl if rx else 0,
    )


def read_prescription(p: Parts, msg: ReadPrescription) -> ReadPrescriptionAck:
    rx = p.engine.rx
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
            catheter_volume_nl=0,
            timed_bolus=(),
        )
    return ReadPrescriptionAck(present=True, **rx.wire_fields())


def log_read(p: Parts, msg: LogRead) -> LogReadAck | Refusal:
    if not 1 <= msg.max_entries <= LOG_PAGE_MAX:
        return out_of_range("max_entries", f"page size is 1..{LOG_PAGE_MAX}")
    entries = p.log.read(msg.from_seq, msg.max_entries)
    return LogReadAck(
        oldest_seq=p.log.oldest_seq,
        next_seq=p.log.next_seq,
        entries=tuple(LogEntry(seq=e.seq, time_s=e.time_s, event=e.event, arg0=e.arg0, arg1=e.arg1) for e in entries),
    )
