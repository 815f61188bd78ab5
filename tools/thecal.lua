-- GENERATED FILE, do not edit: tools/dissector.py writes it from the protocol's own
-- definitions (protocol/messages.py, protocol/codes.py, protocol/framing.py and
-- emulator/capture.py). Regenerate with `make spec` or `python -m tools.dissector --write`.
--
-- Wireshark dissector for Thecal captures (`thecal emulator --capture FILE`): pcap files
-- of link type USER0 (DLT 147). Load it for one run:
--
--     wireshark -X lua_script:tools/thecal.lua capture.pcap
--     tshark -X lua_script:tools/thecal.lua -r capture.pcap -V
--
-- or for good by copying it into Wireshark's personal Lua plugins folder (Help > About
-- Wireshark > Folders > Personal Lua Plugins; on Linux ~/.local/lib/wireshark/plugins/).
-- While loaded it takes USER0 over from Wireshark's DLT_USER preferences.
--
-- Each record is a 16-byte pseudo-header (link, direction, low 32 bits of the simulated
-- time in ms, wall time in us or 0) and one frame body as it was on the wire before COBS,
-- so there is nothing to un-COBS: header, payload, auth trailer (when flags has AUTH),
-- CRC-32. The frame's timestamp is the simulated time. The CRC is checked; the auth tag
-- is shown, not verified (the dissector holds no keys). The `frame` of a HOST_RX or
-- HOST_TX relay is dissected as the host-link frame it carries.
--
-- Display filters: thecal.type == 0x42, thecal.nak.reason == 3, thecal.auth.key_id == 1,
-- thecal.link == 2, thecal.program.command_id == 7, thecal.bad_crc, thecal.malformed ...
-- Fields are thecal.<message>.<field> (thecal.<record>.<field> inside arrays).

local thecal = Proto("thecal", "Thecal pump protocol")

-- ---------------------------------------------------------------- sizes and codes

local PSEUDO_SIZE = 16
local PSEUDO_VERSION = 1
local PROTOCOL_VERSION = 2
local HEADER_SIZE = 7
local AUTH_FLAG = 1
local KNOWN_FLAGS = 1
local TRAILER_SIZE = 25
local TAG_SIZE = 16
local CRC_SIZE = 4
local MIN_BODY = 11
local MAX_PAYLOAD = 1070
local HOST_LINK = 1
local PUMP_LINK = 2
local WTAP_ENCAP_USER0 = 45

-- ---------------------------------------------------------------- value strings (protocol/codes.py)

local vs_Role = {
    [1] = "CLINICIAN",
    [2] = "PATIENT",
    [3] = "SIM",
    [4] = "PUMP",
}

local vs_NakReason = {
    [1] = "UNKNOWN_TYPE",
    [2] = "BAD_LENGTH",
    [3] = "OUT_OF_RANGE",
    [4] = "NOT_PERMITTED",
    [5] = "WRONG_STATE",
    [6] = "AUTH_FAILED",
    [7] = "REPLAYED",
    [8] = "BUSY",
    [9] = "UNSUPPORTED_VERSION",
}

local vs_TherapyState = {
    [0] = "BOOT",
    [1] = "STOPPED",
    [2] = "RUNNING",
    [3] = "REFILL",
    [4] = "HALTED",
}

local vs_AlarmId = {
    [1] = "LOW_RESERVOIR",
    [2] = "EMPTY_RESERVOIR",
    [3] = "MOTOR_STALL",
    [4] = "OCCLUSION",
    [5] = "DELIVERY_SHORTFALL",
    [6] = "BATTERY_ERI",
    [7] = "BATTERY_EOS",
    [8] = "MEMORY_ERROR",
    [9] = "REFILL_DISCREPANCY",
    [10] = "PUMP_LINK_LOST",
    [11] = "CLOCK_ERROR",
    [12] = "IMPOSSIBLE_WITHDRAWAL",
    [13] = "THERAPY_STOPPED",
}

local vs_Priority = {
    [1] = "LOW",
    [2] = "MEDIUM",
    [3] = "HIGH",
}

local vs_ResetCause = {
    [1] = "POWER_UP",
    [2] = "POWER_CYCLE",
    [3] = "WATCHDOG",
    [4] = "BROWNOUT",
    [5] = "SOFTWARE",
    [6] = "PROCESS_RESTART",
    [7] = "HARDWARE_REPLACED",
}

local vs_WakeReason = {
    [1] = "TIMER",
    [2] = "EVENT",
    [3] = "POLL",
}

local vs_MotorState = {
    [0] = "IDLE",
    [1] = "RUNNING",
    [2] = "STALLED",
}

local vs_RunOutcome = {
    [0] = "IN_PROGRESS",
    [1] = "COMPLETED",
    [2] = "STOPPED",
    [3] = "STALLED",
    [4] = "WATCHDOG",
    [5] = "POWER_LOSS",
    [6] = "EMPTY",
    [7] = "REFUSED",
}

local vs_BeepPattern = {
    [0] = "SILENT",
    [1] = "CONFIRM",
    [2] = "SINGLE_TONE",
    [3] = "TWO_TONE",
    [4] = "HARDWARE_ALARM",
}

local vs_CatheterState = {
    [0] = "UNKNOWN",
    [1] = "EMPTY",
    [2] = "PRIMED",
}

local vs_BolusKind = {
    [1] = "PATIENT",
    [2] = "CLINICIAN",
    [3] = "PRIMING",
    [4] = "TIMED",
}

local vs_BolusOutcome = {
    [1] = "COMPLETED",
    [2] = "STOPPED",
    [3] = "INTERRUPTED",
}

local vs_BolusDecision = {
    [0] = "GRANTED",
    [1] = "NOT_RUNNING",
    [2] = "NO_PATIENT_BOLUS",
    [3] = "BOLUS_IN_PROGRESS",
    [4] = "LOCKOUT",
    [5] = "COUNT_LIMIT",
    [6] = "DOSE_LIMIT",
    [7] = "RESERVOIR",
    [8] = "ALARM_ACTIVE",
}

local vs_Fault = {
    [1] = "OCCLUSION",
    [2] = "MOTOR_STALL",
    [3] = "BATTERY_MV",
    [4] = "STROKE_ERROR",
    [5] = "LINK_DROP",
    [6] = "LINK_CORRUPT",
    [7] = "LINK_DUPLICATE",
    [8] = "LINK_DELAY",
    [9] = "CATHETER_LEAK",
}

local vs_Link = {
    [0] = "NONE",
    [1] = "HOST",
    [2] = "PUMP",
    [3] = "BOTH",
}

local vs_LogEvent = {
    [1] = "BOOT",
    [2] = "PROGRAM_ACCEPTED",
    [3] = "PROGRAM_REFUSED",
    [4] = "THERAPY_STATE",
    [5] = "BOLUS_REQUEST",
    [6] = "BOLUS_STARTED",
    [7] = "BOLUS_FINISHED",
    [8] = "ALARM_RAISED",
    [9] = "ALARM_CLEARED",
    [10] = "ALARM_ACKNOWLEDGED",
    [11] = "REFILL_BEGIN",
    [12] = "REFILL_COMPLETE",
    [13] = "CLOCK_SET",
    [14] = "AUTH_FAILED",
    [15] = "REPLAY_REJECTED",
    [16] = "KEY_LOCKED_OUT",
    [17] = "NOT_PERMITTED",
    [18] = "NVM_ERROR",
    [19] = "WATCHDOG_RESET",
    [20] = "DELIVERY_SHORTFALL",
    [21] = "COMMAND_REFUSED",
    [22] = "DELIVERY_MILESTONE",
    [23] = "CLOCK_WENT_BACK",
    [24] = "NVM_OUTDATED",
    [25] = "BASAL_FORFEITED",
    [26] = "ODOMETER_WENT_BACK",
    [27] = "THERAPY_RECOVERED",
    [28] = "CATHETER_REPLACED",
    [29] = "CATHETER_STATE",
    [30] = "TIMED_BOLUS",
    [31] = "AUTH_FAILURES_SUMMARY",
    [32] = "REFUSALS_SUMMARY",
    [33] = "HARDWARE_REPLACED",
    [34] = "KEY_UPDATED",
}

local vs_msg_type = {
    [0x01] = "SLEEP_UNTIL",
    [0x02] = "TIME_REQUEST",
    [0x03] = "MOTOR_RUN",
    [0x04] = "MOTOR_STOP",
    [0x05] = "BEEP",
    [0x06] = "WATCHDOG_KICK",
    [0x07] = "HW_INFO_REQUEST",
    [0x08] = "SENSOR_REQUEST",
    [0x09] = "HOST_TX",
    [0x0A] = "CONTROLLER_START",
    [0x21] = "POWER_ON",
    [0x22] = "TIME",
    [0x23] = "RUN_PROGRESS",
    [0x24] = "SENSORS",
    [0x25] = "HW_INFO",
    [0x26] = "HOST_RX",
    [0x40] = "HELLO",
    [0x41] = "STATUS",
    [0x42] = "PROGRAM",
    [0x43] = "START",
    [0x44] = "STOP",
    [0x45] = "BOLUS_REQUEST",
    [0x46] = "CLINICIAN_BOLUS",
    [0x47] = "PRIME",
    [0x48] = "REFILL_BEGIN",
    [0x49] = "REFILL_COMPLETE",
    [0x4A] = "ALARM_ACK",
    [0x4B] = "LOG_READ",
    [0x4C] = "SET_CLOCK",
    [0x4D] = "READ_PRESCRIPTION",
    [0x4E] = "CATHETER_REPLACED",
    [0x4F] = "KEY_UPDATE",
    [0x60] = "HELLO_ACK",
    [0x61] = "STATUS_ACK",
    [0x62] = "PROGRAM_ACK",
    [0x63] = "START_ACK",
    [0x64] = "STOP_ACK",
    [0x65] = "BOLUS_REQUEST_ACK",
    [0x66] = "CLINICIAN_BOLUS_ACK",
    [0x67] = "PRIME_ACK",
    [0x68] = "REFILL_BEGIN_ACK",
    [0x69] = "REFILL_COMPLETE_ACK",
    [0x6A] = "ALARM_ACK_ACK",
    [0x6B] = "LOG_READ_ACK",
    [0x6C] = "SET_CLOCK_ACK",
    [0x6D] = "READ_PRESCRIPTION_ACK",
    [0x6E] = "CATHETER_REPLACED_ACK",
    [0x6F] = "KEY_UPDATE_ACK",
    [0x80] = "NAK",
    [0x90] = "ALARM_RAISED",
    [0x91] = "ALARM_CLEARED",
    [0x92] = "THERAPY_STATE_CHANGED",
    [0x93] = "BOLUS_STARTED",
    [0x94] = "BOLUS_FINISHED",
    [0xA0] = "SIM_ADVANCE",
    [0xA1] = "SIM_SET_SPEED",
    [0xA2] = "SIM_INJECT_FAULT",
    [0xA3] = "SIM_CLEAR_FAULT",
    [0xA4] = "SIM_GROUND_TRUTH",
    [0xA5] = "SIM_POWER_CYCLE",
    [0xA6] = "SIM_REFILL",
    [0xA7] = "SIM_REPLACE_CATHETER",
    [0xB0] = "SIM_ADVANCE_ACK",
    [0xB1] = "SIM_SET_SPEED_ACK",
    [0xB2] = "SIM_INJECT_FAULT_ACK",
    [0xB3] = "SIM_CLEAR_FAULT_ACK",
    [0xB4] = "SIM_GROUND_TRUTH_ACK",
    [0xB5] = "SIM_POWER_CYCLE_ACK",
    [0xB6] = "SIM_REFILL_ACK",
    [0xB7] = "SIM_REPLACE_CATHETER_ACK",
}

local vs_link = {
    [1] = "HOST",
    [2] = "PUMP",
}

local vs_direction = {
    [0] = "HOST_TO_PUMP",
    [1] = "PUMP_TO_HOST",
    [2] = "CONTROLLER_TO_PUMP",
    [3] = "PUMP_TO_CONTROLLER",
}

local direction_ends = {
    [0] = { "host", "pump" },
    [1] = { "pump", "host" },
    [2] = { "controller", "pump" },
    [3] = { "pump", "controller" },
}

-- ---------------------------------------------------------------- fields of every record
local f = {
    pseudo = ProtoField.none("thecal.pseudo", "Pseudo-header", "written by the emulator before each frame body"),
    pseudo_version = ProtoField.uint8("thecal.pseudo.version", "Pseudo-header version", base.DEC),
    link = ProtoField.uint8("thecal.link", "Link", base.DEC, vs_link),
    direction = ProtoField.uint8("thecal.direction", "Direction", base.DEC, vs_direction),
    pseudo_flags = ProtoField.uint8("thecal.pseudo.flags", "Pseudo-header flags", base.HEX),
    sim_time_ms = ProtoField.uint32("thecal.sim_time_ms", "Simulated time (ms, low 32 bits)", base.DEC, nil, nil,
        "the full simulated time is the frame's timestamp"),
    wall_time_us = ProtoField.uint64("thecal.wall_time_us", "Wall time (us since 1970)", base.DEC, nil, nil,
        "0 when the capture was made with --no-capture-wall-time"),
    wall_time = ProtoField.absolute_time("thecal.wall_time", "Wall time", base.UTC),
    frame = ProtoField.none("thecal.frame", "Frame"),
    relayed = ProtoField.none("thecal.relayed", "Relayed host-link frame"),
    header = ProtoField.none("thecal.header", "Header"),
    version = ProtoField.uint8("thecal.version", "version", base.DEC),
    type = ProtoField.uint8("thecal.type", "msg_type", base.HEX, vs_msg_type),
    flags = ProtoField.uint8("thecal.flags", "flags", base.HEX),
    flag_auth = ProtoField.bool("thecal.flags.auth", "AUTH", 8, nil, AUTH_FLAG, "an auth trailer follows the payload"),
    seq = ProtoField.uint16("thecal.seq", "seq", base.DEC),
    payload_len = ProtoField.uint16("thecal.payload_len", "payload_len", base.DEC),
    payload = ProtoField.none("thecal.payload", "Payload"),
    payload_bytes = ProtoField.bytes("thecal.payload.bytes", "Payload bytes"),
    length8 = ProtoField.uint8("thecal.length8", "Length", base.DEC),
    length16 = ProtoField.uint16("thecal.length16", "Length", base.DEC),
    count = ProtoField.uint8("thecal.count", "Count", base.DEC),
    auth = ProtoField.none("thecal.auth", "Auth trailer"),
    key_id = ProtoField.uint8("thecal.auth.key_id", "key_id", base.DEC, vs_Role, nil, "the signer's role"),
    counter = ProtoField.uint64("thecal.auth.counter", "counter", base.DEC),
    tag = ProtoField.bytes("thecal.auth.tag", "tag", nil, "truncated HMAC-SHA256, not verified here"),
    crc = ProtoField.uint32("thecal.crc", "crc32", base.HEX),
}
local base_fields = {
    f.pseudo, f.pseudo_version, f.link, f.direction, f.pseudo_flags, f.sim_time_ms, f.wall_time_us, f.wall_time,
    f.frame, f.relayed, f.header, f.version, f.type, f.flags, f.flag_auth, f.seq, f.payload_len, f.payload,
    f.payload_bytes, f.length8, f.length16, f.count, f.auth, f.key_id, f.counter, f.tag, f.crc,
}
local ex = {
    bad_crc = ProtoExpert.new("thecal.bad_crc", "CRC-32 does not match", expert.group.CHECKSUM, expert.severity.ERROR),
    malformed = ProtoExpert.new("thecal.malformed", "Malformed", expert.group.MALFORMED, expert.severity.ERROR),
    bad_value = ProtoExpert.new("thecal.bad_value", "Value not allowed", expert.group.MALFORMED,
        expert.severity.ERROR),
    unknown_type = ProtoExpert.new("thecal.unknown_type", "Unknown message type", expert.group.UNDECODED,
        expert.severity.WARN),
    wrong_link = ProtoExpert.new("thecal.wrong_link", "Message type of the other link", expert.group.PROTOCOL,
        expert.severity.WARN),
}
thecal.experts = { ex.bad_crc, ex.malformed, ex.bad_value, ex.unknown_type, ex.wrong_link }

-- ---------------------------------------------------------------- records (protocol/messages.py)

local rec_BasalStep = {
    name = "BasalStep", size = 8,
    field = ProtoField.none("thecal.basal_step", "BasalStep", "One step of the daily basal schedule."),
    fields = {
        { name = "start_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.basal_step.start_s", "start_s", base.DEC, nil, nil, "time of day the step starts, s after local midnight (0..86399)") },
        { name = "rate_ng_per_day", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.basal_step.rate_ng_per_day", "rate_ng_per_day", base.DEC, nil, nil, "basal rate from then on, ng of drug per day") },
    },
}

local rec_TimedBolus = {
    name = "TimedBolus", size = 12,
    field = ProtoField.none("thecal.timed_bolus", "TimedBolus", "One timed bolus: the pump gives it every day at its time."),
    fields = {
        { name = "start_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.timed_bolus.start_s", "start_s", base.DEC, nil, nil, "time of day it starts, s after local midnight (0..86399)") },
        { name = "dose_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.timed_bolus.dose_ng", "dose_ng", base.DEC, nil, nil, "its dose, ng") },
        { name = "duration_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.timed_bolus.duration_s", "duration_s", base.DEC, nil, nil, "time over which it is delivered, s") },
    },
}

local rec_AlarmEntry = {
    name = "AlarmEntry", size = 6,
    field = ProtoField.none("thecal.alarm_entry", "AlarmEntry", "One active (latched) alarm."),
    fields = {
        { name = "alarm", kind = "enum", size = 1, vs = vs_AlarmId, enum = "AlarmId",
          field = ProtoField.uint8("thecal.alarm_entry.alarm", "alarm", base.DEC, vs_AlarmId, nil, "which alarm") },
        { name = "priority", kind = "enum", size = 1, vs = vs_Priority, enum = "Priority",
          field = ProtoField.uint8("thecal.alarm_entry.priority", "priority", base.DEC, vs_Priority, nil, "IEC 60601-1-8 priority") },
        { name = "acknowledged", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.alarm_entry.acknowledged", "acknowledged", base.NONE, nil, nil, "1 once acknowledged (silenced); it stays listed while its condition holds") },
        { name = "condition_present", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.alarm_entry.condition_present", "condition_present", base.NONE, nil, nil, "1 while its condition holds; 0 once it is gone (latched until acknowledged)") },
        { name = "silenced", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.alarm_entry.silenced", "silenced", base.NONE, nil, nil, "1 while an acknowledgement keeps its tone silent") },
        { name = "needs_reset", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.alarm_entry.needs_reset", "needs_reset", base.NONE, nil, nil, "1 if, once its condition is gone, therapy stays halted until a clinician acknowledges it (recovery policy 'hold'); 0 if it never halts or therapy resumes by itself") },
    },
}

local rec_LogEntry = {
    name = "LogEntry", size = 22,
    field = ProtoField.none("thecal.log_entry", "LogEntry", "One event-log entry."),
    fields = {
        { name = "seq", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.log_entry.seq", "seq", base.DEC, nil, nil, "log sequence number: strictly increasing, never reused across resets") },
        { name = "time_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.log_entry.time_s", "time_s", base.DEC, nil, nil, "pump time in s") },
        { name = "event", kind = "enum", size = 2, vs = vs_LogEvent, enum = "LogEvent",
          field = ProtoField.uint16("thecal.log_entry.event", "event", base.DEC, vs_LogEvent, nil, "what happened") },
        { name = "arg0", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.log_entry.arg0", "arg0", base.DEC, nil, nil, "first argument (meaning per event: see LogEvent; 0 when unused)") },
        { name = "arg1", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.log_entry.arg1", "arg1", base.DEC, nil, nil, "second argument (0 when unused)") },
    },
}

local rec_Tone = {
    name = "Tone", size = 9,
    field = ProtoField.none("thecal.tone", "Tone", "One tone the beeper actually sounded (ground truth)."),
    fields = {
        { name = "time_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.tone.time_ms", "time_ms", base.DEC, nil, nil, "pump time in ms when the pattern sounded") },
        { name = "pattern", kind = "enum", size = 1, vs = vs_BeepPattern, enum = "BeepPattern",
          field = ProtoField.uint8("thecal.tone.pattern", "pattern", base.DEC, vs_BeepPattern, nil, "what sounded") },
    },
}

local record_list = { rec_BasalStep, rec_TimedBolus, rec_AlarmEntry, rec_LogEntry, rec_Tone }

-- ---------------------------------------------------------------- messages (protocol/messages.py)

local messages = {}

local message_codes = {}

messages[0x01] = {
    name = "SLEEP_UNTIL", link = PUMP_LINK,
    fields = {
        { name = "wake_at_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.sleep_until.wake_at_ms", "wake_at_ms", base.DEC, nil, nil, "pump time to wake at; 0xFFFFFFFFFFFFFFFF = no timer, wake on events only") },
    },
}
table.insert(message_codes, 0x01)

messages[0x02] = {
    name = "TIME_REQUEST", link = PUMP_LINK,
    fields = {},
}
table.insert(message_codes, 0x02)

messages[0x03] = {
    name = "MOTOR_RUN", link = PUMP_LINK,
    fields = {
        { name = "run_id", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.motor_run.run_id", "run_id", base.DEC, nil, nil, "controller-chosen id echoed in RUN_PROGRESS") },
        { name = "strokes", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.motor_run.strokes", "strokes", base.DEC, nil, nil, "strokes to make, 1..max_strokes_per_run") },
        { name = "interval_ms", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.motor_run.interval_ms", "interval_ms", base.DEC, nil, nil, "time between strokes, >= min_stroke_interval_ms") },
    },
}
table.insert(message_codes, 0x03)

messages[0x04] = {
    name = "MOTOR_STOP", link = PUMP_LINK,
    fields = {
        { name = "run_id", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.motor_stop.run_id", "run_id", base.DEC, nil, nil, "run to stop (0xFFFF = whatever is running)") },
    },
}
table.insert(message_codes, 0x04)

messages[0x05] = {
    name = "BEEP", link = PUMP_LINK,
    fields = {
        { name = "pattern", kind = "enum", size = 1, vs = vs_BeepPattern, enum = "BeepPattern",
          field = ProtoField.uint8("thecal.beep.pattern", "pattern", base.DEC, vs_BeepPattern, nil, "what to sound; SILENT stops a repetition") },
        { name = "repeat", kind = "u", size = 1,
          field = ProtoField.uint8("thecal.beep.repeat", "repeat", base.DEC, nil, nil, "times to sound it (>= 1)") },
        { name = "repeat_interval_ms", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.beep.repeat_interval_ms", "repeat_interval_ms", base.DEC, nil, nil, "gap between repetitions") },
    },
}
table.insert(message_codes, 0x05)

messages[0x06] = {
    name = "WATCHDOG_KICK", link = PUMP_LINK,
    fields = {},
}
table.insert(message_codes, 0x06)

messages[0x07] = {
    name = "HW_INFO_REQUEST", link = PUMP_LINK,
    fields = {},
}
table.insert(message_codes, 0x07)

messages[0x08] = {
    name = "SENSOR_REQUEST", link = PUMP_LINK,
    fields = {},
}
table.insert(message_codes, 0x08)

messages[0x09] = {
    name = "HOST_TX", link = PUMP_LINK,
    fields = {
        { name = "frame", kind = "blob", max = 1060, relay = true,
          field = ProtoField.bytes("thecal.host_tx.frame", "frame", nil, "host-link frame body, opaque to the pump") },
    },
}
table.insert(message_codes, 0x09)

messages[0x0A] = {
    name = "CONTROLLER_START", link = PUMP_LINK,
    fields = {},
}
table.insert(message_codes, 0x0A)

messages[0x21] = {
    name = "POWER_ON", link = PUMP_LINK,
    fields = {
        { name = "reset_cause", kind = "enum", size = 1, vs = vs_ResetCause, enum = "ResetCause",
          field = ProtoField.uint8("thecal.power_on.reset_cause", "reset_cause", base.DEC, vs_ResetCause, nil, "why the controller was (re)started") },
        { name = "time_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.power_on.time_ms", "time_ms", base.DEC, nil, nil, "pump time in ms") },
        { name = "rtc_s", kind = "i", size = 8,
          field = ProtoField.int64("thecal.power_on.rtc_s", "rtc_s", base.DEC, nil, nil, "the pump's real-time clock at time_ms: local time as seconds since 1970-01-01T00:00") },
        { name = "boot_count", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.power_on.boot_count", "boot_count", base.DEC, nil, nil, "number of controller starts since manufacture, this one included") },
        { name = "odometer_strokes", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.power_on.odometer_strokes", "odometer_strokes", base.DEC, nil, nil, "strokes made since manufacture: the controller settles its count and doubts its memory with it") },
    },
}
table.insert(message_codes, 0x21)

messages[0x22] = {
    name = "TIME", link = PUMP_LINK,
    fields = {
        { name = "time_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.time.time_ms", "time_ms", base.DEC, nil, nil, "pump time in ms") },
        { name = "reason", kind = "enum", size = 1, vs = vs_WakeReason, enum = "WakeReason",
          field = ProtoField.uint8("thecal.time.reason", "reason", base.DEC, vs_WakeReason, nil, "why this was sent") },
    },
}
table.insert(message_codes, 0x22)

messages[0x23] = {
    name = "RUN_PROGRESS", link = PUMP_LINK,
    fields = {
        { name = "run_id", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.run_progress.run_id", "run_id", base.DEC, nil, nil, "the run's id from MOTOR_RUN") },
        { name = "strokes_made", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.run_progress.strokes_made", "strokes_made", base.DEC, nil, nil, "strokes completed so far in this run") },
        { name = "outcome", kind = "enum", size = 1, vs = vs_RunOutcome, enum = "RunOutcome",
          field = ProtoField.uint8("thecal.run_progress.outcome", "outcome", base.DEC, vs_RunOutcome, nil, "IN_PROGRESS, or how the run ended") },
        { name = "odometer_strokes", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.run_progress.odometer_strokes", "odometer_strokes", base.DEC, nil, nil, "strokes made since manufacture") },
        { name = "time_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.run_progress.time_ms", "time_ms", base.DEC, nil, nil, "pump time in ms") },
    },
}
table.insert(message_codes, 0x23)

messages[0x24] = {
    name = "SENSORS", link = PUMP_LINK,
    fields = {
        { name = "time_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.sensors.time_ms", "time_ms", base.DEC, nil, nil, "pump time in ms") },
        { name = "outlet_pressure_pa", kind = "i", size = 4,
          field = ProtoField.int32("thecal.sensors.outlet_pressure_pa", "outlet_pressure_pa", base.DEC, nil, nil, "outlet pressure above baseline, Pa") },
        { name = "motor_stalled", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.sensors.motor_stalled", "motor_stalled", base.NONE, nil, nil, "1 when the motor is stalled") },
        { name = "battery_mv", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.sensors.battery_mv", "battery_mv", base.DEC, nil, nil, "battery voltage, mV") },
        { name = "odometer_strokes", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sensors.odometer_strokes", "odometer_strokes", base.DEC, nil, nil, "strokes made since manufacture (a restarted controller settles its count with it)") },
    },
}
table.insert(message_codes, 0x24)

messages[0x25] = {
    name = "HW_INFO", link = PUMP_LINK,
    fields = {
        { name = "serial", kind = "text", max = 16,
          field = ProtoField.string("thecal.hw_info.serial", "serial", nil, "pump serial number") },
        { name = "reservoir_capacity_ul", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.hw_info.reservoir_capacity_ul", "reservoir_capacity_ul", base.DEC, nil, nil, "reservoir capacity, uL") },
        { name = "stroke_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.hw_info.stroke_nl", "stroke_nl", base.DEC, nil, nil, "nominal volume of one stroke, nL") },
        { name = "min_stroke_interval_ms", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.hw_info.min_stroke_interval_ms", "min_stroke_interval_ms", base.DEC, nil, nil, "fastest the mechanism may stroke") },
        { name = "min_flow_nl_per_day", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.hw_info.min_flow_nl_per_day", "min_flow_nl_per_day", base.DEC, nil, nil, "slowest basal flow the pump delivers accurately, nL/day") },
        { name = "max_strokes_per_run", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.hw_info.max_strokes_per_run", "max_strokes_per_run", base.DEC, nil, nil, "largest run MOTOR_RUN may ask for") },
        { name = "watchdog_window_ms", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.hw_info.watchdog_window_ms", "watchdog_window_ms", base.DEC, nil, nil, "hardware watchdog window") },
        { name = "battery_eri_mv", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.hw_info.battery_eri_mv", "battery_eri_mv", base.DEC, nil, nil, "elective replacement indicator threshold") },
        { name = "battery_eos_mv", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.hw_info.battery_eos_mv", "battery_eos_mv", base.DEC, nil, nil, "end-of-service threshold") },
        { name = "odometer_strokes", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.hw_info.odometer_strokes", "odometer_strokes", base.DEC, nil, nil, "strokes made since manufacture: a controller settles its count at boot") },
    },
}
table.insert(message_codes, 0x25)

messages[0x26] = {
    name = "HOST_RX", link = PUMP_LINK,
    fields = {
        { name = "time_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.host_rx.time_ms", "time_ms", base.DEC, nil, nil, "pump time in ms when the frame arrived (the controller keeps no clock of its own)") },
        { name = "frame", kind = "blob", max = 1060, relay = true,
          field = ProtoField.bytes("thecal.host_rx.frame", "frame", nil, "host-link frame body, opaque to the pump") },
    },
}
table.insert(message_codes, 0x26)

messages[0x40] = {
    name = "HELLO", link = HOST_LINK,
    fields = {},
}
table.insert(message_codes, 0x40)

messages[0x41] = {
    name = "STATUS", link = HOST_LINK,
    fields = {},
}
table.insert(message_codes, 0x41)

messages[0x42] = {
    name = "PROGRAM", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "drug", kind = "text", max = 24,
          field = ProtoField.string("thecal.program.drug", "drug", nil, "drug name as in the drug library, e.g. 'morphine'") },
        { name = "concentration_ng_per_ml", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program.concentration_ng_per_ml", "concentration_ng_per_ml", base.DEC, nil, nil, "drug concentration in the reservoir, ng per mL") },
        { name = "basal", kind = "array", max = 24, record = rec_BasalStep,
          field = ProtoField.none("thecal.program.basal", "basal", "basal schedule, 1-24 steps sorted by start_s, first at 0") },
        { name = "bolus_dose_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program.bolus_dose_ng", "bolus_dose_ng", base.DEC, nil, nil, "patient bolus dose in ng; 0 = no patient bolus") },
        { name = "bolus_duration_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program.bolus_duration_s", "bolus_duration_s", base.DEC, nil, nil, "time over which a patient bolus is delivered") },
        { name = "bolus_lockout_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program.bolus_lockout_s", "bolus_lockout_s", base.DEC, nil, nil, "minimum time from the start of one patient bolus to the next") },
        { name = "bolus_max_per_24h", kind = "u", size = 1,
          field = ProtoField.uint8("thecal.program.bolus_max_per_24h", "bolus_max_per_24h", base.DEC, nil, nil, "patient boluses allowed in any rolling 24 h") },
        { name = "max_dose_24h_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program.max_dose_24h_ng", "max_dose_24h_ng", base.DEC, nil, nil, "hard limit on all drug (basal and every bolus) in any rolling 24 h") },
        { name = "low_reservoir_ul", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program.low_reservoir_ul", "low_reservoir_ul", base.DEC, nil, nil, "low-reservoir alarm threshold, uL") },
        { name = "catheter_volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program.catheter_volume_nl", "catheter_volume_nl", base.DEC, nil, nil, "catheter volume from the pump outlet to its tip as the clinician entered it (catheter model and trimmed length), nL; 0 = not entered") },
        { name = "timed_bolus", kind = "array", max = 8, record = rec_TimedBolus,
          field = ProtoField.none("thecal.program.timed_bolus", "timed_bolus", "daily timed boluses, 0-8 sorted by start_s, none overlapping another (SR-053)") },
    },
}
table.insert(message_codes, 0x42)

messages[0x43] = {
    name = "START", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.start.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
    },
}
table.insert(message_codes, 0x43)

messages[0x44] = {
    name = "STOP", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.stop.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
    },
}
table.insert(message_codes, 0x44)

messages[0x45] = {
    name = "BOLUS_REQUEST", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_request.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
    },
}
table.insert(message_codes, 0x45)

messages[0x46] = {
    name = "CLINICIAN_BOLUS", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.clinician_bolus.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "dose_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.clinician_bolus.dose_ng", "dose_ng", base.DEC, nil, nil, "bolus dose, ng") },
        { name = "duration_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.clinician_bolus.duration_s", "duration_s", base.DEC, nil, nil, "delivery duration, s") },
    },
}
table.insert(message_codes, 0x46)

messages[0x47] = {
    name = "PRIME", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.prime.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.prime.volume_nl", "volume_nl", base.DEC, nil, nil, "volume to push, nL") },
    },
}
table.insert(message_codes, 0x47)

messages[0x48] = {
    name = "REFILL_BEGIN", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_begin.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
    },
}
table.insert(message_codes, 0x48)

messages[0x49] = {
    name = "REFILL_COMPLETE", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_complete.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "withdrawn_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_complete.withdrawn_nl", "withdrawn_nl", base.DEC, nil, nil, "volume the clinician withdrew, nL") },
        { name = "added_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_complete.added_nl", "added_nl", base.DEC, nil, nil, "volume the clinician put in, nL") },
        { name = "drug", kind = "text", max = 24,
          field = ProtoField.string("thecal.refill_complete.drug", "drug", nil, "drug now in the reservoir") },
        { name = "concentration_ng_per_ml", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_complete.concentration_ng_per_ml", "concentration_ng_per_ml", base.DEC, nil, nil, "its concentration, ng/mL") },
    },
}
table.insert(message_codes, 0x49)

messages[0x4A] = {
    name = "ALARM_ACK", link = HOST_LINK,
    fields = {
        { name = "alarm", kind = "enum", size = 1, vs = vs_AlarmId, enum = "AlarmId",
          field = ProtoField.uint8("thecal.alarm_ack.alarm", "alarm", base.DEC, vs_AlarmId, nil, "alarm to acknowledge") },
    },
}
table.insert(message_codes, 0x4A)

messages[0x4B] = {
    name = "LOG_READ", link = HOST_LINK,
    fields = {
        { name = "from_seq", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.log_read.from_seq", "from_seq", base.DEC, nil, nil, "first sequence number wanted (older ones that were overwritten are skipped)") },
        { name = "max_entries", kind = "u", size = 1,
          field = ProtoField.uint8("thecal.log_read.max_entries", "max_entries", base.DEC, nil, nil, "page size wanted, 1..32") },
    },
}
table.insert(message_codes, 0x4B)

messages[0x4C] = {
    name = "SET_CLOCK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.set_clock.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "clock_s", kind = "i", size = 8,
          field = ProtoField.int64("thecal.set_clock.clock_s", "clock_s", base.DEC, nil, nil, "local wall-clock time as seconds since 1970-01-01T00:00 local") },
    },
}
table.insert(message_codes, 0x4C)

messages[0x4D] = {
    name = "READ_PRESCRIPTION", link = HOST_LINK,
    fields = {},
}
table.insert(message_codes, 0x4D)

messages[0x4E] = {
    name = "CATHETER_REPLACED", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.catheter_replaced.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
    },
}
table.insert(message_codes, 0x4E)

messages[0x4F] = {
    name = "KEY_UPDATE", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.key_update.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "role", kind = "enum", size = 1, vs = vs_Role, enum = "Role",
          field = ProtoField.uint8("thecal.key_update.role", "role", base.DEC, vs_Role, nil, "whose key: CLINICIAN or PATIENT") },
        { name = "wrapped_key", kind = "blob", max = 32, relay = false,
          field = ProtoField.bytes("thecal.key_update.wrapped_key", "wrapped_key", nil, "the new 32-byte key, wrapped; empty: revoke") },
    },
}
table.insert(message_codes, 0x4F)

messages[0x60] = {
    name = "HELLO_ACK", link = HOST_LINK,
    fields = {
        { name = "serial", kind = "text", max = 16,
          field = ProtoField.string("thecal.hello_ack.serial", "serial", nil, "pump serial number") },
        { name = "firmware_version", kind = "text", max = 16,
          field = ProtoField.string("thecal.hello_ack.firmware_version", "firmware_version", nil, "controller firmware version") },
        { name = "protocol_version", kind = "u", size = 1,
          field = ProtoField.uint8("thecal.hello_ack.protocol_version", "protocol_version", base.DEC, nil, nil, "protocol version spoken (1)") },
        { name = "reservoir_capacity_ul", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.hello_ack.reservoir_capacity_ul", "reservoir_capacity_ul", base.DEC, nil, nil, "reservoir capacity, uL") },
        { name = "stroke_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.hello_ack.stroke_nl", "stroke_nl", base.DEC, nil, nil, "nominal stroke volume, nL") },
    },
}
table.insert(message_codes, 0x60)

messages[0x61] = {
    name = "STATUS_ACK", link = HOST_LINK,
    fields = {
        { name = "state", kind = "enum", size = 1, vs = vs_TherapyState, enum = "TherapyState",
          field = ProtoField.uint8("thecal.status_ack.state", "state", base.DEC, vs_TherapyState, nil, "therapy state") },
        { name = "bolus_active", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.status_ack.bolus_active", "bolus_active", base.NONE, nil, nil, "1 while a bolus is being delivered") },
        { name = "time_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.status_ack.time_s", "time_s", base.DEC, nil, nil, "pump time in s") },
        { name = "clock_s", kind = "i", size = 8,
          field = ProtoField.int64("thecal.status_ack.clock_s", "clock_s", base.DEC, nil, nil, "local wall-clock time as seconds since 1970-01-01T00:00 local") },
        { name = "drug", kind = "text", max = 24,
          field = ProtoField.string("thecal.status_ack.drug", "drug", nil, "drug programmed ('' if none)") },
        { name = "concentration_ng_per_ml", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.status_ack.concentration_ng_per_ml", "concentration_ng_per_ml", base.DEC, nil, nil, "concentration programmed, ng/mL") },
        { name = "basal_rate_ng_per_day", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.status_ack.basal_rate_ng_per_day", "basal_rate_ng_per_day", base.DEC, nil, nil, "basal rate now in force, ng/day") },
        { name = "reservoir_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.status_ack.reservoir_nl", "reservoir_nl", base.DEC, nil, nil, "controller's estimate of the reservoir volume, nL; 0xFFFFFFFF = not known (no fill recorded yet)") },
        { name = "low_reservoir_at_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.status_ack.low_reservoir_at_s", "low_reservoir_at_s", base.DEC, nil, nil, "pump time the low-reservoir alarm is expected at basal and timed boluses; 0xFFFFFFFFFFFFFFFF = none") },
        { name = "low_reservoir_worst_at_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.status_ack.low_reservoir_worst_at_s", "low_reservoir_worst_at_s", base.DEC, nil, nil, "the same if the patient also takes every patient bolus allowed (the refill date); 0xFFFFFFFFFFFFFFFF = none") },
        { name = "lockout_remaining_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.status_ack.lockout_remaining_s", "lockout_remaining_s", base.DEC, nil, nil, "seconds until a patient bolus may be granted by lockout") },
        { name = "boluses_24h", kind = "u", size = 1,
          field = ProtoField.uint8("thecal.status_ack.boluses_24h", "boluses_24h", base.DEC, nil, nil, "patient boluses in the last rolling 24 h") },
        { name = "max_boluses_24h", kind = "u", size = 1,
          field = ProtoField.uint8("thecal.status_ack.max_boluses_24h", "max_boluses_24h", base.DEC, nil, nil, "patient boluses allowed per rolling 24 h") },
        { name = "dose_24h_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.status_ack.dose_24h_ng", "dose_24h_ng", base.DEC, nil, nil, "drug delivered in the last rolling 24 h, all sources, ng") },
        { name = "max_dose_24h_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.status_ack.max_dose_24h_ng", "max_dose_24h_ng", base.DEC, nil, nil, "hard limit per rolling 24 h, ng") },
        { name = "alarms", kind = "array", max = 16, record = rec_AlarmEntry,
          field = ProtoField.none("thecal.status_ack.alarms", "alarms", "latched alarms") },
        { name = "battery_mv", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.status_ack.battery_mv", "battery_mv", base.DEC, nil, nil, "battery voltage, mV") },
        { name = "last_command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.status_ack.last_command_id", "last_command_id", base.DEC, nil, nil, "command_id of the last command accepted that carried one (0 = none)") },
        { name = "catheter_state", kind = "enum", size = 1, vs = vs_CatheterState, enum = "CatheterState",
          field = ProtoField.uint8("thecal.status_ack.catheter_state", "catheter_state", base.DEC, vs_CatheterState, nil, "what the firmware knows of the catheter") },
        { name = "catheter_volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.status_ack.catheter_volume_nl", "catheter_volume_nl", base.DEC, nil, nil, "the catheter's volume as programmed, nL; 0 = not entered") },
    },
}
table.insert(message_codes, 0x61)

messages[0x62] = {
    name = "PROGRAM_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.program_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
    },
}
table.insert(message_codes, 0x62)

messages[0x63] = {
    name = "START_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.start_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "state", kind = "enum", size = 1, vs = vs_TherapyState, enum = "TherapyState",
          field = ProtoField.uint8("thecal.start_ack.state", "state", base.DEC, vs_TherapyState, nil, "state after the command") },
    },
}
table.insert(message_codes, 0x63)

messages[0x64] = {
    name = "STOP_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.stop_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "state", kind = "enum", size = 1, vs = vs_TherapyState, enum = "TherapyState",
          field = ProtoField.uint8("thecal.stop_ack.state", "state", base.DEC, vs_TherapyState, nil, "state after the command") },
    },
}
table.insert(message_codes, 0x64)

messages[0x65] = {
    name = "BOLUS_REQUEST_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_request_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "decision", kind = "enum", size = 1, vs = vs_BolusDecision, enum = "BolusDecision",
          field = ProtoField.uint8("thecal.bolus_request_ack.decision", "decision", base.DEC, vs_BolusDecision, nil, "GRANTED or the reason for denial") },
        { name = "dose_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_request_ack.dose_ng", "dose_ng", base.DEC, nil, nil, "dose granted (0 if denied)") },
        { name = "duration_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_request_ack.duration_s", "duration_s", base.DEC, nil, nil, "delivery duration of the granted bolus") },
        { name = "next_available_at_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.bolus_request_ack.next_available_at_s", "next_available_at_s", base.DEC, nil, nil, "pump time from which a bolus may be granted; 0xFFFFFFFFFFFFFFFF = not foreseeable") },
    },
}
table.insert(message_codes, 0x65)

messages[0x66] = {
    name = "CLINICIAN_BOLUS_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.clinician_bolus_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.clinician_bolus_ack.volume_nl", "volume_nl", base.DEC, nil, nil, "volume the bolus will push, nL") },
    },
}
table.insert(message_codes, 0x66)

messages[0x67] = {
    name = "PRIME_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.prime_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
    },
}
table.insert(message_codes, 0x67)

messages[0x68] = {
    name = "REFILL_BEGIN_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_begin_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "expected_reservoir_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_begin_ack.expected_reservoir_nl", "expected_reservoir_nl", base.DEC, nil, nil, "volume the controller expects to be withdrawn, nL; 0xFFFFFFFF = not known (the pump was never filled)") },
    },
}
table.insert(message_codes, 0x68)

messages[0x69] = {
    name = "REFILL_COMPLETE_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_complete_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "discrepancy_nl", kind = "i", size = 4,
          field = ProtoField.int32("thecal.refill_complete_ack.discrepancy_nl", "discrepancy_nl", base.DEC, nil, nil, "withdrawn minus expected, nL; -2147483648 = none (the initial fill)") },
        { name = "reservoir_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.refill_complete_ack.reservoir_nl", "reservoir_nl", base.DEC, nil, nil, "new reservoir estimate, nL") },
    },
}
table.insert(message_codes, 0x69)

messages[0x6A] = {
    name = "ALARM_ACK_ACK", link = HOST_LINK,
    fields = {
        { name = "alarm", kind = "enum", size = 1, vs = vs_AlarmId, enum = "AlarmId",
          field = ProtoField.uint8("thecal.alarm_ack_ack.alarm", "alarm", base.DEC, vs_AlarmId, nil, "alarm acknowledged") },
        { name = "still_active", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.alarm_ack_ack.still_active", "still_active", base.NONE, nil, nil, "1 if its condition still holds: silenced, it stays latched") },
        { name = "priority", kind = "enum", size = 1, vs = vs_Priority, enum = "Priority",
          field = ProtoField.uint8("thecal.alarm_ack_ack.priority", "priority", base.DEC, vs_Priority, nil, "its priority") },
        { name = "needs_reset", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.alarm_ack_ack.needs_reset", "needs_reset", base.NONE, nil, nil, "1 if it stays latched and, once its condition is gone, therapy stays halted until it is acknowledged again") },
        { name = "state", kind = "enum", size = 1, vs = vs_TherapyState, enum = "TherapyState",
          field = ProtoField.uint8("thecal.alarm_ack_ack.state", "state", base.DEC, vs_TherapyState, nil, "therapy state after the acknowledgement") },
    },
}
table.insert(message_codes, 0x6A)

messages[0x6B] = {
    name = "LOG_READ_ACK", link = HOST_LINK,
    fields = {
        { name = "oldest_seq", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.log_read_ack.oldest_seq", "oldest_seq", base.DEC, nil, nil, "oldest entry still held") },
        { name = "next_seq", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.log_read_ack.next_seq", "next_seq", base.DEC, nil, nil, "sequence number the next entry will get; read on from the last entry's seq + 1") },
        { name = "entries", kind = "array", max = 32, record = rec_LogEntry,
          field = ProtoField.none("thecal.log_read_ack.entries", "entries", "entries, ascending seq") },
    },
}
table.insert(message_codes, 0x6B)

messages[0x6C] = {
    name = "SET_CLOCK_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.set_clock_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "clock_s", kind = "i", size = 8,
          field = ProtoField.int64("thecal.set_clock_ack.clock_s", "clock_s", base.DEC, nil, nil, "the clock now") },
    },
}
table.insert(message_codes, 0x6C)

messages[0x6D] = {
    name = "READ_PRESCRIPTION_ACK", link = HOST_LINK,
    fields = {
        { name = "present", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.read_prescription_ack.present", "present", base.NONE, nil, nil, "1 if a prescription is programmed") },
        { name = "drug", kind = "text", max = 24,
          field = ProtoField.string("thecal.read_prescription_ack.drug", "drug", nil, "drug name as in the drug library, e.g. 'morphine'") },
        { name = "concentration_ng_per_ml", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.read_prescription_ack.concentration_ng_per_ml", "concentration_ng_per_ml", base.DEC, nil, nil, "drug concentration in the reservoir, ng per mL") },
        { name = "basal", kind = "array", max = 24, record = rec_BasalStep,
          field = ProtoField.none("thecal.read_prescription_ack.basal", "basal", "basal schedule, 1-24 steps sorted by start_s, first at 0") },
        { name = "bolus_dose_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.read_prescription_ack.bolus_dose_ng", "bolus_dose_ng", base.DEC, nil, nil, "patient bolus dose in ng; 0 = no patient bolus") },
        { name = "bolus_duration_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.read_prescription_ack.bolus_duration_s", "bolus_duration_s", base.DEC, nil, nil, "time over which a patient bolus is delivered") },
        { name = "bolus_lockout_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.read_prescription_ack.bolus_lockout_s", "bolus_lockout_s", base.DEC, nil, nil, "minimum time from the start of one patient bolus to the next") },
        { name = "bolus_max_per_24h", kind = "u", size = 1,
          field = ProtoField.uint8("thecal.read_prescription_ack.bolus_max_per_24h", "bolus_max_per_24h", base.DEC, nil, nil, "patient boluses allowed in any rolling 24 h") },
        { name = "max_dose_24h_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.read_prescription_ack.max_dose_24h_ng", "max_dose_24h_ng", base.DEC, nil, nil, "hard limit on all drug (basal and every bolus) in any rolling 24 h") },
        { name = "low_reservoir_ul", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.read_prescription_ack.low_reservoir_ul", "low_reservoir_ul", base.DEC, nil, nil, "low-reservoir alarm threshold, uL") },
        { name = "catheter_volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.read_prescription_ack.catheter_volume_nl", "catheter_volume_nl", base.DEC, nil, nil, "catheter volume from the pump outlet to its tip as the clinician entered it (catheter model and trimmed length), nL; 0 = not entered") },
        { name = "timed_bolus", kind = "array", max = 8, record = rec_TimedBolus,
          field = ProtoField.none("thecal.read_prescription_ack.timed_bolus", "timed_bolus", "daily timed boluses, 0-8 sorted by start_s, none overlapping another (SR-053)") },
    },
}
table.insert(message_codes, 0x6D)

messages[0x6E] = {
    name = "CATHETER_REPLACED_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.catheter_replaced_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "catheter_state", kind = "enum", size = 1, vs = vs_CatheterState, enum = "CatheterState",
          field = ProtoField.uint8("thecal.catheter_replaced_ack.catheter_state", "catheter_state", base.DEC, vs_CatheterState, nil, "the catheter's state now (EMPTY)") },
        { name = "catheter_volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.catheter_replaced_ack.catheter_volume_nl", "catheter_volume_nl", base.DEC, nil, nil, "its volume, nL") },
    },
}
table.insert(message_codes, 0x6E)

messages[0x6F] = {
    name = "KEY_UPDATE_ACK", link = HOST_LINK,
    fields = {
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.key_update_ack.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "role", kind = "enum", size = 1, vs = vs_Role, enum = "Role",
          field = ProtoField.uint8("thecal.key_update_ack.role", "role", base.DEC, vs_Role, nil, "whose key") },
        { name = "revoked", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.key_update_ack.revoked", "revoked", base.NONE, nil, nil, "1: revoked, 0: replaced") },
    },
}
table.insert(message_codes, 0x6F)

messages[0x80] = {
    name = "NAK", link = HOST_LINK,
    fields = {
        { name = "request_type", kind = "u", size = 1,
          field = ProtoField.uint8("thecal.nak.request_type", "request_type", base.HEX, vs_msg_type, nil, "type of the refused request") },
        { name = "reason", kind = "enum", size = 1, vs = vs_NakReason, enum = "NakReason",
          field = ProtoField.uint8("thecal.nak.reason", "reason", base.DEC, vs_NakReason, nil, "why it was refused") },
        { name = "field", kind = "text", max = 32,
          field = ProtoField.string("thecal.nak.field", "field", nil, "the field at fault (OUT_OF_RANGE), else empty") },
        { name = "detail", kind = "text", max = 160,
          field = ProtoField.string("thecal.nak.detail", "detail", nil, "human-readable explanation naming the limit broken") },
    },
}
table.insert(message_codes, 0x80)

messages[0x90] = {
    name = "ALARM_RAISED", link = HOST_LINK,
    fields = {
        { name = "time_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.alarm_raised.time_s", "time_s", base.DEC, nil, nil, "pump time in s when this happened") },
        { name = "alarm", kind = "enum", size = 1, vs = vs_AlarmId, enum = "AlarmId",
          field = ProtoField.uint8("thecal.alarm_raised.alarm", "alarm", base.DEC, vs_AlarmId, nil, "which") },
        { name = "priority", kind = "enum", size = 1, vs = vs_Priority, enum = "Priority",
          field = ProtoField.uint8("thecal.alarm_raised.priority", "priority", base.DEC, vs_Priority, nil, "its priority") },
    },
}
table.insert(message_codes, 0x90)

messages[0x91] = {
    name = "ALARM_CLEARED", link = HOST_LINK,
    fields = {
        { name = "time_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.alarm_cleared.time_s", "time_s", base.DEC, nil, nil, "pump time in s when this happened") },
        { name = "alarm", kind = "enum", size = 1, vs = vs_AlarmId, enum = "AlarmId",
          field = ProtoField.uint8("thecal.alarm_cleared.alarm", "alarm", base.DEC, vs_AlarmId, nil, "which") },
    },
}
table.insert(message_codes, 0x91)

messages[0x92] = {
    name = "THERAPY_STATE_CHANGED", link = HOST_LINK,
    fields = {
        { name = "time_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.therapy_state_changed.time_s", "time_s", base.DEC, nil, nil, "pump time in s when this happened") },
        { name = "old_state", kind = "enum", size = 1, vs = vs_TherapyState, enum = "TherapyState",
          field = ProtoField.uint8("thecal.therapy_state_changed.old_state", "old_state", base.DEC, vs_TherapyState, nil, "state before") },
        { name = "new_state", kind = "enum", size = 1, vs = vs_TherapyState, enum = "TherapyState",
          field = ProtoField.uint8("thecal.therapy_state_changed.new_state", "new_state", base.DEC, vs_TherapyState, nil, "state now") },
    },
}
table.insert(message_codes, 0x92)

messages[0x93] = {
    name = "BOLUS_STARTED", link = HOST_LINK,
    fields = {
        { name = "time_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.bolus_started.time_s", "time_s", base.DEC, nil, nil, "pump time in s when this happened") },
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_started.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "kind", kind = "enum", size = 1, vs = vs_BolusKind, enum = "BolusKind",
          field = ProtoField.uint8("thecal.bolus_started.kind", "kind", base.DEC, vs_BolusKind, nil, "patient, clinician, priming or timed (a timed bolus's command_id is the local minute it fell due)") },
        { name = "dose_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_started.dose_ng", "dose_ng", base.DEC, nil, nil, "dose to deliver, ng (0 for priming)") },
        { name = "volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_started.volume_nl", "volume_nl", base.DEC, nil, nil, "volume to push, nL") },
        { name = "duration_s", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_started.duration_s", "duration_s", base.DEC, nil, nil, "planned duration, s") },
    },
}
table.insert(message_codes, 0x93)

messages[0x94] = {
    name = "BOLUS_FINISHED", link = HOST_LINK,
    fields = {
        { name = "time_s", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.bolus_finished.time_s", "time_s", base.DEC, nil, nil, "pump time in s when this happened") },
        { name = "command_id", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_finished.command_id", "command_id", base.DEC, nil, nil, "host-chosen id of this command; STATUS reports the last one accepted") },
        { name = "kind", kind = "enum", size = 1, vs = vs_BolusKind, enum = "BolusKind",
          field = ProtoField.uint8("thecal.bolus_finished.kind", "kind", base.DEC, vs_BolusKind, nil, "patient, clinician, priming or timed") },
        { name = "outcome", kind = "enum", size = 1, vs = vs_BolusOutcome, enum = "BolusOutcome",
          field = ProtoField.uint8("thecal.bolus_finished.outcome", "outcome", base.DEC, vs_BolusOutcome, nil, "how it ended") },
        { name = "delivered_ng", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_finished.delivered_ng", "delivered_ng", base.DEC, nil, nil, "dose actually delivered, counted from strokes made") },
        { name = "delivered_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.bolus_finished.delivered_nl", "delivered_nl", base.DEC, nil, nil, "volume actually pushed") },
    },
}
table.insert(message_codes, 0x94)

messages[0xA0] = {
    name = "SIM_ADVANCE", link = HOST_LINK,
    fields = {
        { name = "duration_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.sim_advance.duration_ms", "duration_ms", base.DEC, nil, nil, "how far to advance") },
    },
}
table.insert(message_codes, 0xA0)

messages[0xA1] = {
    name = "SIM_SET_SPEED", link = HOST_LINK,
    fields = {
        { name = "speed_milli", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_set_speed.speed_milli", "speed_milli", base.DEC, nil, nil, "speed x 1000 (1000 = real time); 0 = lockstep") },
    },
}
table.insert(message_codes, 0xA1)

messages[0xA2] = {
    name = "SIM_INJECT_FAULT", link = HOST_LINK,
    fields = {
        { name = "fault", kind = "enum", size = 1, vs = vs_Fault, enum = "Fault",
          field = ProtoField.uint8("thecal.sim_inject_fault.fault", "fault", base.DEC, vs_Fault, nil, "which fault") },
        { name = "link", kind = "enum", size = 1, vs = vs_Link, enum = "Link",
          field = ProtoField.uint8("thecal.sim_inject_fault.link", "link", base.DEC, vs_Link, nil, "for link faults: which link, else NONE") },
        { name = "value", kind = "i", size = 8,
          field = ProtoField.int64("thecal.sim_inject_fault.value", "value", base.DEC, nil, nil, "fault parameter (mV, ppm or ms, per fault)") },
        { name = "rate_ppm", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_inject_fault.rate_ppm", "rate_ppm", base.DEC, nil, nil, "for link faults: bytes affected per million") },
        { name = "seed", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_inject_fault.seed", "seed", base.DEC, nil, nil, "seed of the fault's random stream") },
    },
}
table.insert(message_codes, 0xA2)

messages[0xA3] = {
    name = "SIM_CLEAR_FAULT", link = HOST_LINK,
    fields = {
        { name = "fault", kind = "enum", size = 1, vs = vs_Fault, enum = "Fault",
          field = ProtoField.uint8("thecal.sim_clear_fault.fault", "fault", base.DEC, vs_Fault, nil, "which fault") },
    },
}
table.insert(message_codes, 0xA3)

messages[0xA4] = {
    name = "SIM_GROUND_TRUTH", link = HOST_LINK,
    fields = {
        { name = "tones_from", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_ground_truth.tones_from", "tones_from", base.DEC, nil, nil, "index of the first tone wanted from the tone history") },
    },
}
table.insert(message_codes, 0xA4)

messages[0xA5] = {
    name = "SIM_POWER_CYCLE", link = HOST_LINK,
    fields = {
        { name = "off_ms", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_power_cycle.off_ms", "off_ms", base.DEC, nil, nil, "how long power stays off") },
    },
}
table.insert(message_codes, 0xA5)

messages[0xA6] = {
    name = "SIM_REFILL", link = HOST_LINK,
    fields = {
        { name = "withdraw_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_refill.withdraw_nl", "withdraw_nl", base.DEC, nil, nil, "volume to withdraw (limited by what is there), nL") },
        { name = "add_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_refill.add_nl", "add_nl", base.DEC, nil, nil, "volume to inject, nL") },
        { name = "concentration_ng_per_ml", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_refill.concentration_ng_per_ml", "concentration_ng_per_ml", base.DEC, nil, nil, "concentration of what is injected, ng/mL") },
        { name = "into_pocket", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.sim_refill.into_pocket", "into_pocket", base.NONE, nil, nil, "1: the injection misses the reservoir") },
    },
}
table.insert(message_codes, 0xA6)

messages[0xA7] = {
    name = "SIM_REPLACE_CATHETER", link = HOST_LINK,
    fields = {
        { name = "volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_replace_catheter.volume_nl", "volume_nl", base.DEC, nil, nil, "the new catheter's volume, nL; 0 = the pump model's") },
    },
}
table.insert(message_codes, 0xA7)

messages[0xB0] = {
    name = "SIM_ADVANCE_ACK", link = HOST_LINK,
    fields = {
        { name = "time_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.sim_advance_ack.time_ms", "time_ms", base.DEC, nil, nil, "pump time now, ms") },
    },
}
table.insert(message_codes, 0xB0)

messages[0xB1] = {
    name = "SIM_SET_SPEED_ACK", link = HOST_LINK,
    fields = {
        { name = "speed_milli", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_set_speed_ack.speed_milli", "speed_milli", base.DEC, nil, nil, "speed now") },
    },
}
table.insert(message_codes, 0xB1)

messages[0xB2] = {
    name = "SIM_INJECT_FAULT_ACK", link = HOST_LINK,
    fields = {
        { name = "fault", kind = "enum", size = 1, vs = vs_Fault, enum = "Fault",
          field = ProtoField.uint8("thecal.sim_inject_fault_ack.fault", "fault", base.DEC, vs_Fault, nil, "fault now active") },
    },
}
table.insert(message_codes, 0xB2)

messages[0xB3] = {
    name = "SIM_CLEAR_FAULT_ACK", link = HOST_LINK,
    fields = {
        { name = "fault", kind = "enum", size = 1, vs = vs_Fault, enum = "Fault",
          field = ProtoField.uint8("thecal.sim_clear_fault_ack.fault", "fault", base.DEC, vs_Fault, nil, "fault cleared") },
    },
}
table.insert(message_codes, 0xB3)

messages[0xB4] = {
    name = "SIM_GROUND_TRUTH_ACK", link = HOST_LINK,
    fields = {
        { name = "time_ms", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.sim_ground_truth_ack.time_ms", "time_ms", base.DEC, nil, nil, "pump time, ms") },
        { name = "delivered_nl", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.sim_ground_truth_ack.delivered_nl", "delivered_nl", base.DEC, nil, nil, "volume pushed out of the catheter tip since manufacture, nL") },
        { name = "delivered_ng", kind = "u", size = 8,
          field = ProtoField.uint64("thecal.sim_ground_truth_ack.delivered_ng", "delivered_ng", base.DEC, nil, nil, "drug pushed out of the catheter tip, ng") },
        { name = "reservoir_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_ground_truth_ack.reservoir_nl", "reservoir_nl", base.DEC, nil, nil, "physical reservoir volume, nL") },
        { name = "outlet_pressure_pa", kind = "i", size = 4,
          field = ProtoField.int32("thecal.sim_ground_truth_ack.outlet_pressure_pa", "outlet_pressure_pa", base.DEC, nil, nil, "outlet pressure above baseline, Pa") },
        { name = "motor", kind = "enum", size = 1, vs = vs_MotorState, enum = "MotorState",
          field = ProtoField.uint8("thecal.sim_ground_truth_ack.motor", "motor", base.DEC, vs_MotorState, nil, "motor state") },
        { name = "strokes_total", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_ground_truth_ack.strokes_total", "strokes_total", base.DEC, nil, nil, "strokes made since manufacture") },
        { name = "battery_mv", kind = "u", size = 2,
          field = ProtoField.uint16("thecal.sim_ground_truth_ack.battery_mv", "battery_mv", base.DEC, nil, nil, "battery voltage, mV") },
        { name = "controller_alive", kind = "bool", size = 1,
          field = ProtoField.bool("thecal.sim_ground_truth_ack.controller_alive", "controller_alive", base.NONE, nil, nil, "1 if the controller has kicked the watchdog within its window") },
        { name = "tones_total", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_ground_truth_ack.tones_total", "tones_total", base.DEC, nil, nil, "tones sounded since manufacture") },
        { name = "tones", kind = "array", max = 32, record = rec_Tone,
          field = ProtoField.none("thecal.sim_ground_truth_ack.tones", "tones", "tones from index tones_from on") },
    },
}
table.insert(message_codes, 0xB4)

messages[0xB5] = {
    name = "SIM_POWER_CYCLE_ACK", link = HOST_LINK,
    fields = {
        { name = "boot_count", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_power_cycle_ack.boot_count", "boot_count", base.DEC, nil, nil, "controller starts since manufacture") },
    },
}
table.insert(message_codes, 0xB5)

messages[0xB6] = {
    name = "SIM_REFILL_ACK", link = HOST_LINK,
    fields = {
        { name = "withdrawn_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_refill_ack.withdrawn_nl", "withdrawn_nl", base.DEC, nil, nil, "volume actually withdrawn, nL") },
        { name = "reservoir_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_refill_ack.reservoir_nl", "reservoir_nl", base.DEC, nil, nil, "physical reservoir volume now, nL") },
    },
}
table.insert(message_codes, 0xB6)

messages[0xB7] = {
    name = "SIM_REPLACE_CATHETER_ACK", link = HOST_LINK,
    fields = {
        { name = "volume_nl", kind = "u", size = 4,
          field = ProtoField.uint32("thecal.sim_replace_catheter_ack.volume_nl", "volume_nl", base.DEC, nil, nil, "the new catheter's volume, nL") },
    },
}
table.insert(message_codes, 0xB7)

-- ---------------------------------------------------------------- engine
-- Everything below is written once by hand; the tables above carry the protocol.

local field_list = {}
for _, pf in ipairs(base_fields) do table.insert(field_list, pf) end
for _, rec in ipairs(record_list) do
    table.insert(field_list, rec.field)
    for _, fd in ipairs(rec.fields) do table.insert(field_list, fd.field) end
end
for _, code in ipairs(message_codes) do
    for _, fd in ipairs(messages[code].fields) do table.insert(field_list, fd.field) end
end
thecal.fields = field_list

-- CRC-32/ISO-HDLC. Wireshark has been built with Lua 5.1 to 5.4, whose bit operations
-- differ (bit32 in 5.2, native operators from 5.3, which 5.1 and 5.2 cannot even parse),
-- so xor comes from whichever is there, with plain arithmetic as the last resort.
local TWO32 = 4294967296
local bxor
if bit32 then
    bxor = bit32.bxor
else
    local ok, chunk = pcall(load, "return function(a, b) return a ~ b end")
    if ok and type(chunk) == "function" then
        bxor = chunk()
    elseif bit then
        bxor = function(a, b) return bit.bxor(a, b) % TWO32 end
    else
        bxor = function(a, b)
            local r, p = 0, 1
            while a > 0 or b > 0 do
                local x, y = a % 2, b % 2
                if x ~= y then r = r + p end
                a, b, p = (a - x) / 2, (b - y) / 2, p * 2
            end
            return r
        end
    end
end

local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if c % 2 == 1 then c = bxor(math.floor(c / 2), 0xEDB88320) else c = math.floor(c / 2) end
    end
    crc_table[i] = c
end

local function crc32(s)
    local c = 0xFFFFFFFF
    for i = 1, #s do
        c = bxor(crc_table[bxor(c % 256, s:byte(i))], math.floor(c / 256))
    end
    return bxor(c, 0xFFFFFFFF)
end

local function int_text(v) return string.format("%d", v) end

-- One field at `off`; returns the offset after it and its text for the Info column, or
-- nil when it runs past the payload's end `pend` (the caller reports that).
local dissect_body

local function add_field(tvb, pinfo, tree, fd, off, pend)
    local k = fd.kind
    if k == "u" or k == "i" or k == "enum" or k == "bool" then
        if off + fd.size > pend then return nil end
        local r = tvb(off, fd.size)
        local item = tree:add_le(fd.field, r)
        if k == "enum" then
            local v = r:le_uint()
            local name = fd.vs[v]
            if name == nil then
                item:add_proto_expert_info(ex.bad_value, string.format("%d is not a %s", v, fd.enum))
                return off + fd.size, int_text(v)
            end
            return off + fd.size, name
        elseif k == "bool" then
            local v = r:uint()
            if v > 1 then
                item:add_proto_expert_info(ex.bad_value, string.format("%d is not 0 or 1", v))
            end
            return off + 1, v == 1 and "true" or (v == 0 and "false" or int_text(v))
        elseif fd.size == 8 then
            return off + 8, tostring(k == "i" and r:le_int64() or r:le_uint64())
        elseif k == "i" then
            return off + fd.size, int_text(r:le_int())
        end
        return off + fd.size, int_text(r:le_uint())
    elseif k == "text" then
        if off + 1 > pend then return nil end
        local n = tvb(off, 1):uint()
        if off + 1 + n > pend then return nil end
        local item = tree:add_packet_field(fd.field, tvb(off + 1, n), ENC_UTF_8)
        item:add(f.length8, tvb(off, 1))
        if n > fd.max then
            item:add_proto_expert_info(ex.bad_value, string.format("%d bytes, at most %d allowed", n, fd.max))
        end
        local s = n > 0 and tvb(off + 1, n):string(ENC_UTF_8) or ""
        return off + 1 + n, '"' .. s .. '"'
    elseif k == "blob" then
        if off + 2 > pend then return nil end
        local n = tvb(off, 2):le_uint()
        if off + 2 + n > pend then return nil end
        local item = tree:add(fd.field, tvb(off + 2, n))
        item:add_le(f.length16, tvb(off, 2))
        if n > fd.max then
            item:add_proto_expert_info(ex.bad_value, string.format("%d bytes, at most %d allowed", n, fd.max))
        end
        if fd.relay and n > 0 then
            return off + 2 + n, "[" .. dissect_body(tvb(off + 2, n):tvb(), pinfo, item, HOST_LINK, true) .. "]"
        end
        return off + 2 + n, string.format("<%d bytes>", n)
    elseif k == "array" then
        if off + 1 > pend then return nil end
        local n = tvb(off, 1):uint()
        local rec = fd.record
        local size = 1 + n * rec.size
        if off + size > pend then return nil end
        local item = tree:add(fd.field, tvb(off, size))
        item:append_text(string.format(" (%d)", n))
        item:add(f.count, tvb(off, 1))
        if n > fd.max then
            item:add_proto_expert_info(ex.bad_value, string.format("%d items, at most %d allowed", n, fd.max))
        end
        for i = 0, n - 1 do
            local ro = off + 1 + i * rec.size
            local rt = item:add(rec.field, tvb(ro, rec.size))
            rt:append_text(string.format(" [%d]", i))
            local o = ro
            local parts = {}
            for _, rfd in ipairs(rec.fields) do
                local text
                o, text = add_field(tvb, pinfo, rt, rfd, o, ro + rec.size)
                table.insert(parts, rfd.name .. "=" .. text)
            end
            rt:append_text(": " .. table.concat(parts, " "))
        end
        return off + size, string.format("[%d]", n)
    end
    error("thecal.lua: unknown field kind " .. tostring(k))
end

-- One frame body (header to CRC) in its own tvb; returns its summary for the Info column.
dissect_body = function(tvb, pinfo, parent, link, relayed)
    local n = tvb:len()
    local tree = parent:add(relayed and f.relayed or f.frame, tvb())
    if n < MIN_BODY then
        tree:add_proto_expert_info(ex.malformed,
            string.format("a body of %d bytes is shorter than the %d of header and CRC", n, MIN_BODY))
        return "[too short]"
    end
    local crc_ok = crc32(tvb:raw(0, n - CRC_SIZE)) == tvb(n - CRC_SIZE, CRC_SIZE):le_uint()

    local h = tree:add(f.header, tvb(0, HEADER_SIZE))
    h:add(f.version, tvb(0, 1))
    h:add(f.type, tvb(1, 1))
    h:add(f.flags, tvb(2, 1)):add(f.flag_auth, tvb(2, 1))
    h:add_le(f.seq, tvb(3, 2))
    h:add_le(f.payload_len, tvb(5, 2))
    local version, mtype, flags = tvb(0, 1):uint(), tvb(1, 1):uint(), tvb(2, 1):uint()
    local seq, plen = tvb(3, 2):le_uint(), tvb(5, 2):le_uint()
    local msg = messages[mtype]
    local name = msg and msg.name or string.format("0x%02X", mtype)
    tree:append_text(": " .. name)
    local summary = name .. " seq=" .. int_text(seq)
    local bad = {}

    if not crc_ok then table.insert(bad, "bad CRC") end
    if version ~= PROTOCOL_VERSION then
        h:add_proto_expert_info(ex.malformed, string.format("protocol version %d, not %d", version, PROTOCOL_VERSION))
        table.insert(bad, "bad version")
    end
    if flags >= 2 * KNOWN_FLAGS then  -- AUTH is bit 0, every other bit is reserved
        h:add_proto_expert_info(ex.malformed, string.format("reserved flag bits set in 0x%02X", flags))
        table.insert(bad, "bad flags")
    end
    local signed = flags % 2 == AUTH_FLAG
    local pend = HEADER_SIZE + plen
    local want = pend + (signed and TRAILER_SIZE or 0) + CRC_SIZE
    local role, counter
    if signed and want == n then
        local key_id = tvb(pend, 1):uint()
        role = vs_Role[key_id] and string.lower(vs_Role[key_id]) or ("key" .. int_text(key_id))
        counter = tostring(tvb(pend + 1, 8):le_uint64())
        summary = summary .. " [" .. role .. "#" .. counter .. "]"
    end
    if plen > MAX_PAYLOAD or want ~= n then
        h:add_proto_expert_info(ex.malformed,
            string.format("payload_len %d and flags make a %d-byte body, this one has %d bytes", plen, want, n))
        table.insert(bad, "bad length")
        if n - CRC_SIZE > HEADER_SIZE then
            tree:add(f.payload_bytes, tvb(HEADER_SIZE, n - CRC_SIZE - HEADER_SIZE))
        end
    elseif msg == nil then
        tree:add(f.payload_bytes, tvb(HEADER_SIZE, plen)):add_proto_expert_info(ex.unknown_type,
            string.format("no message has type 0x%02X", mtype))
        table.insert(bad, "unknown type")
    else
        local p = tree:add(f.payload, tvb(HEADER_SIZE, plen))
        p:append_text(string.format(": %s (0x%02X)", name, mtype))
        if msg.link ~= link then
            p:add_proto_expert_info(ex.wrong_link, string.format("%s is a %s-link message, seen on the %s link",
                name, string.lower(vs_link[msg.link]), string.lower(vs_link[link] or "?")))
        end
        local off, parts = HEADER_SIZE, {}
        for _, fd in ipairs(msg.fields) do
            local next_off, text = add_field(tvb, pinfo, p, fd, off, pend)
            if next_off == nil then
                p:add_proto_expert_info(ex.malformed, string.format("%s.%s runs past the payload", name, fd.name))
                table.insert(bad, "payload too short")
                off = nil
                break
            end
            off = next_off
            table.insert(parts, fd.name .. "=" .. text)
        end
        if off ~= nil and off < pend then
            p:add_proto_expert_info(ex.malformed, string.format("%d bytes after the last field", pend - off))
            table.insert(bad, "extra bytes")
        end
        if #parts > 0 then summary = summary .. " " .. table.concat(parts, " ") end
    end

    if role ~= nil then
        local a = tree:add(f.auth, tvb(pend, TRAILER_SIZE))
        a:add(f.key_id, tvb(pend, 1))
        a:add_le(f.counter, tvb(pend + 1, 8))
        a:add(f.tag, tvb(pend + 9, TAG_SIZE))
        a:append_text(": " .. role .. " #" .. counter)
    end

    local c = tree:add_le(f.crc, tvb(n - CRC_SIZE, CRC_SIZE))
    if crc_ok then
        c:append_text(" [correct]")
    else
        c:add_proto_expert_info(ex.bad_crc)
    end
    if #bad > 0 then summary = summary .. " [" .. table.concat(bad, ", ") .. "]" end
    return summary
end

function thecal.dissector(tvb, pinfo, root)
    pinfo.cols.protocol = "THECAL"
    local n = tvb:len()
    local tree = root:add(thecal, tvb())
    if n < PSEUDO_SIZE then
        tree:add_proto_expert_info(ex.malformed,
            string.format("a record of %d bytes is shorter than the %d-byte pseudo-header", n, PSEUDO_SIZE))
        pinfo.cols.info = "[malformed record]"
        return n
    end
    local p = tree:add(f.pseudo, tvb(0, PSEUDO_SIZE))
    p:add(f.pseudo_version, tvb(0, 1))
    p:add(f.link, tvb(1, 1))
    p:add(f.direction, tvb(2, 1))
    p:add(f.pseudo_flags, tvb(3, 1))
    p:add_le(f.sim_time_ms, tvb(4, 4))
    local wall = p:add_le(f.wall_time_us, tvb(8, 8))
    local wall_us = tvb(8, 8):le_uint64():tonumber()
    if wall_us == 0 then
        wall:append_text(" (not recorded)")
    else
        local secs = math.floor(wall_us / 1000000)
        p:add(f.wall_time, tvb(8, 8), NSTime.new(secs, math.floor((wall_us - secs * 1000000) * 1000)))
    end
    local version, link, dir = tvb(0, 1):uint(), tvb(1, 1):uint(), tvb(2, 1):uint()
    if version ~= PSEUDO_VERSION then
        p:add_proto_expert_info(ex.malformed,
            string.format("pseudo-header version %d, this dissector reads %d", version, PSEUDO_VERSION))
        pinfo.cols.info = "[unknown pseudo-header version]"
        return n
    end
    local ends = direction_ends[dir]
    if ends then
        pinfo.cols.src = ends[1]
        pinfo.cols.dst = ends[2]
    end
    if n == PSEUDO_SIZE then
        tree:add_proto_expert_info(ex.malformed, "no frame body after the pseudo-header")
        pinfo.cols.info = "[no frame body]"
        return n
    end
    local summary = dissect_body(tvb(PSEUDO_SIZE, n - PSEUDO_SIZE):tvb(), pinfo, tree, link, false)
    tree:append_text(", " .. summary)
    pinfo.cols.info = summary
    return n
end

DissectorTable.get("wtap_encap"):add(wtap_encap and wtap_encap.USER0 or WTAP_ENCAP_USER0, thecal)
