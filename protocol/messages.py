"""Every Thecal message, declared once.

Pump link (0x01-0x3F): the controller and the pump hardware. Host link (0x40-0xBF):
programmer, PTM and test harness to the pump. SPEC.md's byte tables, the vectors file
and the fast codec are all generated from these declarations.

Field names carry their unit (`_ms`, `_s`, `_nl`, `_ul`, `_ng`, `_mv`, `_pa`, `_ppm`);
concentrations are ng per mL; times on the host link are seconds, on the pump link ms.
"""

from __future__ import annotations

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
    MotorState,
    NakReason,
    Priority,
    ResetCause,
    Role,
    RunOutcome,
    TherapyState,
    WakeReason,
)
from .framing import CRC_SIZE, HEADER_SIZE, TRAILER_SIZE
from .schema import (
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Array,
    Blob,
    Bool,
    EnumField,
    Message,
    Text,
    make_message,
    record,
)
from .schema import cs as _cs

# Host-link frames must fit whole inside a pump-link relay message.
HOST_MAX_PAYLOAD = 1024
HOST_MAX_BODY = HEADER_SIZE + HOST_MAX_PAYLOAD + TRAILER_SIZE + CRC_SIZE
DRUG_NAME_MAX = 24
MAX_BASAL_STEPS = 24
MAX_TIMED_BOLUSES = 8
MAX_ALARMS = 16
LOG_PAGE_MAX = 32
TONE_PAGE_MAX = 32

CLIN = (Role.CLINICIAN,)
ANY_PERSON = (Role.CLINICIAN, Role.PATIENT)
SIM = (Role.SIM,)


def F(name: str, sub: _cs.Construct, doc: str) -> _cs.Renamed:  # noqa: N802
    """One documented field."""
    return _cs.Renamed(sub, newname=name, newdocs=doc)


def _cmd() -> _cs.Renamed:
    return F("command_id", U32, "host-chosen id of this command; STATUS reports the last one accepted")


def _time() -> _cs.Renamed:
    return F("time_s", U64, "pump time in s when this happened")


# ---------------------------------------------------------------- records

BasalStep = record(
    "BasalStep",
    _cs.Struct(
        F("start_s", U32, "time of day the step starts, s after local midnight (0..86399)"),
        F("rate_ng_per_day", U32, "basal rate from then on, ng of drug per day"),
    ),
    "One step of the daily basal schedule.",
)
TimedBolus = record(
    "TimedBolus",
    _cs.Struct(
        F("start_s", U32, "time of day it starts, s after local midnight (0..86399)"),
        F("dose_ng", U32, "its dose, ng"),
        F("duration_s", U32, "time over which it is delivered, s"),
    ),
    "One timed bolus: the pump gives it every day at its time.",
)
AlarmEntry = record(
    "AlarmEntry",
    _cs.Struct(
        F("alarm", EnumField(U8, AlarmId), "which alarm"),
        F("priority", EnumField(U8, Priority), "IEC 60601-1-8 priority"),
        F("acknowledged", Bool(), "1 once acknowledged (silenced); it stays listed while its condition holds"),
        F("condition_present", Bool(), "1 while its condition holds; 0 once it is gone (latched until acknowledged)"),
        F("silenced", Bool(), "1 while an acknowledgement keeps its tone silent"),
        F(
            "needs_reset",
            Bool(),
            "1 if, once its condition is gone, therapy stays halted until a clinician acknowledges it "
            "(recovery policy 'hold'); 0 if it never halts or therapy resumes by itself",
        ),
    ),
    "One active (latched) alarm.",
)
LogEntry = record(
    "LogEntry",
    _cs.Struct(
        F("seq", U32, "log sequence number: strictly increasing, never reused across resets"),
        F("time_s", U64, "pump time in s"),
        F("event", EnumField(U16, LogEvent), "what happened"),
        F("arg0", U32, "first argument (meaning per event: see LogEvent; 0 when unused)"),
        F("arg1", U32, "second argument (0 when unused)"),
    ),
    "One event-log entry.",
)
Tone = record(
    "Tone",
    _cs.Struct(
        F("time_ms", U64, "pump time in ms when the pattern sounded"),
        F("pattern", EnumField(U8, BeepPattern), "what sounded"),
    ),
    "One tone the beeper actually sounded (ground truth).",
)

PRESCRIPTION_FIELDS = (
    F("drug", Text(DRUG_NAME_MAX), "drug name as in the drug library, e.g. 'morphine'"),
    F("concentration_ng_per_ml", U32, "drug concentration in the reservoir, ng per mL"),
    F("basal", Array(MAX_BASAL_STEPS, BasalStep), "basal schedule, 1-24 steps sorted by start_s, first at 0"),
    F("bolus_dose_ng", U32, "patient bolus dose in ng; 0 = no patient bolus"),
    F("bolus_duration_s", U32, "time over which a patient bolus is delivered"),
    F("bolus_lockout_s", U32, "minimum time from the start of one patient bolus to the next"),
    F("bolus_max_per_24h", U8, "patient boluses allowed in any rolling 24 h"),
    F("max_dose_24h_ng", U32, "hard limit on all drug (basal and every bolus) in any rolling 24 h"),
    F("low_reservoir_ul", U32, "low-reservoir alarm threshold, uL"),
    F(
        "catheter_volume_nl",
        U32,
        "catheter volume from the pump outlet to its tip as the clinician entered it (catheter model and "
        "trimmed length), nL; 0 = not entered",
    ),
    F(
        "timed_bolus",
        Array(MAX_TIMED_BOLUSES, TimedBolus),
        "daily timed boluses, 0-8 sorted by start_s, none overlapping another (SR-053)",
    ),
)

# ---------------------------------------------------------------- pump link: controller -> pump

SleepUntil = make_message(
    0x01,
    "SLEEP_UNTIL",
    "The controller is idle (it has finished all work) until wake_at_ms or the next event. "
    "The pump answers with TIME when that time comes. The lockstep clock advances only "
    "after this message.",
    (F("wake_at_ms", U64, "pump time to wake at; 0xFFFFFFFFFFFFFFFF = no timer, wake on events only"),),
)
TimeRequest = make_message(
    0x02, "TIME_REQUEST", "Ask the pump for the current time (answered by TIME, reason POLL).", ()
)
MotorRun = make_message(
    0x03,
    "MOTOR_RUN",
    "Make a bounded run of strokes, one every interval_ms. The mechanism never runs more "
    "than it was commanded, so a controller that dies costs at most the rest of one run. "
    "A new run replaces a run in progress.",
    (
        F("run_id", U16, "controller-chosen id echoed in RUN_PROGRESS"),
        F("strokes", U16, "strokes to make, 1..max_strokes_per_run"),
        F("interval_ms", U32, "time between strokes, >= min_stroke_interval_ms"),
    ),
)
MotorStop = make_message(
    0x04,
    "MOTOR_STOP",
    "Stop the run now, without completing the current stroke.",
    (F("run_id", U16, "run to stop (0xFFFF = whatever is running)"),),
)
Beep = make_message(
    0x05,
    "BEEP",
    "Sound a beeper pattern.",
    (
        F("pattern", EnumField(U8, BeepPattern), "what to sound; SILENT stops a repetition"),
        F("repeat", U8, "times to sound it (>= 1)"),
        F("repeat_interval_ms", U32, "gap between repetitions"),
    ),
)
WatchdogKick = make_message(
    0x06,
    "WATCHDOG_KICK",
    "Restart the hardware watchdog window. Silence longer than watchdog_window_ms stops the motor "
    "and sounds HARDWARE_ALARM.",
    (),
)
HwInfoRequest = make_message(0x07, "HW_INFO_REQUEST", "Ask for HW_INFO.", ())
SensorRequest = make_message(0x08, "SENSOR_REQUEST", "Ask for a SENSORS report now.", ())
HostTx = make_message(
    0x09,
    "HOST_TX",
    "Relay: a complete host-link frame body (header to CRC, before COBS) for the pump to send to the host.",
    (F("frame", Blob(HOST_MAX_BODY), "host-link frame body, opaque to the pump"),),
)

ControllerStart = make_message(
    0x0A,
    "CONTROLLER_START",
    "The controller has come out of reset (in split mode: its process started) and wants "
    "its POWER_ON. The pump answers POWER_ON with the reset cause it knows of.",
    (),
)

# ---------------------------------------------------------------- pump link: pump -> controller

PowerOn = make_message(
    0x21,
    "POWER_ON",
    "First message after the controller starts: why it (re)started and what time it is.",
    (
        F("reset_cause", EnumField(U8, ResetCause), "why the controller was (re)started"),
        F("time_ms", U64, "pump time in ms"),
        F("rtc_s", I64, "the pump's real-time clock at time_ms: local time as seconds since 1970-01-01T00:00"),
        F("boot_count", U32, "number of controller starts since manufacture, this one included"),
        F(
            "odometer_strokes",
            U32,
            "strokes made since manufacture: the controller settles its count and doubts its memory with it",
        ),
    ),
)
Time = make_message(
    0x22,
    "TIME",
    "What time it is, and why the pump is telling (the wake-up timer came due, or an answer).",
    (
        F("time_ms", U64, "pump time in ms"),
        F("reason", EnumField(U8, WakeReason), "why this was sent"),
    ),
)
RunProgress = make_message(
    0x23,
    "RUN_PROGRESS",
    "Strokes the mechanism actually made in a run. Sent after each stroke and when the run ends.",
    (
        F("run_id", U16, "the run's id from MOTOR_RUN"),
        F("strokes_made", U16, "strokes completed so far in this run"),
        F("outcome", EnumField(U8, RunOutcome), "IN_PROGRESS, or how the run ended"),
        F("odometer_strokes", U32, "strokes made since manufacture"),
        F("time_ms", U64, "pump time in ms"),
    ),
)
Sensors = make_message(
    0x24,
    "SENSORS",
    "Sensor readings: sent on SENSOR_REQUEST and whenever a reading crosses a threshold.",
    (
        F("time_ms", U64, "pump time in ms"),
        F("outlet_pressure_pa", I32, "outlet pressure above baseline, Pa"),
        F("motor_stalled", Bool(), "1 when the motor is stalled"),
        F("battery_mv", U16, "battery voltage, mV"),
        F("odometer_strokes", U32, "strokes made since manufacture (a restarted controller settles its count with it)"),
    ),
)
HwInfo = make_message(
    0x25,
    "HW_INFO",
    "The pump hardware's fixed figures (from its pump-model file) and its stroke odometer.",
    (
        F("serial", Text(16), "pump serial number"),
        F("reservoir_capacity_ul", U32, "reservoir capacity, uL"),
        F("stroke_nl", U32, "nominal volume of one stroke, nL"),
        F("min_stroke_interval_ms", U32, "fastest the mechanism may stroke"),
        F("min_flow_nl_per_day", U32, "slowest basal flow the pump delivers accurately, nL/day"),
        F("max_strokes_per_run", U16, "largest run MOTOR_RUN may ask for"),
        F("watchdog_window_ms", U32, "hardware watchdog window"),
        F("battery_eri_mv", U16, "elective replacement indicator threshold"),
        F("battery_eos_mv", U16, "end-of-service threshold"),
        F("odometer_strokes", U32, "strokes made since manufacture: a controller settles its count at boot"),
    ),
)
HostRx = make_message(
    0x26,
    "HOST_RX",
    "Relay: a complete host-link frame body the pump received from the host (CRC already checked).",
    (
        F("time_ms", U64, "pump time in ms when the frame arrived (the controller keeps no clock of its own)"),
        F("frame", Blob(HOST_MAX_BODY), "host-link frame body, opaque to the pump"),
    ),
)

# ---------------------------------------------------------------- host link: requests and ACKs

Nak = make_message(
    0x80,
    "NAK",
    "Refusal of a request: sent instead of its ACK, with the request's sequence number. Nothing was changed.",
    (
        F("request_type", U8, "type of the refused request"),
        F("reason", EnumField(U8, NakReason), "why it was refused"),
        F("field", Text(32), "the field at fault (OUT_OF_RANGE), else empty"),
        F("detail", Text(160), "human-readable explanation naming the limit broken"),
    ),
)

Hello = make_message(0x40, "HELLO", "Who are you? Any role may ask.", (), roles=ANY_PERSON)
HelloAck = make_message(
    0x60,
    "HELLO_ACK",
    "Device information.",
    (
        F("serial", Text(16), "pump serial number"),
        F("firmware_version", Text(16), "controller firmware version"),
        F("protocol_version", U8, "protocol version spoken (1)"),
        F("reservoir_capacity_ul", U32, "reservoir capacity, uL"),
        F("stroke_nl", U32, "nominal stroke volume, nL"),
    ),
    answers=Hello,
)
Status = make_message(0x41, "STATUS", "Current therapy status. Any role may ask.", (), roles=ANY_PERSON)
StatusAck = make_message(
    0x61,
    "STATUS_ACK",
    "Therapy status.",
    (
        F("state", EnumField(U8, TherapyState), "therapy state"),
        F("bolus_active", Bool(), "1 while a bolus is being delivered"),
        F("time_s", U64, "pump time in s"),
        F("clock_s", I64, "local wall-clock time as seconds since 1970-01-01T00:00 local"),
        F("drug", Text(DRUG_NAME_MAX), "drug programmed ('' if none)"),
        F("concentration_ng_per_ml", U32, "concentration programmed, ng/mL"),
        F("basal_rate_ng_per_day", U32, "basal rate now in force, ng/day"),
        F(
            "reservoir_nl",
            U32,
            "controller's estimate of the reservoir volume, nL; 0xFFFFFFFF = not known (no fill recorded yet)",
        ),
        F(
            "low_reservoir_at_s",
            U64,
            "pump time the low-reservoir alarm is expected at basal and timed boluses; 0xFFFFFFFFFFFFFFFF = none",
        ),
        F(
            "low_reservoir_worst_at_s",
            U64,
            "the same if the patient also takes every patient bolus allowed (the refill date); "
            "0xFFFFFFFFFFFFFFFF = none",
        ),
        F("lockout_remaining_s", U32, "seconds until a patient bolus may be granted by lockout"),
        F("boluses_24h", U8, "patient boluses in the last rolling 24 h"),
        F("max_boluses_24h", U8, "patient boluses allowed per rolling 24 h"),
        F("dose_24h_ng", U32, "drug delivered in the last rolling 24 h, all sources, ng"),
        F("max_dose_24h_ng", U32, "hard limit per rolling 24 h, ng"),
        F("alarms", Array(MAX_ALARMS, AlarmEntry), "latched alarms"),
        F("battery_mv", U16, "battery voltage, mV"),
        F("last_command_id", U32, "command_id of the last command accepted that carried one (0 = none)"),
        F("catheter_state", EnumField(U8, CatheterState), "what the firmware knows of the catheter"),
        F("catheter_volume_nl", U32, "the catheter's volume as programmed, nL; 0 = not entered"),
    ),
    answers=Status,
)
Program = make_message(
    0x42,
    "PROGRAM",
    "Replace the prescription. Validated as a whole; a refusal (NAK OUT_OF_RANGE naming the field) changes nothing.",
    (_cmd(), *PRESCRIPTION_FIELDS),
    roles=CLIN,
)
ProgramAck = make_message(0x62, "PROGRAM_ACK", "The prescription was accepted.", (_cmd(),), answers=Program)
Start = make_message(0x43, "START", "Start (or resume) therapy.", (_cmd(),), roles=CLIN)
StartAck = make_message(
    0x63,
    "START_ACK",
    "Therapy started.",
    (_cmd(), F("state", EnumField(U8, TherapyState), "state after the command")),
    answers=Start,
)
Stop = make_message(
    0x44,
    "STOP",
    "Stop therapy; a bolus in progress ends (STOPPED). While stopped, ends a priming or single bolus in progress.",
    (_cmd(),),
    roles=CLIN,
)
StopAck = make_message(
    0x64,
    "STOP_ACK",
    "Therapy stopped.",
    (_cmd(), F("state", EnumField(U8, TherapyState), "state after the command")),
    answers=Stop,
)
BolusRequest = make_message(
    0x45,
    "BOLUS_REQUEST",
    "The patient pressed the bolus button. The answer is an ACK whether granted or denied.",
    (_cmd(),),
    roles=(Role.PATIENT,),
)
BolusRequestAck = make_message(
    0x65,
    "BOLUS_REQUEST_ACK",
    "Whether the patient bolus was granted, and if not, why and when one next can be.",
    (
        _cmd(),
        F("decision", EnumField(U8, BolusDecision), "GRANTED or the reason for denial"),
        F("dose_ng", U32, "dose granted (0 if denied)"),
        F("duration_s", U32, "delivery duration of the granted bolus"),
        F(
            "next_available_at_s",
            U64,
            "pump time from which a bolus may be granted; 0xFFFFFFFFFFFFFFFF = not foreseeable",
        ),
    ),
    answers=BolusRequest,
)
ClinicianBolus = make_message(
    0x46,
    "CLINICIAN_BOLUS",
    "A clinician-ordered bolus (subject to the rolling 24 h hard limit). While stopped, a single bolus: "
    "delivered, then therapy stays stopped.",
    (
        _cmd(),
        F("dose_ng", U32, "bolus dose, ng"),
        F("duration_s", U32, "delivery duration, s"),
    ),
    roles=CLIN,
)
ClinicianBolusAck = make_message(
    0x66,
    "CLINICIAN_BOLUS_ACK",
    "The clinician bolus started.",
    (_cmd(), F("volume_nl", U32, "volume the bolus will push, nL")),
    answers=ClinicianBolus,
)
Prime = make_message(
    0x47,
    "PRIME",
    "Priming bolus, therapy stopped: push reservoir fluid into the catheter. Into an empty catheter (see "
    "CATHETER_REPLACED), up to its volume, what leaves the tip is no drug; beyond it, and into a primed or "
    "unknown catheter, it is drug, counted in the rolling 24 h and refused if it would break the hard limit.",
    (_cmd(), F("volume_nl", U32, "volume to push, nL")),
    roles=CLIN,
)
PrimeAck = make_message(0x67, "PRIME_ACK", "Priming started.", (_cmd(),), answers=Prime)
CatheterReplaced = make_message(
    0x4E,
    "CATHETER_REPLACED",
    "The clinician declares the catheter new and empty (implant or revision surgery), of the volume the "
    "prescription names: priming into it, up to that volume, is not drug to the patient. Therapy stopped.",
    (_cmd(),),
    roles=CLIN,
)
CatheterReplacedAck = make_message(
    0x6E,
    "CATHETER_REPLACED_ACK",
    "The catheter is recorded as empty.",
    (
        _cmd(),
        F("catheter_state", EnumField(U8, CatheterState), "the catheter's state now (EMPTY)"),
        F("catheter_volume_nl", U32, "its volume, nL"),
    ),
    answers=CatheterReplaced,
)
KeyUpdate = make_message(
    0x4F,
    "KEY_UPDATE",
    "Replace or revoke a person role's key (a lost handset), persisted by the pump. The new key travels "
    "wrapped: XOR with HMAC-SHA256(clinician key, 'thecal key update' | role u8 | this frame's counter u64 LE); "
    "the counter is never used twice, so neither is the pad. An empty wrapped_key revokes the role's key. The "
    "clinician's own key may be replaced, never revoked.",
    (
        _cmd(),
        F("role", EnumField(U8, Role), "whose key: CLINICIAN or PATIENT"),
        F("wrapped_key", Blob(32), "the new 32-byte key, wrapped; empty: revoke"),
    ),
    roles=CLIN,
)
KeyUpdateAck = make_message(
    0x6F,
    "KEY_UPDATE_ACK",
    "The role's key is replaced (frames under the old one are refused) or revoked (every frame under it is).",
    (_cmd(), F("role", EnumField(U8, Role), "whose key"), F("revoked", Bool(), "1: revoked, 0: replaced")),
    answers=KeyUpdate,
)
RefillBegin = make_message(
    0x48,
    "REFILL_BEGIN",
    "Enter the refill state: delivery pauses while the reservoir is emptied and refilled.",
    (_cmd(),),
    roles=CLIN,
)
RefillBeginAck = make_message(
    0x68,
    "REFILL_BEGIN_ACK",
    "Refill state entered.",
    (
        _cmd(),
        F(
            "expected_reservoir_nl",
            U32,
            "volume the controller expects to be withdrawn, nL; 0xFFFFFFFF = not known (the pump was never filled)",
        ),
    ),
    answers=RefillBegin,
)
RefillComplete = make_message(
    0x49,
    "REFILL_COMPLETE",
    "The reservoir was refilled. A changed concentration starts bridging: the old drug in the "
    "outlet and catheter is accounted at the old concentration until pushed out.",
    (
        _cmd(),
        F("withdrawn_nl", U32, "volume the clinician withdrew, nL"),
        F("added_nl", U32, "volume the clinician put in, nL"),
        F("drug", Text(DRUG_NAME_MAX), "drug now in the reservoir"),
        F("concentration_ng_per_ml", U32, "its concentration, ng/mL"),
    ),
    roles=CLIN,
)
RefillCompleteAck = make_message(
    0x69,
    "REFILL_COMPLETE_ACK",
    "Refill recorded.",
    (
        _cmd(),
        F("discrepancy_nl", I32, "withdrawn minus expected, nL; -2147483648 = none (the initial fill)"),
        F("reservoir_nl", U32, "new reservoir estimate, nL"),
    ),
    answers=RefillComplete,
)
AlarmAck = make_message(
    0x4A,
    "ALARM_ACK",
    "Acknowledge (silence) an alarm. It stays latched while its condition holds.",
    (F("alarm", EnumField(U8, AlarmId), "alarm to acknowledge"),),
    roles=CLIN,
)
AlarmAckAck = make_message(
    0x6A,
    "ALARM_ACK_ACK",
    "Alarm acknowledged.",
    (
        F("alarm", EnumField(U8, AlarmId), "alarm acknowledged"),
        F("still_active", Bool(), "1 if its condition still holds: silenced, it stays latched"),
        F("priority", EnumField(U8, Priority), "its priority"),
        F(
            "needs_reset",
            Bool(),
            "1 if it stays latched and, once its condition is gone, therapy stays halted until it is "
            "acknowledged again",
        ),
        F("state", EnumField(U8, TherapyState), "therapy state after the acknowledgement"),
    ),
    answers=AlarmAck,
)
LogRead = make_message(
    0x4B,
    "LOG_READ",
    "Read the event log, one page at a time, oldest first from from_seq.",
    (
        F("from_seq", U32, "first sequence number wanted (older ones that were overwritten are skipped)"),
        F("max_entries", U8, f"page size wanted, 1..{LOG_PAGE_MAX}"),
    ),
    roles=CLIN,
)
LogReadAck = make_message(
    0x6B,
    "LOG_READ_ACK",
    "One page of the event log.",
    (
        F("oldest_seq", U32, "oldest entry still held"),
        F("next_seq", U32, "sequence number the next entry will get; read on from the last entry's seq + 1"),
        F("entries", Array(LOG_PAGE_MAX, LogEntry), "entries, ascending seq"),
    ),
    answers=LogRead,
)
SetClock = make_message(
    0x4C,
    "SET_CLOCK",
    "Set the local wall clock (the basal schedule follows it).",
    (_cmd(), F("clock_s", I64, "local wall-clock time as seconds since 1970-01-01T00:00 local")),
    roles=CLIN,
)
SetClockAck = make_message(
    0x6C,
    "SET_CLOCK_ACK",
    "Clock set.",
    (_cmd(), F("clock_s", I64, "the clock now")),
    answers=SetClock,
)
ReadPrescription = make_message(0x4D, "READ_PRESCRIPTION", "Read the prescription in force.", (), roles=CLIN)
ReadPrescriptionAck = make_message(
    0x6D,
    "READ_PRESCRIPTION_ACK",
    "The prescription in force (present = 0: none programmed; the other fields are then zero).",
    (F("present", Bool(), "1 if a prescription is programmed"), *PRESCRIPTION_FIELDS),
    answers=ReadPrescription,
)

# ---------------------------------------------------------------- host link: events

AlarmRaised = make_message(
    0x90,
    "ALARM_RAISED",
    "An alarm was raised.",
    (_time(), F("alarm", EnumField(U8, AlarmId), "which"), F("priority", EnumField(U8, Priority), "its priority")),
)
AlarmCleared = make_message(
    0x91,
    "ALARM_CLEARED",
    "An alarm's condition no longer holds and it was cleared.",
    (_time(), F("alarm", EnumField(U8, AlarmId), "which")),
)
TherapyStateChanged = make_message(
    0x92,
    "THERAPY_STATE_CHANGED",
    "The therapy state machine changed state.",
    (
        _time(),
        F("old_state", EnumField(U8, TherapyState), "state before"),
        F("new_state", EnumField(U8, TherapyState), "state now"),
    ),
)
BolusStarted = make_message(
    0x93,
    "BOLUS_STARTED",
    "A bolus started.",
    (
        _time(),
        _cmd(),
        F(
            "kind",
            EnumField(U8, BolusKind),
            "patient, clinician, priming or timed (a timed bolus's command_id is the local minute it fell due)",
        ),
        F("dose_ng", U32, "dose to deliver, ng (0 for priming)"),
        F("volume_nl", U32, "volume to push, nL"),
        F("duration_s", U32, "planned duration, s"),
    ),
)
BolusFinished = make_message(
    0x94,
    "BOLUS_FINISHED",
    "A bolus ended: completed, stopped, or interrupted (abandoned, never resumed).",
    (
        _time(),
        _cmd(),
        F("kind", EnumField(U8, BolusKind), "patient, clinician, priming or timed"),
        F("outcome", EnumField(U8, BolusOutcome), "how it ended"),
        F("delivered_ng", U32, "dose actually delivered, counted from strokes made"),
        F("delivered_nl", U32, "volume actually pushed"),
    ),
)

# ---------------------------------------------------------------- host link: simulation control

SimAdvance = make_message(
    0xA0,
    "SIM_ADVANCE",
    "Lockstep: move simulated time on by duration_ms, event to event, waiting for the controller to be idle.",
    (F("duration_ms", U64, "how far to advance"),),
    roles=SIM,
)
SimAdvanceAck = make_message(
    0xB0, "SIM_ADVANCE_ACK", "Time advanced.", (F("time_ms", U64, "pump time now, ms"),), answers=SimAdvance
)
SimSetSpeed = make_message(
    0xA1,
    "SIM_SET_SPEED",
    "Switch between lockstep (0) and realtime at a speed factor.",
    (F("speed_milli", U32, "speed x 1000 (1000 = real time); 0 = lockstep"),),
    roles=SIM,
)
SimSetSpeedAck = make_message(
    0xB1, "SIM_SET_SPEED_ACK", "Speed set.", (F("speed_milli", U32, "speed now"),), answers=SimSetSpeed
)
SimInjectFault = make_message(
    0xA2,
    "SIM_INJECT_FAULT",
    "Inject a fault into the pump hardware or a link.",
    (
        F("fault", EnumField(U8, Fault), "which fault"),
        F("link", EnumField(U8, Link), "for link faults: which link, else NONE"),
        F("value", I64, "fault parameter (mV, ppm or ms, per fault)"),
        F("rate_ppm", U32, "for link faults: bytes affected per million"),
        F("seed", U32, "seed of the fault's random stream"),
    ),
    roles=SIM,
)
SimInjectFaultAck = make_message(
    0xB2,
    "SIM_INJECT_FAULT_ACK",
    "Fault injected.",
    (F("fault", EnumField(U8, Fault), "fault now active"),),
    answers=SimInjectFault,
)
SimClearFault = make_message(
    0xA3, "SIM_CLEAR_FAULT", "Clear an injected fault.", (F("fault", EnumField(U8, Fault), "which fault"),), roles=SIM
)
SimClearFaultAck = make_message(
    0xB3,
    "SIM_CLEAR_FAULT_ACK",
    "Fault cleared.",
    (F("fault", EnumField(U8, Fault), "fault cleared"),),
    answers=SimClearFault,
)
SimGroundTruth = make_message(
    0xA4,
    "SIM_GROUND_TRUTH",
    "Read what the pump hardware really did (the test oracle).",
    (F("tones_from", U32, "index of the first tone wanted from the tone history"),),
    roles=SIM,
)
SimGroundTruthAck = make_message(
    0xB4,
    "SIM_GROUND_TRUTH_ACK",
    "Ground truth measured by the emulator.",
    (
        F("time_ms", U64, "pump time, ms"),
        F("delivered_nl", U64, "volume pushed out of the catheter tip since manufacture, nL"),
        F("delivered_ng", U64, "drug pushed out of the catheter tip, ng"),
        F("reservoir_nl", U32, "physical reservoir volume, nL"),
        F("outlet_pressure_pa", I32, "outlet pressure above baseline, Pa"),
        F("motor", EnumField(U8, MotorState), "motor state"),
        F("strokes_total", U32, "strokes made since manufacture"),
        F("battery_mv", U16, "battery voltage, mV"),
        F("controller_alive", Bool(), "1 if the controller has kicked the watchdog within its window"),
        F("tones_total", U32, "tones sounded since manufacture"),
        F("tones", Array(TONE_PAGE_MAX, Tone), "tones from index tones_from on"),
    ),
    answers=SimGroundTruth,
)
SimPowerCycle = make_message(
    0xA5,
    "SIM_POWER_CYCLE",
    "Remove power from the controller for off_ms, then restore it: it must recover from its NVM alone.",
    (F("off_ms", U32, "how long power stays off"),),
    roles=SIM,
)
SimPowerCycleAck = make_message(
    0xB5,
    "SIM_POWER_CYCLE_ACK",
    "Power restored.",
    (F("boot_count", U32, "controller starts since manufacture"),),
    answers=SimPowerCycle,
)
SimRefill = make_message(
    0xA6,
    "SIM_REFILL",
    "The physical half of a refill: the needle withdraws and injects. into_pocket = 1 "
    "models a refill into the pocket instead of the reservoir.",
    (
        F("withdraw_nl", U32, "volume to withdraw (limited by what is there), nL"),
        F("add_nl", U32, "volume to inject, nL"),
        F("concentration_ng_per_ml", U32, "concentration of what is injected, ng/mL"),
        F("into_pocket", Bool(), "1: the injection misses the reservoir"),
    ),
    roles=SIM,
)
SimReplaceCatheter = make_message(
    0xA7,
    "SIM_REPLACE_CATHETER",
    "Revision surgery: the catheter is replaced with an empty one (no drug in it), of volume_nl "
    "(0 = the pump model's catheter volume). The firmware is not told: a clinician declares it (CATHETER_REPLACED).",
    (F("volume_nl", U32, "the new catheter's volume, nL; 0 = the pump model's"),),
    roles=SIM,
)
SimReplaceCatheterAck = make_message(
    0xB7,
    "SIM_REPLACE_CATHETER_ACK",
    "The catheter was replaced.",
    (F("volume_nl", U32, "the new catheter's volume, nL"),),
    answers=SimReplaceCatheter,
)
SimRefillAck = make_message(
    0xB6,
    "SIM_REFILL_ACK",
    "Physical refill done.",
    (
        F("withdrawn_nl", U32, "volume actually withdrawn, nL"),
        F("reservoir_nl", U32, "physical reservoir volume now, nL"),
    ),
    answers=SimRefill,
)

# ---------------------------------------------------------------- registry

REGISTRY: dict[int, type[Message]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, Message) and _cls is not Message:
        if _cls.TYPE in REGISTRY:
            raise RuntimeError(f"type 0x{_cls.TYPE:02X} declared twice")
        REGISTRY[_cls.TYPE] = _cls
REGISTRY = dict(sorted(REGISTRY.items()))
BY_NAME: dict[str, type[Message]] = {cls.NAME: cls for cls in REGISTRY.values()}
ALL_TYPES = frozenset(REGISTRY)
PUMP_LINK_TYPES = frozenset(t for t in REGISTRY if t < 0x40)
HOST_LINK_TYPES = frozenset(t for t in REGISTRY if t >= 0x40)
