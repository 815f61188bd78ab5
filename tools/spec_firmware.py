"""SPEC.md chapters read from the firmware's and the emulator's own declarations: the
therapy state machine's transitions, the drug library, the prescription limits, the
alarms, the pump-link timing figures and what a controller keeps across resets.

Each table is built from the code that enforces it (firmware/therapy.py's TRANSITIONS,
firmware/drugs.toml through the board's loader, firmware/prescription.py's limits,
firmware/alarms.py's priorities, emulator/model.py's defaults ...), so the document
cannot drift from it. Where the code holds a fact only implicitly (what fires a trigger,
what an NVM record is for), a table here says it, and rendering stops (KeyError) when
the code gains an entry the table lacks. tools/spec.py hands these to protocol/spec.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emulator.model import PumpModel
from emulator.pump import ANY_RUN
from emulator.server import EmulatorOptions
from firmware import prescription as fw_rx
from firmware.alarms import PATTERN, PRIORITY
from firmware.board.druglib import DEFAULT_LIBRARY, load_library
from firmware.commands import RECENT_COMMANDS
from firmware.config import FirmwareConfig
from firmware.controller import HW_INFO_RETRY_MS, KICK_PERCENT
from firmware.nvm import RING_HISTORY, RING_LOG, SCALARS
from firmware.prescription import fmt_dose
from firmware.rules.recovery import DEFAULTS, HOLD_ONLY, Policy
from firmware.rules.reservoir import SMALL_PUMP_NL
from firmware.therapy import TRANSITIONS
from protocol.codes import AlarmId, Priority, TherapyState
from protocol.messages import MAX_BASAL_STEPS
from protocol.spec_types import member_meaning
from protocol.specmd import table

ROOT = Path(__file__).resolve().parents[1]
MODEL = PumpModel()  # the emulator's default pump model: what HW_INFO reports unless told otherwise
CONFIG = FirmwareConfig()  # the firmware's defaults (a site may override any: --firmware-config)

# What fires each trigger of the state machine (the firmware calls Therapy.fire in
# firmware/host.py for requests, firmware/supervisor.py for the rest). A trigger missing
# here stops the rendering; tests hold the request-driven ones to what the firmware does.
TRIGGER_CAUSES: dict[str, str] = {
    "boot_to_stopped": "start-up: NVM held STOPPED (or RUNNING, but the pump cannot deliver)",
    "boot_to_running": "start-up: NVM held RUNNING and no high-priority alarm stands",
    "boot_to_refill": "start-up: NVM held REFILL",
    "boot_to_halted": "start-up: NVM held HALTED, or RUNNING with a high-priority alarm standing, or memory was lost",
    "start_therapy": "START",
    "stop_therapy": "STOP",
    "begin_refill": "REFILL_BEGIN",
    "finish_refill_stopped": "REFILL_COMPLETE, when the pump was not running before the refill (or cannot deliver)",
    "finish_refill_running": "REFILL_COMPLETE, when the pump was running before the refill (or halted from running)",
    "halt": "a high-priority alarm is raised",
    "recover_running": "no alarm holds therapy any more, and it was halted from RUNNING",
    "recover_stopped": "no alarm holds therapy any more, and it was halted from STOPPED (or cannot deliver)",
}

# What each NVM record holds, as a controller written in another language must keep it
# (firmware/nvm.py names the records, firmware/persist.py fills them). A record missing
# here stops the rendering.
NVM_CONTENTS: dict[str, str] = {
    "superblock": "which copy of every record is the latest (a commit is all or nothing)",
    "state": "the therapy state, the state a halt or refill returns to, and when therapy last stopped and started",
    "prescription": "the prescription in force",
    "delivery": "basal owed, the reservoir estimate, the catheter's contents, the bolus in progress, the odometer, "
    "the runs commanded, and the latest controller time, local time and clock offset",
    "boot": "the hardware's boot count at the last start (a blank or older NVM is detected by it)",
    "fill": "the drug and concentration the last fill or refill recorded",
    "bolus_starts": "when each patient bolus of the last 24 h started (the 24 h count)",
    "alarms": "every latched alarm: condition, acknowledged, silenced until, next tone, priority, recovered",
    "log": "the event log's next sequence number",
    "limits": "the patient-bolus lockout's end, the last command id and the recent command ids",
    "auth_counters": "per key, the last counter accepted (replay protection)",
    "keys": "the keys provisioned at the first start",
    "auth_lockouts": "retired, never written: keys are not locked out (its id and place are kept)",
    "timed": "the latest timed bolus dealt with (each is given or missed once)",
    RING_HISTORY[0]: "drug delivered per minute over the last 24 h (the rolling 24 h hard limit)",
    RING_LOG[0]: "the event log's entries",
}


def _ms(ms: int) -> str:
    """A duration as people say it: '5 min', '24 h', '7 days', '30 s'."""
    for unit, size in (("days", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms % size == 0 and ms >= size:
            n = ms // size
            return f"{n} {'day' if unit == 'days' and n == 1 else unit}"
    return f"{ms} ms"


def _ml(nl: int) -> str:
    return f"{nl / 1_000_000:g} mL"


# ---------------------------------------------------------------- therapy states


def _states(value: object) -> str:
    states = value if isinstance(value, list) else [value]
    return ", ".join(s.name for s in states)


def transitions_table() -> str:
    rows = []
    for t in TRANSITIONS:
        guard = t.get("conditions", "")
        rows.append(
            (
                f"`{t['trigger']}`",
                _states(t["source"]),
                t["dest"].name,
                f"`{guard}`" if guard else "",
                TRIGGER_CAUSES[t["trigger"]],
            )
        )
    return table(["Transition", "From", "To", "Guard", "Caused by"], rows)


# ---------------------------------------------------------------- drug library and limits


def drug_table() -> str:
    lib = load_library()
    rows = []
    for d in lib.drugs:
        overrides = ", ".join(f"{a.name} {p.value}" for a, p in d.recovery if DEFAULTS.get(a) is not p)
        rows.append(
            (
                f"`{d.name}`",
                d.unit,
                f"{d.max_concentration_ng_per_ml} ({fmt_dose(d.max_concentration_ng_per_ml, d.unit)}/mL)",
                f"{d.max_daily_dose_ng} ({fmt_dose(d.max_daily_dose_ng, d.unit)})",
                "dangerous" if d.withdrawal_dangerous else "ordinary",
                overrides or "defaults",
            )
        )
    head = ["drug", "unit", "max_concentration_ng_per_ml", "max_daily_dose_ng", "withdrawal", "recovery"]
    return table(head, rows)


def drug_library_path() -> str:
    return DEFAULT_LIBRARY.relative_to(ROOT).as_posix()


def prescription_limits_table() -> str:
    """The rules of firmware/rules/prescription.py, with the figures it uses."""
    m, cfg = MODEL, CONFIG
    max_nl_day = m.stroke_nl * 86_400_000 // m.min_stroke_interval_ms
    rows = [
        ("drug", "a drug of the drug library"),
        ("concentration_ng_per_ml", "above 0, at most the drug's max_concentration_ng_per_ml"),
        (
            "basal",
            f"1 to {MAX_BASAL_STEPS} steps, the first at start_s 0, sorted by start_s, each start_s below "
            f"{fw_rx.S_PER_DAY}",
        ),
        (
            "basal[i].rate_ng_per_day",
            f"a volume rate (rate / concentration) of at least min_flow_nl_per_day ({m.min_flow_nl_per_day} nL/day; "
            f"0 is refused) and at most one stroke per min_stroke_interval_ms ({_ml(max_nl_day)}/day)",
        ),
        (
            "basal",
            "a day's basal at most the drug's max_daily_dose_ng and at most max_dose_24h_ng, with room for "
            "one more minute at the highest rate (the pump's 24 h window is 24 h + 1 min)",
        ),
        ("max_dose_24h_ng", "above 0, at most the drug's max_daily_dose_ng"),
        (
            "bolus_dose_ng",
            "above 0 (or every bolus_ field 0: no patient bolus), at most max_dose_24h_ng, "
            "at least one stroke's volume",
        ),
        (
            "bolus_duration_s",
            f"{fw_rx.MIN_BOLUS_DURATION_S}..{fw_rx.MAX_BOLUS_DURATION_S}, and no faster than one stroke per "
            "min_stroke_interval_ms",
        ),
        (
            "bolus_lockout_s",
            f"{fw_rx.MIN_LOCKOUT_S}..{fw_rx.MAX_LOCKOUT_S}, and at least bolus_duration_s",
        ),
        ("bolus_max_per_24h", f"1..{fw_rx.MAX_BOLUSES_PER_24H}"),
        (
            "timed_bolus",
            f"at most {fw_rx.MAX_TIMED}, sorted by start_s (below {fw_rx.S_PER_DAY}), each ending before the next "
            "starts (the last before the first, next day); each dose and duration as a patient bolus's; basal "
            "and all of them within the drug's max_daily_dose_ng, and within max_dose_24h_ng as the pump measures it",
        ),
        (
            "catheter_volume_nl",
            f"0 (not entered), or stroke_nl ({m.stroke_nl})..{fw_rx.MAX_CATHETER_VOLUME_NL}",
        ),
        (
            "low_reservoir_ul",
            f"above the empty level (empty_reservoir_ul, {cfg.empty_reservoir_ul}) and below the reservoir's "
            f"capacity ({m.reservoir_capacity_ul})",
        ),
    ]
    return table(["Field", "Valid when"], [(f"`{f}`", rule) for f, rule in rows])


def hardware_table() -> str:
    """The default pump model's HW_INFO figures the limits above depend on."""
    m = MODEL
    rows = [
        ("reservoir_capacity_ul", m.reservoir_capacity_ul),
        ("stroke_nl", m.stroke_nl),
        ("min_stroke_interval_ms", m.min_stroke_interval_ms),
        ("min_flow_nl_per_day", m.min_flow_nl_per_day),
        ("max_strokes_per_run", m.max_strokes_per_run),
        ("watchdog_window_ms", m.watchdog_window_ms),
    ]
    return table(["HW_INFO field", "Default pump model"], [(f"`{k}`", v) for k, v in rows])


# ---------------------------------------------------------------- alarms


def _raised_by_firmware(alarm: AlarmId) -> bool:
    """Whether any firmware module other than the alarm tables names the alarm."""
    tables = {ROOT / "firmware" / "alarms.py", ROOT / "firmware" / "rules" / "recovery.py"}
    needle = f"AlarmId.{alarm.name}"
    return any(needle in f.read_text() for f in (ROOT / "firmware").rglob("*.py") if f not in tables)


def alarm_table() -> str:
    cfg = CONFIG
    interval = {Priority.HIGH: cfg.tone_interval_high_ms, Priority.MEDIUM: cfg.tone_interval_medium_ms}
    silence = {Priority.HIGH: cfg.silence_high_ms, Priority.MEDIUM: cfg.silence_medium_ms}
    rows = []
    for alarm in AlarmId:
        prio = PRIORITY[alarm]
        if prio is Priority.HIGH:
            policy = DEFAULTS[alarm].value + (" only" if alarm in HOLD_ONLY else "")
        else:
            policy = ""
        rows.append(
            (
                alarm.value,
                alarm.name,
                prio.name,
                PATTERN[prio].name,
                _ms(interval.get(prio, cfg.tone_interval_low_ms)),
                _ms(silence.get(prio, cfg.silence_low_ms)),
                "yes" if prio is Priority.HIGH else "",
                policy,
                member_meaning(AlarmId, alarm),
            )
        )
    head = [
        "Value",
        "Alarm",
        "Priority",
        "Tone",
        "Tone every",
        "ALARM_ACK silences for",
        "Halts",
        "Recovery",
        "Meaning",
    ]
    return table(head, rows)


def alarms_never_raised() -> str:
    quiet = [a.name for a in AlarmId if not _raised_by_firmware(a)]
    return ", ".join(quiet) if quiet else "none"


# ---------------------------------------------------------------- pump link and resets


def nvm_table() -> str:
    names = [name for name, _ in SCALARS] + [RING_HISTORY[0], RING_LOG[0]]
    return table(["Record", "Holds"], [(f"`{n}`", NVM_CONTENTS[n]) for n in names])


def _scalars() -> dict[str, str]:
    cfg, m = CONFIG, MODEL
    values: dict[str, object] = {
        "IDLE_TIMEOUT_S": f"{EmulatorOptions.idle_timeout_s:g}",
        "WATCHDOG_WINDOW": _ms(m.watchdog_window_ms),
        "MAX_STROKES_PER_RUN": m.max_strokes_per_run,
        "MIN_STROKE_INTERVAL_MS": m.min_stroke_interval_ms,
        "ANY_RUN": f"0x{ANY_RUN:04X}",
        "HW_INFO_RETRY_MS": HW_INFO_RETRY_MS,
        "KICK_PERCENT": KICK_PERCENT,
        "RECENT_COMMANDS": RECENT_COMMANDS,
        "REFILL_DISCREPANCY_SMALL": _ml(cfg.refill_discrepancy_small_ul * 1000),
        "REFILL_DISCREPANCY_LARGE": _ml(cfg.refill_discrepancy_large_ul * 1000),
        "SMALL_PUMP": _ml(SMALL_PUMP_NL),
        "RESERVOIR_CAPACITY_UL": m.reservoir_capacity_ul,
        "DRUG_LIBRARY": drug_library_path(),
        "THERAPY_STOPPED_AFTER": _ms(cfg.therapy_stopped_alarm_ms),
        "SENSOR_POLL": _ms(cfg.sensor_poll_ms),
        "HALTED": TherapyState.HALTED.name,
        "RESUME": Policy.RESUME.value,
        "HOLD": Policy.HOLD.value,
    }
    return {k: str(v) for k, v in values.items()}


def chapters() -> dict[str, Callable[[], str]]:
    out: dict[str, Callable[[], str]] = {k: (lambda v=v: v) for k, v in _scalars().items()}
    out.update(
        THERAPY_TRANSITIONS=transitions_table,
        DRUG_TABLE=drug_table,
        PRESCRIPTION_LIMITS=prescription_limits_table,
        HARDWARE_TABLE=hardware_table,
        ALARM_TABLE=alarm_table,
        ALARMS_NEVER_RAISED=alarms_never_raised,
        NVM_RECORDS=nvm_table,
    )
    return out
