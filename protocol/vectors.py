"""Test vectors: named frames generated from the message declarations.

`thecal spec --write` writes them to protocol/vectors.json, and tests/test_vectors.py
holds that file to what this module generates now, so the file cannot drift from the
code. Another implementation of the protocol can check itself against the file alone.

Every entry has `name`, `expect` and `wire_hex` (what crosses the serial line):
  - expect "ok": a valid frame. `message`, `msg_type`, `seq`, `fields` (Message.to_dict():
    enums as lower-case member names, bytes as hex, records as objects), `payload_hex`,
    `body_hex` (the frame before COBS) and, when signed, `key_id`, `counter`, `key_hex`,
    `signed_hex` (the bytes the HMAC covers) and `tag_hex`.
  - expect "frame_error": a segment the frame decoder refuses; `error` is the
    FrameErrorKind value, `msg_type` and `seq` are given only when the CRC held (the
    receiver then knows what to NAK), else null.
  - expect "rejected": an intact frame whose payload is not a valid message of its type;
    `nak_reason` (NakReason, lower case) and `nak_field` (or null) are what the codec
    reports and a pump answers with.

Keys, counters and every field value are fixed, so the output is byte-for-byte stable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from pathlib import Path
from typing import Any

from . import codec
from .auth import FrameSigner, compute_tag
from .codes import (
    AlarmId,
    BeepPattern,
    BolusDecision,
    BolusKind,
    BolusOutcome,
    CatheterState,
    Fault,
    Link,
    LogEvent,
    MessageFamily,
    MotorState,
    NakReason,
    Priority,
    ResetCause,
    Role,
    RunOutcome,
    TherapyState,
    WakeReason,
)
from .framing import (
    AUTH_PREFIX,
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    TAG_SIZE,
    FrameErrorKind,
    encode_body,
    wrap_body,
)
from .messages import (
    REGISTRY,
    AlarmAck,
    AlarmAckAck,
    AlarmCleared,
    AlarmEntry,
    AlarmRaised,
    BasalStep,
    Beep,
    BolusFinished,
    BolusRequest,
    BolusRequestAck,
    BolusStarted,
    CatheterReplaced,
    CatheterReplacedAck,
    ClinicianBolus,
    ClinicianBolusAck,
    ControllerStart,
    Hello,
    HelloAck,
    HostRx,
    HostTx,
    HwInfo,
    HwInfoRequest,
    KeyUpdate,
    KeyUpdateAck,
    LogEntry,
    LogRead,
    LogReadAck,
    Message,
    MotorRun,
    MotorStop,
    PowerOn,
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
    RunProgress,
    SensorRequest,
    Sensors,
    SetClock,
    SetClockAck,
    SimAdvance,
    SimAdvanceAck,
    SimClearFault,
    SimClearFaultAck,
    SimGroundTruth,
    SimGroundTruthAck,
    SimInjectFault,
    SimInjectFaultAck,
    SimPowerCycle,
    SimPowerCycleAck,
    SimRefill,
    SimRefillAck,
    SimReplaceCatheter,
    SimReplaceCatheterAck,
    SimSetSpeed,
    SimSetSpeedAck,
    SleepUntil,
    Start,
    StartAck,
    Status,
    StatusAck,
    Stop,
    StopAck,
    TherapyStateChanged,
    Time,
    TimedBolus,
    TimeRequest,
    Tone,
    WatchdogKick,
)
from .schema import NONE_U64

VECTORS_PATH = Path(__file__).resolve().parent / "vectors.json"

# Fixed test keys, one per role. Never provision these in a real device.
TEST_KEYS: dict[Role, bytes] = {
    Role.CLINICIAN: bytes(range(0x00, 0x20)),
    Role.PATIENT: bytes(range(0x20, 0x40)),
    Role.SIM: bytes(range(0x40, 0x60)),
}

MG = 1_000_000  # ng
DAY_S = 86_400
# 2026-02-03 08:30 local: the pump has run for 33 days, 8 h 30 min, and the 12 mL it was
# filled with are nearly used up (the low-reservoir alarm is active).
T_S = 33 * DAY_S + 8 * 3600 + 1800
CLOCK_S = 1_767_225_600 + T_S  # 2026-01-01T00:00 local + T_S
T_MS = T_S * 1000
SERIAL = "TH-20-000123"


def reference_prescription() -> dict[str, Any]:
    """The reference therapy (see /work/shared/domain.md): morphine 5 mg/mL, flex basal."""
    return {
        "drug": "morphine",
        "concentration_ng_per_ml": 5 * MG,
        "basal": (
            BasalStep(start_s=0, rate_ng_per_day=1 * MG),
            BasalStep(start_s=7 * 3600, rate_ng_per_day=3 * MG // 2),
            BasalStep(start_s=22 * 3600, rate_ng_per_day=1 * MG),
        ),
        "bolus_dose_ng": MG // 10,
        "bolus_duration_s": 600,
        "bolus_lockout_s": 2 * 3600,
        "bolus_max_per_24h": 6,
        "max_dose_24h_ng": 3 * MG,
        "low_reservoir_ul": 2000,
        "catheter_volume_nl": 200_000,
        "timed_bolus": (),
    }


def _no_prescription() -> dict[str, Any]:
    return {
        "drug": "",
        "concentration_ng_per_ml": 0,
        "basal": (),
        "bolus_dose_ng": 0,
        "bolus_duration_s": 0,
        "bolus_lockout_s": 0,
        "bolus_max_per_24h": 0,
        "max_dose_24h_ng": 0,
        "low_reservoir_ul": 0,
        "catheter_volume_nl": 0,
        "timed_bolus": (),
    }


def _signer(role: Role, counter: int) -> FrameSigner:
    """A signer whose next frame carries exactly `counter`."""
    return FrameSigner(role, TEST_KEYS[role], counter=counter - 1)


def _examples() -> list[tuple[str, Message, int]]:
    """(name, message, seq) of every unsigned example, at least one per message type."""
    hello_ack = HelloAck(
        serial=SERIAL,
        firmware_version="0.1.0",
        protocol_version=PROTOCOL_VERSION,
        reservoir_capacity_ul=20_000,
        stroke_nl=500,
    )
    signed_hello_body = codec.encode_to_body(Hello(), 1, _signer(Role.CLINICIAN, 1))
    rx = [
        # pump link: controller -> pump hardware
        ("SLEEP_UNTIL", SleepUntil(wake_at_ms=T_MS + 216_000), 101),
        ("SLEEP_UNTIL/no-timer", SleepUntil(wake_at_ms=NONE_U64), 102),
        ("TIME_REQUEST", TimeRequest(), 103),
        # a patient bolus: 0.1 mg at 5 mg/mL = 20 uL = 40 strokes of 0.5 uL over 600 s
        ("MOTOR_RUN", MotorRun(run_id=42, strokes=40, interval_ms=15_000), 104),
        ("MOTOR_STOP", MotorStop(run_id=42), 105),
        ("MOTOR_STOP/any", MotorStop(run_id=0xFFFF), 106),
        ("BEEP", Beep(pattern=BeepPattern.TWO_TONE, repeat=3, repeat_interval_ms=1000), 107),
        ("WATCHDOG_KICK", WatchdogKick(), 108),
        ("HW_INFO_REQUEST", HwInfoRequest(), 109),
        ("SENSOR_REQUEST", SensorRequest(), 110),
        ("HOST_TX", HostTx(frame=codec.encode_to_body(hello_ack, 1)), 111),
        ("CONTROLLER_START", ControllerStart(), 100),
        # pump link: pump hardware -> controller
        (
            "POWER_ON",
            PowerOn(reset_cause=ResetCause.POWER_UP, time_ms=0, rtc_s=CLOCK_S - T_S, boot_count=1, odometer_strokes=0),
            1,
        ),
        ("TIME", Time(time_ms=T_MS + 216_000, reason=WakeReason.TIMER), 2),
        (
            "RUN_PROGRESS",
            RunProgress(
                run_id=42, strokes_made=40, outcome=RunOutcome.COMPLETED, odometer_strokes=20_117, time_ms=T_MS
            ),
            3,
        ),
        (
            "RUN_PROGRESS/stalled",
            RunProgress(run_id=43, strokes_made=3, outcome=RunOutcome.STALLED, odometer_strokes=20_120, time_ms=T_MS),
            4,
        ),
        (
            "SENSORS",
            Sensors(
                time_ms=T_MS, outlet_pressure_pa=-150, motor_stalled=False, battery_mv=3_050, odometer_strokes=48_213
            ),
            5,
        ),
        (
            "HW_INFO",
            HwInfo(
                serial=SERIAL,
                reservoir_capacity_ul=20_000,
                stroke_nl=500,
                min_stroke_interval_ms=250,
                min_flow_nl_per_day=48_000,
                max_strokes_per_run=1_000,
                watchdog_window_ms=2_000,
                battery_eri_mv=2_600,
                battery_eos_mv=2_400,
                odometer_strokes=48_213,
            ),
            6,
        ),
        ("HOST_RX", HostRx(time_ms=25_200_000, frame=signed_hello_body), 7),
        # host link: requests (unsigned here; see the signed variants)
        ("HELLO", Hello(), 1),
        ("STATUS", Status(), 2),
        ("PROGRAM", Program(command_id=1, **reference_prescription()), 3),
        (
            "PROGRAM/timed_bolus",
            Program(
                command_id=10,
                **{
                    **reference_prescription(),
                    "timed_bolus": (
                        TimedBolus(start_s=8 * 3600, dose_ng=MG // 4, duration_s=900),
                        TimedBolus(start_s=20 * 3600, dose_ng=MG // 4, duration_s=900),
                    ),
                    "max_dose_24h_ng": 4 * MG,
                },
            ),
            3,
        ),
        ("START", Start(command_id=2), 4),
        ("STOP", Stop(command_id=3), 5),
        ("BOLUS_REQUEST", BolusRequest(command_id=4), 6),
        ("CLINICIAN_BOLUS", ClinicianBolus(command_id=5, dose_ng=250_000, duration_s=900), 7),
        ("PRIME", Prime(command_id=6, volume_nl=150_000), 8),
        ("REFILL_BEGIN", RefillBegin(command_id=7), 9),
        (
            "REFILL_COMPLETE",
            RefillComplete(
                command_id=8,
                withdrawn_nl=1_950_000,
                added_nl=20_000_000,
                drug="morphine",
                concentration_ng_per_ml=5 * MG,
            ),
            10,
        ),
        ("ALARM_ACK", AlarmAck(alarm=AlarmId.LOW_RESERVOIR), 11),
        ("LOG_READ", LogRead(from_seq=100, max_entries=4), 12),
        ("SET_CLOCK", SetClock(command_id=9, clock_s=CLOCK_S), 13),
        ("READ_PRESCRIPTION", ReadPrescription(), 14),
        ("CATHETER_REPLACED", CatheterReplaced(command_id=10), 16),
        # revoke the patient's key (an empty wrapped key); a replacement carries 32 wrapped bytes
        ("KEY_UPDATE", KeyUpdate(command_id=11, role=Role.PATIENT, wrapped_key=b""), 17),
        # host link: responses
        ("HELLO_ACK", hello_ack, 1),
        (
            "STATUS_ACK",
            StatusAck(
                state=TherapyState.RUNNING,
                bolus_active=False,
                time_s=T_S,
                clock_s=CLOCK_S,
                drug="morphine",
                concentration_ng_per_ml=5 * MG,
                basal_rate_ng_per_day=3 * MG // 2,
                reservoir_nl=1_980_000,
                low_reservoir_at_s=T_S + 20 * 86_400,
                low_reservoir_worst_at_s=T_S + 14 * 86_400,
                lockout_remaining_s=3_600,
                boluses_24h=2,
                max_boluses_24h=6,
                dose_24h_ng=1_425_000,
                max_dose_24h_ng=3 * MG,
                alarms=(
                    AlarmEntry(
                        alarm=AlarmId.LOW_RESERVOIR,
                        priority=Priority.LOW,
                        acknowledged=False,
                        condition_present=True,
                        silenced=False,
                        needs_reset=False,
                    ),
                ),
                battery_mv=3_050,
                last_command_id=4,
                catheter_state=CatheterState.PRIMED,
                catheter_volume_nl=200_000,
            ),
            2,
        ),
        (
            "STATUS_ACK/stopped",
            StatusAck(
                state=TherapyState.STOPPED,
                bolus_active=False,
                time_s=60,
                clock_s=1_767_225_660,
                drug="",
                concentration_ng_per_ml=0,
                basal_rate_ng_per_day=0,
                reservoir_nl=0,
                low_reservoir_at_s=NONE_U64,
                low_reservoir_worst_at_s=NONE_U64,
                lockout_remaining_s=0,
                boluses_24h=0,
                max_boluses_24h=0,
                dose_24h_ng=0,
                max_dose_24h_ng=0,
                alarms=(),
                battery_mv=3_200,
                last_command_id=0,
                catheter_state=CatheterState.UNKNOWN,
                catheter_volume_nl=0,
            ),
            2,
        ),
        ("PROGRAM_ACK", ProgramAck(command_id=1), 3),
        ("START_ACK", StartAck(command_id=2, state=TherapyState.RUNNING), 4),
        ("STOP_ACK", StopAck(command_id=3, state=TherapyState.STOPPED), 5),
        (
            "BOLUS_REQUEST_ACK",
            BolusRequestAck(
                command_id=4,
                decision=BolusDecision.GRANTED,
                dose_ng=MG // 10,
                duration_s=600,
                next_available_at_s=T_S + 2 * 3600,
            ),
            6,
        ),
        (
            "BOLUS_REQUEST_ACK/lockout",
            BolusRequestAck(
                command_id=10,
                decision=BolusDecision.LOCKOUT,
                dose_ng=0,
                duration_s=0,
                next_available_at_s=T_S + 2 * 3600,
            ),
            15,
        ),
        # 0.25 mg at 5 mg/mL = 0.05 mL
        ("CLINICIAN_BOLUS_ACK", ClinicianBolusAck(command_id=5, volume_nl=50_000), 7),
        ("PRIME_ACK", PrimeAck(command_id=6), 8),
        (
            "CATHETER_REPLACED_ACK",
            CatheterReplacedAck(command_id=10, catheter_state=CatheterState.EMPTY, catheter_volume_nl=200_000),
            16,
        ),
        ("KEY_UPDATE_ACK", KeyUpdateAck(command_id=11, role=Role.PATIENT, revoked=True), 17),
        ("REFILL_BEGIN_ACK", RefillBeginAck(command_id=7, expected_reservoir_nl=2_000_000), 9),
        ("REFILL_COMPLETE_ACK", RefillCompleteAck(command_id=8, discrepancy_nl=-50_000, reservoir_nl=20_000_000), 10),
        (
            "ALARM_ACK_ACK",
            AlarmAckAck(
                alarm=AlarmId.LOW_RESERVOIR,
                still_active=True,
                priority=Priority.MEDIUM,
                needs_reset=False,
                state=TherapyState.RUNNING,
            ),
            11,
        ),
        (
            "LOG_READ_ACK",
            LogReadAck(
                oldest_seq=1,
                next_seq=104,
                entries=(
                    LogEntry(seq=100, time_s=T_S - 7_200, event=LogEvent.BOLUS_REQUEST, arg0=4, arg1=0),
                    LogEntry(seq=101, time_s=T_S - 7_200, event=LogEvent.BOLUS_STARTED, arg0=4, arg1=1),
                    LogEntry(seq=102, time_s=T_S - 6_600, event=LogEvent.BOLUS_FINISHED, arg0=4, arg1=1),
                    LogEntry(seq=103, time_s=T_S - 60, event=LogEvent.ALARM_RAISED, arg0=1, arg1=1),
                ),
            ),
            12,
        ),
        ("SET_CLOCK_ACK", SetClockAck(command_id=9, clock_s=CLOCK_S), 13),
        ("READ_PRESCRIPTION_ACK", ReadPrescriptionAck(present=True, **reference_prescription()), 14),
        ("READ_PRESCRIPTION_ACK/none", ReadPrescriptionAck(present=False, **_no_prescription()), 14),
        (
            "NAK/not_permitted",
            codec.nak_for(Program.TYPE, NakReason.NOT_PERMITTED, detail="PROGRAM needs the clinician key"),
            16,
        ),
        (
            "NAK/out_of_range",
            codec.nak_for(
                Program.TYPE,
                NakReason.OUT_OF_RANGE,
                field="max_dose_24h_ng",
                detail="4000000 ng exceeds the drug library limit of 3000000 ng per 24 h",
            ),
            17,
        ),
        ("NAK/replayed", codec.nak_for(Start.TYPE, NakReason.REPLAYED, detail="counter 2 <= last accepted 5"), 18),
        # host link: events
        ("ALARM_RAISED", AlarmRaised(time_s=T_S - 60, alarm=AlarmId.LOW_RESERVOIR, priority=Priority.LOW), 1),
        ("ALARM_CLEARED", AlarmCleared(time_s=T_S + DAY_S, alarm=AlarmId.LOW_RESERVOIR), 2),
        (
            "THERAPY_STATE_CHANGED",
            TherapyStateChanged(time_s=T_S, old_state=TherapyState.STOPPED, new_state=TherapyState.RUNNING),
            3,
        ),
        (
            "BOLUS_STARTED",
            BolusStarted(
                time_s=T_S,
                command_id=4,
                kind=BolusKind.PATIENT,
                dose_ng=MG // 10,
                volume_nl=20_000,
                duration_s=600,
            ),
            4,
        ),
        (
            "BOLUS_FINISHED",
            BolusFinished(
                time_s=T_S + 600,
                command_id=4,
                kind=BolusKind.PATIENT,
                outcome=BolusOutcome.COMPLETED,
                delivered_ng=MG // 10,
                delivered_nl=20_000,
            ),
            5,
        ),
        # host link: simulation control
        ("SIM_ADVANCE", SimAdvance(duration_ms=3_600_000), 1),
        ("SIM_SET_SPEED", SimSetSpeed(speed_milli=60_000), 2),
        (
            "SIM_INJECT_FAULT",
            SimInjectFault(fault=Fault.LINK_CORRUPT, link=Link.HOST, value=0, rate_ppm=1_000, seed=12_345),
            3,
        ),
        ("SIM_CLEAR_FAULT", SimClearFault(fault=Fault.LINK_CORRUPT), 4),
        ("SIM_GROUND_TRUTH", SimGroundTruth(tones_from=0), 5),
        ("SIM_POWER_CYCLE", SimPowerCycle(off_ms=5_000), 6),
        (
            "SIM_REFILL",
            SimRefill(withdraw_nl=2_000_000, add_nl=20_000_000, concentration_ng_per_ml=5 * MG, into_pocket=False),
            7,
        ),
        ("SIM_ADVANCE_ACK", SimAdvanceAck(time_ms=T_MS), 1),
        ("SIM_SET_SPEED_ACK", SimSetSpeedAck(speed_milli=60_000), 2),
        ("SIM_INJECT_FAULT_ACK", SimInjectFaultAck(fault=Fault.LINK_CORRUPT), 3),
        ("SIM_CLEAR_FAULT_ACK", SimClearFaultAck(fault=Fault.LINK_CORRUPT), 4),
        (
            "SIM_GROUND_TRUTH_ACK",
            SimGroundTruthAck(
                time_ms=T_MS,
                delivered_nl=10_058_500,
                delivered_ng=50_292_500,
                reservoir_nl=1_941_500,
                outlet_pressure_pa=-150,
                motor=MotorState.IDLE,
                strokes_total=20_117,
                battery_mv=3_050,
                controller_alive=True,
                tones_total=2,
                tones=(
                    Tone(time_ms=T_MS - 60_000, pattern=BeepPattern.SINGLE_TONE),
                    Tone(time_ms=T_MS - 7_200_000, pattern=BeepPattern.CONFIRM),
                ),
            ),
            5,
        ),
        ("SIM_POWER_CYCLE_ACK", SimPowerCycleAck(boot_count=2), 6),
        ("SIM_REFILL_ACK", SimRefillAck(withdrawn_nl=1_941_500, reservoir_nl=20_000_000), 7),
        ("SIM_REPLACE_CATHETER", SimReplaceCatheter(volume_nl=150_000), 8),
        ("SIM_REPLACE_CATHETER_ACK", SimReplaceCatheterAck(volume_nl=150_000), 8),
    ]
    return rx


def _frame_vector(name: str, msg: Message, seq: int, role: Role | None = None, counter: int = 0) -> dict[str, Any]:
    signer = _signer(role, counter) if role is not None else None
    body = codec.encode_to_body(msg, seq, signer)
    payload = msg.encode_payload()
    v: dict[str, Any] = {
        "name": name,
        "expect": "ok",
        "message": msg.NAME,
        "msg_type": msg.TYPE,
        "seq": seq,
        "fields": msg.to_dict(),
        "payload_hex": payload.hex(),
    }
    if role is not None:
        key = TEST_KEYS[role]
        signed = body[: HEADER_SIZE + len(payload) + AUTH_PREFIX.size]
        tag = compute_tag(key, signed)
        assert body[len(signed) : len(signed) + TAG_SIZE] == tag
        v.update(
            key_id=int(role),
            counter=counter,
            key_hex=key.hex(),
            signed_hex=signed.hex(),
            tag_hex=tag.hex(),
        )
    v.update(body_hex=body.hex(), wire_hex=wrap_body(body).hex())
    return v


def _raw_body(msg_type: int, seq: int, payload: bytes, *, version: int = PROTOCOL_VERSION, flags: int = 0) -> bytes:
    """A body with a correct CRC but whatever header we ask for (for negative vectors)."""
    head = HEADER.pack(version, msg_type, flags, seq, len(payload)) + payload
    return head + struct.pack("<I", zlib.crc32(head))


def _error_vector(name: str, wire: bytes, error: FrameErrorKind, msg_type: int | None = None, seq: int | None = None):
    return {
        "name": name,
        "expect": "frame_error",
        "error": error.value,
        "msg_type": msg_type,
        "seq": seq,
        "wire_hex": wire.hex(),
    }


def _rejected_vector(
    name: str,
    msg_type: int,
    seq: int,
    payload: bytes,
    reason: NakReason,
    field: str | None,
    role: Role | None = None,
    counter: int = 0,
) -> dict[str, Any]:
    signer = _signer(role, counter) if role is not None else None
    body = encode_body(msg_type, seq, payload, signer)
    v: dict[str, Any] = {
        "name": name,
        "expect": "rejected",
        "message": REGISTRY[msg_type].NAME,
        "msg_type": msg_type,
        "seq": seq,
        "payload_hex": payload.hex(),
        "nak_reason": reason.name.lower(),
        "nak_field": field,
    }
    if role is not None:
        v.update(key_id=int(role), counter=counter, key_hex=TEST_KEYS[role].hex())
    v.update(body_hex=body.hex(), wire_hex=wrap_body(body).hex())
    return v


def build_vectors() -> list[dict[str, Any]]:
    """Every vector, in a fixed order: unsigned examples, signed requests, negatives."""
    examples = _examples()
    out = [_frame_vector(name, msg, seq) for name, msg, seq in examples]

    # Signed variants: every request signed with the key of the first role allowed to
    # send it, counters counting up per key from 1 (the clinician's 1 is the HELLO that
    # HOST_RX above carries).
    counters = dict.fromkeys(TEST_KEYS, 0)
    requests = [
        (name, msg, seq)
        for name, msg, seq in examples
        if msg.FAMILY in (MessageFamily.HOST_REQUEST, MessageFamily.SIM_REQUEST)
    ]
    for name, msg, seq in requests:
        role = msg.ROLES[0]
        counters[role] += 1
        out.append(_frame_vector(f"{name}/signed-{role.name.lower()}", msg, seq, role, counters[role]))
    counters[Role.PATIENT] += 1
    out.append(_frame_vector("STATUS/signed-patient", Status(), 20, Role.PATIENT, counters[Role.PATIENT]))
    # A counter that uses all eight bytes, to pin down their order.
    out.append(
        _frame_vector(
            "START/signed-clinician-large-counter", Start(command_id=11), 21, Role.CLINICIAN, 0x0102030405060708
        )
    )

    out += _cobs_run_vectors()
    out += _negative_vectors()
    return out


def _zero_free_runs(data: bytes) -> list[int]:
    return [len(run) for run in data.split(b"\x00")]


def _cobs_run_vectors() -> list[dict[str, Any]]:
    """Frames whose bodies hold runs of 254 and more non-zero bytes, the case where COBS
    writes a full block (code 0xFF) that no 0x00 follows. A real host-link body always
    holds a zero (unsigned flags, a short length's high byte), so these are HOST_TX frames
    whose blob, which the pump hardware passes on without looking inside, is made up."""
    out = []
    # (name, blob length): 250 makes blob + CRC exactly one 254-byte run ending the body
    # (after the zero high byte of its u16 length); 300 makes a 310-byte run from the seq
    # to the end, a full block and then part of one.
    for name, n in (("HOST_TX/cobs-run-254-at-end", 250), ("HOST_TX/cobs-run-over-254", 300)):
        msg = HostTx(frame=bytes(i % 255 + 1 for i in range(n)))
        # The first seq whose two bytes and whose body's CRC hold no zero (deterministic).
        seq = next(
            s
            for s in range(0x0101, 0x10000)
            if 0 not in struct.pack("<H", s) and 0 not in codec.encode_to_body(msg, s)[-4:]
        )
        v = _frame_vector(name, msg, seq)
        body = bytes.fromhex(v["body_hex"])
        runs = _zero_free_runs(body)
        if n == 250:
            assert runs[-1] == 254, runs  # the run ends the body: 0xFF + 254 bytes, no 0x01 after
        else:
            assert max(runs) > 254, runs
        out.append(v)
    return out


def _negative_vectors() -> list[dict[str, Any]]:
    out = []
    good = bytearray(codec.encode_to_body(Start(command_id=2), 4, _signer(Role.CLINICIAN, 3)))
    good[HEADER_SIZE] ^= 0x04  # one bit of the payload flipped on the line
    out.append(_error_vector("error/bad-crc", wrap_body(bytes(good)), FrameErrorKind.BAD_CRC))

    # A code byte that promises more bytes than the segment holds.
    out.append(_error_vector("error/bad-cobs", b"\x00\x05\x31\x32\x00", FrameErrorKind.BAD_COBS))

    ack = codec.encode_to_body(ProgramAck(command_id=1), 3)
    out.append(_error_vector("error/truncated", wrap_body(ack[:-3]), FrameErrorKind.BAD_CRC))
    out.append(_error_vector("error/shorter-than-header", wrap_body(ack[:6]), FrameErrorKind.BAD_LENGTH))

    # CRC fine, but payload_len says 8 and only 4 bytes follow: NAK BAD_LENGTH, seq 30.
    body = bytearray(_raw_body(Start.TYPE, 30, struct.pack("<I", 12)))
    body[5] = 8
    body[-4:] = struct.pack("<I", zlib.crc32(bytes(body[:-4])))
    out.append(
        _error_vector("error/length-mismatch", wrap_body(bytes(body)), FrameErrorKind.BAD_LENGTH, Start.TYPE, 30)
    )

    unknown = 0x5F
    assert unknown not in REGISTRY
    out.append(
        _error_vector(
            "error/unknown-type", wrap_body(_raw_body(unknown, 31, b"")), FrameErrorKind.UNKNOWN_TYPE, unknown, 31
        )
    )
    out.append(
        _error_vector(
            "error/unknown-version",
            wrap_body(_raw_body(Hello.TYPE, 32, b"", version=PROTOCOL_VERSION + 1)),
            FrameErrorKind.UNKNOWN_VERSION,
            Hello.TYPE,
            32,
        )
    )
    out.append(
        _error_vector(
            "error/reserved-flag",
            wrap_body(_raw_body(Hello.TYPE, 33, b"", flags=0x02)),
            FrameErrorKind.BAD_FLAGS,
            Hello.TYPE,
            33,
        )
    )
    big = bytearray(_raw_body(Hello.TYPE, 34, b""))
    big[5:7] = struct.pack("<H", MAX_PAYLOAD + 1)
    big[-4:] = struct.pack("<I", zlib.crc32(bytes(big[:-4])))
    out.append(_error_vector("error/oversize-length", wrap_body(bytes(big)), FrameErrorKind.OVERSIZE, Hello.TYPE, 34))

    # Intact frames whose payload is not a valid message: the pump answers NAK.
    out.append(
        _rejected_vector(
            "rejected/unknown-enum", AlarmAck.TYPE, 40, b"\x00", NakReason.OUT_OF_RANGE, "alarm", Role.CLINICIAN, 100
        )
    )
    out.append(
        _rejected_vector(
            "rejected/bool-not-0-or-1",
            SimRefill.TYPE,
            41,
            struct.pack("<IIIB", 0, 1000, 5 * MG, 2),
            NakReason.OUT_OF_RANGE,
            "into_pocket",
            Role.SIM,
            100,
        )
    )
    out.append(
        _rejected_vector(
            "rejected/short-payload", Start.TYPE, 42, b"\x02\x00\x00", NakReason.BAD_LENGTH, None, Role.CLINICIAN, 101
        )
    )
    out.append(
        _rejected_vector("rejected/extra-byte", Hello.TYPE, 43, b"\x00", NakReason.BAD_LENGTH, None, Role.PATIENT, 100)
    )
    long_drug = Program(command_id=12, **reference_prescription()).encode_payload()
    name = b"morphine-hydrochloride-xx"  # 25 bytes: one over the limit
    long_drug = long_drug[:4] + bytes((len(name),)) + name + long_drug[4 + 1 + len("morphine") :]
    out.append(
        _rejected_vector(
            "rejected/text-too-long", Program.TYPE, 44, long_drug, NakReason.OUT_OF_RANGE, "drug", Role.CLINICIAN, 102
        )
    )
    return out


def render_vectors(vectors: list[dict[str, Any]] | None = None) -> str:
    """vectors.json as text: stable order, two-space indent, trailing newline."""
    if vectors is None:
        vectors = build_vectors()
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def by_name(vectors: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in vectors}


def full_hmac(key: bytes, signed: bytes) -> bytes:
    """The untruncated HMAC-SHA256 (for the worked example in SPEC.md)."""
    return hmac.new(key, signed, hashlib.sha256).digest()
