"""Every code that travels on a Thecal link, one enum per meaning.

Values are wire values: never renumber a member, only add. Decoders reject a value
that is not a member (construct would pass it through as a bare int).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class MessageFamily(IntEnum):
    """Which link and which direction a message type belongs to (derived from its range)."""

    PUMP_TO_PUMP_HW = 1  # controller -> pump hardware
    PUMP_HW_TO_CONTROLLER = 2  # pump hardware -> controller
    HOST_REQUEST = 3  # host -> pump (relayed to the controller)
    HOST_RESPONSE = 4  # pump -> host, answers one request
    HOST_EVENT = 5  # pump -> host, unsolicited
    SIM_REQUEST = 6  # host -> emulator only, never relayed
    SIM_RESPONSE = 7  # emulator -> host


class FrameFlag(IntFlag):
    AUTH = 0x01  # an authentication trailer follows the payload


class Role(IntEnum):
    """Key ids on the host link: the key a frame is signed with is its sender's role."""

    CLINICIAN = 1
    PATIENT = 2
    SIM = 3  # test harness: sim-control only, answered by the emulator


class NakReason(IntEnum):
    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2
    OUT_OF_RANGE = 3  # the NAK names the field
    NOT_PERMITTED = 4  # this role may not send this request
    WRONG_STATE = 5
    AUTH_FAILED = 6
    REPLAYED = 7
    BUSY = 8


class TherapyState(IntEnum):
    BOOT = 0
    STOPPED = 1
    RUNNING = 2
    REFILL = 3
    HALTED = 4


class AlarmId(IntEnum):
    LOW_RESERVOIR = 1
    EMPTY_RESERVOIR = 2
    MOTOR_STALL = 3
    OCCLUSION = 4
    DELIVERY_SHORTFALL = 5
    BATTERY_ERI = 6
    BATTERY_EOS = 7
    MEMORY_ERROR = 8
    REFILL_DISCREPANCY = 9
    PUMP_LINK_LOST = 10


class Priority(IntEnum):
    """IEC 60601-1-8 alarm priorities."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3


class ResetCause(IntEnum):
    POWER_UP = 1  # first power-up of this pump (fresh battery)
    POWER_CYCLE = 2  # power removed and restored (sim-control power-cycle)
    WATCHDOG = 3  # the hardware watchdog expired
    BROWNOUT = 4  # battery fell below the brown-out level
    SOFTWARE = 5  # the controller asked for a reset
    PROCESS_RESTART = 6  # split mode: the controller process was restarted


class WakeReason(IntEnum):
    TIMER = 1  # the wake-up time the controller asked for has come
    EVENT = 2  # something happened (host frame, sensor change, run progress)
    POLL = 3  # answer to a controller's time request


class MotorState(IntEnum):
    IDLE = 0
    RUNNING = 1
    STALLED = 2


class RunOutcome(IntEnum):
    """How a bounded motor run stands, as reported with each progress message."""

    IN_PROGRESS = 0
    COMPLETED = 1  # every commanded stroke was made
    STOPPED = 2  # stopped on command
    STALLED = 3  # the motor stalled; strokes_made is what really moved
    WATCHDOG = 4  # the hardware watchdog stopped it
    POWER_LOSS = 5  # power went away mid-run
    EMPTY = 6  # the reservoir had nothing left to push


class BeepPattern(IntEnum):
    SILENT = 0  # stop any repeating pattern
    CONFIRM = 1  # short chirp: command accepted
    SINGLE_TONE = 2  # non-critical alarm (low reservoir, ERI, non-critical memory)
    TWO_TONE = 3  # critical alarm (empty, EOS, stall, critical memory)
    HARDWARE_ALARM = 4  # sounded by the pump itself when its watchdog trips


class BolusKind(IntEnum):
    PATIENT = 1
    CLINICIAN = 2
    PRIMING = 3  # fills catheter dead volume; not drug to the patient


class BolusOutcome(IntEnum):
    COMPLETED = 1
    STOPPED = 2  # stopped by a person (therapy stop)
    INTERRUPTED = 3  # fault or reset: abandoned, never resumed


class BolusDecision(IntEnum):
    GRANTED = 0
    NOT_RUNNING = 1
    NO_PATIENT_BOLUS = 2  # the prescription has none
    BOLUS_IN_PROGRESS = 3
    LOCKOUT = 4
    COUNT_LIMIT = 5  # allotted boluses per rolling 24 h used up
    DOSE_LIMIT = 6  # would exceed the rolling 24 h hard limit (basal included)
    RESERVOIR = 7  # the reservoir does not hold the dose above the empty level
    ALARM_ACTIVE = 8  # a high-priority alarm is active


class Fault(IntEnum):
    """Faults the emulator can inject (sim-control)."""

    OCCLUSION = 1  # catheter blocked: pressure builds while the motor strokes
    MOTOR_STALL = 2
    BATTERY_MV = 3  # force the battery voltage to `value`
    STROKE_ERROR = 4  # per-stroke volume error of `value` parts per million
    LINK_DROP = 5  # drop bytes at `rate_ppm` on `link`
    LINK_CORRUPT = 6  # flip a bit in bytes at `rate_ppm` on `link`
    LINK_DUPLICATE = 7  # repeat bytes at `rate_ppm` on `link`
    LINK_DELAY = 8  # delay bytes by `value` ms at `rate_ppm` on `link`
    CATHETER_LEAK = 9  # a fraction `value` ppm of each stroke leaks before the tip


class Link(IntEnum):
    NONE = 0
    HOST = 1
    PUMP = 2
    BOTH = 3


class LogEvent(IntEnum):
    """Event log entry codes. arg0/arg1 meanings are listed in SPEC.md."""

    BOOT = 1  # arg0 reset cause, arg1 boot count
    PROGRAM_ACCEPTED = 2  # arg0 command id
    PROGRAM_REFUSED = 3  # arg0 command id, arg1 NAK reason
    THERAPY_STATE = 4  # arg0 old state, arg1 new state
    BOLUS_REQUEST = 5  # arg0 command id, arg1 bolus decision
    BOLUS_STARTED = 6  # arg0 command id, arg1 bolus kind
    BOLUS_FINISHED = 7  # arg0 command id, arg1 bolus outcome
    ALARM_RAISED = 8  # arg0 alarm id, arg1 priority
    ALARM_CLEARED = 9  # arg0 alarm id
    ALARM_ACKNOWLEDGED = 10  # arg0 alarm id
    REFILL_BEGIN = 11  # arg0 command id
    REFILL_COMPLETE = 12  # arg0 withdrawn nL, arg1 added nL
    CLOCK_SET = 13  # arg0 new time s (low 32 bits)
    AUTH_FAILED = 14  # arg0 key id, arg1 message type
    REPLAY_REJECTED = 15  # arg0 key id, arg1 message type
    KEY_LOCKED_OUT = 16  # arg0 key id, arg1 lockout s
    NOT_PERMITTED = 17  # arg0 key id, arg1 message type
    NVM_ERROR = 18  # arg0 record id, arg1 slot mask
    WATCHDOG_RESET = 19
    DELIVERY_SHORTFALL = 20  # arg0 commanded strokes, arg1 made strokes
