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

    CLINICIAN = 1  # clinician programmer: programming, boluses, refill, log
    PATIENT = 2  # patient's PTM (personal therapy manager): bolus requests and status
    SIM = 3  # test harness: sim-control only, answered by the emulator
    PUMP = 4  # the pump itself: signs its answers and events (SR-058); never accepted on a request


class NakReason(IntEnum):
    UNKNOWN_TYPE = 1  # the message type is not one this pump knows
    BAD_LENGTH = 2  # payload_len or the payload does not match the message's layout
    OUT_OF_RANGE = 3  # a field value is invalid or outside its limits; the NAK names the field
    NOT_PERMITTED = 4  # this role may not send this request
    WRONG_STATE = 5  # not allowed in the current therapy state (e.g. START with no prescription)
    AUTH_FAILED = 6  # no auth trailer, unknown key id, or bad tag
    REPLAYED = 7  # tag valid but counter not above the last accepted for that key
    BUSY = 8  # cannot take the request now; nothing was changed, ask STATUS before resending
    UNSUPPORTED_VERSION = 9  # an older protocol version; this NAK, sent in that version, names the one spoken


class TherapyState(IntEnum):
    BOOT = 0  # starting up, restoring state from non-volatile memory; no delivery
    STOPPED = 1  # no delivery; a prescription may be programmed and therapy started
    RUNNING = 2  # basal delivery per the prescription; boluses may be given
    REFILL = 3  # delivery paused between REFILL_BEGIN and REFILL_COMPLETE
    HALTED = 4  # delivery stopped by a high-priority alarm, until no alarm holds therapy (see Leaving HALTED)


class AlarmId(IntEnum):
    LOW_RESERVOIR = 1  # reservoir at or below the prescription's low_reservoir_ul
    EMPTY_RESERVOIR = 2  # reservoir at its empty level: no more drug can be delivered
    MOTOR_STALL = 3  # the pump motor stalled
    OCCLUSION = 4  # outlet pressure shows a blocked catheter
    DELIVERY_SHORTFALL = 5  # the mechanism made fewer strokes than commanded (under-delivery)
    BATTERY_ERI = 6  # battery at the elective replacement indicator
    BATTERY_EOS = 7  # battery at end of service
    MEMORY_ERROR = 8  # non-volatile memory error
    REFILL_DISCREPANCY = 9  # volume withdrawn at refill differs too much from the expected volume
    PUMP_LINK_LOST = 10  # the controller lost contact with the pump hardware
    CLOCK_ERROR = 11  # pump time, boot count or odometer went back: the hardware restarted from older state
    IMPOSSIBLE_WITHDRAWAL = 12  # more withdrawn at a refill than the reservoir holds: CSF or pocket fluid, not drug
    THERAPY_STOPPED = 13  # therapy has not run for longer than the reminder time, with a prescription and a fill


class Priority(IntEnum):
    """IEC 60601-1-8 alarm priorities."""

    LOW = 1  # low priority
    MEDIUM = 2  # medium priority
    HIGH = 3  # high priority: needs immediate response


class ResetCause(IntEnum):
    POWER_UP = 1  # first power-up of this pump (fresh battery)
    POWER_CYCLE = 2  # power removed and restored (sim-control power-cycle)
    WATCHDOG = 3  # the hardware watchdog expired
    BROWNOUT = 4  # battery fell below the brown-out level
    SOFTWARE = 5  # the controller asked for a reset
    PROCESS_RESTART = 6  # split mode: the controller process was restarted
    HARDWARE_REPLACED = 7  # the pump hardware lost its state or was replaced: nothing physical carries over


class WakeReason(IntEnum):
    TIMER = 1  # the wake-up time the controller asked for has come
    EVENT = 2  # something happened (host frame, sensor change, run progress)
    POLL = 3  # answer to a controller's time request


class MotorState(IntEnum):
    IDLE = 0  # not running
    RUNNING = 1  # making a run of strokes
    STALLED = 2  # stalled: it cannot turn


class RunOutcome(IntEnum):
    """How a bounded motor run stands, as reported with each progress message."""

    IN_PROGRESS = 0  # the run is still going
    COMPLETED = 1  # every commanded stroke was made
    STOPPED = 2  # stopped on command
    STALLED = 3  # the motor stalled; strokes_made is what really moved
    WATCHDOG = 4  # the hardware watchdog stopped it
    POWER_LOSS = 5  # power went away mid-run
    EMPTY = 6  # the reservoir had nothing left to push
    REFUSED = 7  # the run broke a hardware limit (strokes, interval) and was not started


class BeepPattern(IntEnum):
    SILENT = 0  # stop any repeating pattern
    CONFIRM = 1  # short chirp: command accepted
    SINGLE_TONE = 2  # non-critical alarm (low reservoir, ERI, non-critical memory)
    TWO_TONE = 3  # critical alarm (empty, EOS, stall, critical memory)
    HARDWARE_ALARM = 4  # sounded by the pump itself when its watchdog trips


class CatheterState(IntEnum):
    """What the firmware knows of the catheter, as the clinician declared it and strokes since."""

    UNKNOWN = 0  # its contents are not known: counted as holding the reservoir's drug
    EMPTY = 1  # replaced (implant or revision) and not yet primed to its volume: no drug at the tip
    PRIMED = 2  # holds the reservoir's drug (primed through, or its volume pushed through since)


class BolusKind(IntEnum):
    PATIENT = 1  # requested by the patient (BOLUS_REQUEST)
    CLINICIAN = 2  # ordered by a clinician (CLINICIAN_BOLUS)
    PRIMING = 3  # pushes reservoir fluid into the catheter; what leaves the tip is drug, counted toward the limits
    TIMED = 4  # a timed bolus of the prescription, given by the pump at its time of day


class BolusOutcome(IntEnum):
    COMPLETED = 1  # the whole dose was delivered
    STOPPED = 2  # stopped by a person (therapy stop)
    INTERRUPTED = 3  # fault or reset: abandoned, never resumed


class BolusDecision(IntEnum):
    GRANTED = 0  # the bolus starts now
    NOT_RUNNING = 1  # therapy is not RUNNING
    NO_PATIENT_BOLUS = 2  # the prescription has none
    BOLUS_IN_PROGRESS = 3  # another bolus is being delivered
    LOCKOUT = 4  # the lockout since the last patient bolus (or programming, refill) has not passed
    COUNT_LIMIT = 5  # allotted boluses per rolling 24 h used up
    DOSE_LIMIT = 6  # would exceed the rolling 24 h hard limit (basal included)
    RESERVOIR = 7  # the reservoir does not hold the dose above the empty level
    ALARM_ACTIVE = 8  # a high-priority alarm is active


class TimedBolusOutcome(IntEnum):
    """What became of a timed bolus at its time of day (each is logged once, never retried)."""

    STARTED = 0  # it started at its time, or as soon as a bolus in progress ended
    NOT_RUNNING = 1  # therapy was not running at its time (stopped, halted, refill): not given
    DOSE_LIMIT = 2  # it would have broken the rolling 24 h hard limit: not given, not later either
    RESERVOIR = 3  # the reservoir did not hold it above the empty level: not given
    MISSED = 4  # its time passed by more than the grace (a reset, the clock set forward): never given late


class Fault(IntEnum):
    """Faults the emulator can inject (sim-control)."""

    OCCLUSION = 1  # catheter blocked: pressure builds while the motor strokes
    MOTOR_STALL = 2  # the motor stalls and stays stalled until the fault is cleared
    BATTERY_MV = 3  # force the battery voltage to `value`
    STROKE_ERROR = 4  # per-stroke volume error of `value` parts per million
    LINK_DROP = 5  # drop bytes at `rate_ppm` on `link`
    LINK_CORRUPT = 6  # flip a bit in bytes at `rate_ppm` on `link`
    LINK_DUPLICATE = 7  # repeat bytes at `rate_ppm` on `link`
    LINK_DELAY = 8  # delay bytes by `value` ms at `rate_ppm` on `link`
    CATHETER_LEAK = 9  # a fraction `value` ppm of each stroke leaks before the tip


class Link(IntEnum):
    NONE = 0  # no link (a fault that is not a link fault)
    HOST = 1  # the host link
    PUMP = 2  # the pump link
    BOTH = 3  # both links


class MemoryProof(IntEnum):
    """What showed the controller's NVM to be older than the pump hardware it runs on."""

    BLANK_AFTER_BOOTS = 1  # the NVM is blank, but POWER_ON's boot count says this controller booted before
    ODOMETER_AHEAD = 2  # the odometer is ahead of every stroke the runs in the NVM could have made


class LogEvent(IntEnum):
    """Event log entry codes, each with the meaning of its entry's arg0 and arg1.

    Refusals and authentication failures (AUTH_FAILED, REPLAY_REJECTED, NOT_PERMITTED,
    COMMAND_REFUSED, PROGRAM_REFUSED, a denied BOLUS_REQUEST) are logged one by one within a
    budget per kind; beyond it they are counted, and a summary entry (AUTH_FAILURES_SUMMARY
    per key id, REFUSALS_SUMMARY per event) gives the count of those since the kind's
    previous entry, so that no flood pushes therapy records out of the log."""

    BOOT = 1  # arg0 reset cause (ResetCause), arg1 boot count
    PROGRAM_ACCEPTED = 2  # arg0 command id
    PROGRAM_REFUSED = 3  # arg0 command id, arg1 NAK reason (NakReason)
    THERAPY_STATE = 4  # arg0 old state (TherapyState), arg1 new state (TherapyState)
    BOLUS_REQUEST = 5  # arg0 command id, arg1 bolus decision (BolusDecision)
    BOLUS_STARTED = 6  # arg0 command id, arg1 bolus kind (BolusKind)
    BOLUS_FINISHED = 7  # arg0 command id, arg1 bolus outcome (BolusOutcome)
    ALARM_RAISED = 8  # arg0 alarm id (AlarmId), arg1 priority (Priority)
    ALARM_CLEARED = 9  # arg0 alarm id (AlarmId)
    ALARM_ACKNOWLEDGED = 10  # arg0 alarm id (AlarmId)
    REFILL_BEGIN = 11  # arg0 command id
    REFILL_COMPLETE = 12  # arg0 withdrawn nL, arg1 added nL
    CLOCK_SET = 13  # arg0 new time s (low 32 bits)
    AUTH_FAILED = 14  # arg0 key id (Role) or 0 for no trailer, arg1 message type
    REPLAY_REJECTED = 15  # arg0 key id (Role), arg1 message type
    KEY_LOCKED_OUT = 16  # arg0 key id (Role), arg1 lockout s (no longer logged: no key is ever locked out)
    NOT_PERMITTED = 17  # arg0 key id (Role), arg1 message type
    NVM_ERROR = 18  # arg0 record id, arg1 slot mask
    WATCHDOG_RESET = 19  # no arguments
    DELIVERY_SHORTFALL = 20  # arg0 strokes commanded (or claimed by the odometer), arg1 made (or counted)
    COMMAND_REFUSED = 21  # arg0 message type, arg1 NAK reason (NakReason); PROGRAM logs PROGRAM_REFUSED
    DELIVERY_MILESTONE = 22  # arg0 mL counted as delivered since manufacture (each whole mL)
    CLOCK_WENT_BACK = 23  # arg0 s the pump's time went back, arg1 s its real-time clock went back (low 32 bits)
    NVM_OUTDATED = 24  # arg0 what proves it (MemoryProof), arg1 by how much (boots or strokes)
    BASAL_FORFEITED = 25  # arg0 strokes of basal given up instead of caught up, arg1 their drug in ng
    ODOMETER_WENT_BACK = 26  # arg0 strokes the controller had counted, arg1 the pump's odometer (both low 32 bits)
    THERAPY_RECOVERED = 27  # arg0 alarm id (AlarmId) whose condition went, arg1 state resumed (TherapyState)
    CATHETER_REPLACED = 28  # arg0 command id, arg1 catheter volume nL (the catheter is now empty)
    CATHETER_STATE = 29  # arg0 old state (CatheterState), arg1 new state (CatheterState)
    TIMED_BOLUS = 30  # arg0 the timed bolus's index (0 = the first), arg1 what became of it (TimedBolusOutcome)
    AUTH_FAILURES_SUMMARY = 31  # arg0 key id (Role) or 0 (unsigned, not held), arg1 failures not logged one by one
    REFUSALS_SUMMARY = 32  # arg0 the refusal counted (LogEvent), arg1 how many were not logged one by one
    HARDWARE_REPLACED = 33  # arg0 the hardware's boot count, arg1 strokes the controller had counted (low 32 bits)
    KEY_UPDATED = 34  # arg0 whose key (Role), arg1 1 revoked, 0 replaced
