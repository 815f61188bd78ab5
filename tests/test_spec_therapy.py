"""SPEC.md's therapy chapters against the firmware: the state machine, leaving HALTED,
commissioning, the refill, the drug library and prescription limits, and the alarms.
The tables are generated (tools/spec_firmware.py, tools/spec_driven.py); these tests
check what the prose around them says, by driving the firmware in this process."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from emulator.model import PumpModel
from firmware.alarms import AlarmSet
from firmware.board.druglib import load_library
from firmware.config import FirmwareConfig
from firmware.prescription import (
    MAX_BOLUS_DURATION_S,
    MAX_BOLUSES_PER_24H,
    MAX_CATHETER_VOLUME_NL,
    MAX_LOCKOUT_S,
    MAX_TIMED,
    MIN_BOLUS_DURATION_S,
    MIN_LOCKOUT_S,
    BasalStep,
    HwLimits,
    PatientBolus,
    Prescription,
    TimedBolus,
)
from firmware.rules.prescription import PrescriptionError, validate
from firmware.therapy import TRANSITIONS
from protocol.codes import AlarmId, BolusOutcome, CatheterState, Fault, Priority, Role, TherapyState
from protocol.messages import (
    BY_NAME,
    AlarmAck,
    AlarmCleared,
    AlarmRaised,
    BolusFinished,
    CatheterReplaced,
    ClinicianBolus,
    Nak,
    Prime,
    Program,
    RefillBegin,
    RefillComplete,
    SimGroundTruth,
    SimRefill,
    SimReplaceCatheter,
    Start,
    Stop,
)
from protocol.schema import NONE_U32
from protocol.vectors import reference_prescription
from tests.test_spec import SPEC_TEXT, section
from tools.spec_driven import FILL_NL, RX, STATES, Bench, commissioned, filled, in_state
from tools.spec_firmware import CONFIG, MODEL, TRIGGER_CAUSES, _raised_by_firmware

ROOT = Path(__file__).resolve().parents[1]
MORPHINE = RX["drug"], RX["concentration_ng_per_ml"]

# ---------------------------------------------------------------- the state machine


def acceptance_in_spec() -> dict[tuple[str, str], str]:
    body = section(SPEC_TEXT, "### Which request is accepted in which state")
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    out = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for state, cell in zip(head, cells[1:], strict=True):
            out[(cells[0].split(" ")[0], state)] = cell
    return out


def test_every_trigger_has_a_cause_and_the_firmware_fires_exactly_these():
    triggers = {t["trigger"] for t in TRANSITIONS}
    assert set(TRIGGER_CAUSES) == triggers
    fired = set()
    for f in (ROOT / "firmware").rglob("*.py"):
        fired |= set(re.findall(r"\.fire\(\"(\w+)\"\)", f.read_text()))
    assert fired == triggers


def test_request_triggers_do_what_the_acceptance_table_shows():
    """A transition the table of transitions says a request causes is what the firmware
    did with that request in that state: ACK, and therapy in one of its destinations."""
    cells = acceptance_in_spec()
    states = {s.name for s in STATES}
    for t in TRANSITIONS:
        request = TRIGGER_CAUSES[t["trigger"]].split(",")[0]
        if request not in BY_NAME:
            continue  # caused by the pump itself
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        dests = {u["dest"].name for u in TRANSITIONS if TRIGGER_CAUSES[u["trigger"]].split(",")[0] == request}
        for s in sources:
            if s.name in states:
                cell = cells[(request, s.name)]
                assert cell.startswith("ACK → ") and cell.split("→ ")[1] in dests, (request, s.name, cell)


def test_states_that_refuse_a_request_answer_wrong_state_and_boot_busy():
    cells = acceptance_in_spec()
    assert {c for (_, s), c in cells.items() if s == "BOOT"} == {"BUSY"}
    refusals = {c for (_, s), c in cells.items() if s != "BOOT" and not c.startswith("ACK")}
    assert refusals == {"WRONG_STATE"}


# ---------------------------------------------------------------- leaving HALTED


def halted_by_stall(bench: Bench) -> None:
    bench.fault(Fault.MOTOR_STALL)
    bench.wait_for(lambda s: s.state is TherapyState.HALTED, "the halt")


def test_halted_resumes_by_itself_under_resume_and_the_alarm_stays_latched():
    bench = in_state(TherapyState.HALTED)  # a motor stall: resume by default
    refused = bench.ask(Start(command_id=bench.next_id()))
    assert isinstance(refused, Nak) and "motor_stall (still present)" in refused.detail
    bench.clear(Fault.MOTOR_STALL)
    s = bench.wait_for(lambda s: s.state is TherapyState.RUNNING, "the recovery")
    (stall,) = [a for a in s.alarms if a.alarm is AlarmId.MOTOR_STALL]
    assert not stall.condition_present and not stall.needs_reset  # latched, holding nothing
    bench.ok(AlarmAck(alarm=AlarmId.MOTOR_STALL))
    assert AlarmId.MOTOR_STALL not in [a.alarm for a in bench.status().alarms]


def hold_library(tmp_path: Path) -> Path:
    lib = tmp_path / "drugs.toml"
    text = (ROOT / "firmware" / "drugs.toml").read_text()
    lib.write_text(text + '\n[morphine.recovery]\nmotor_stall = "hold"\n')
    return lib


def test_halted_under_hold_needs_an_acknowledgement_after_the_condition_went(tmp_path):
    from tools.inprocess import LocalPump

    bench = Bench(LocalPump(drug_library=hold_library(tmp_path)))
    filled(bench)
    bench.ok(Program(command_id=bench.next_id(), **RX))
    bench.ok(Start(command_id=bench.next_id()))
    halted_by_stall(bench)
    bench.ok(AlarmAck(alarm=AlarmId.MOTOR_STALL))  # while the condition holds: silences only
    bench.clear(Fault.MOTOR_STALL)
    s = bench.wait_for(lambda s: not s.alarms[-1].condition_present, "the condition going")
    assert s.state is TherapyState.HALTED and s.alarms[-1].needs_reset
    bench.pump.advance(3_600_000)
    assert bench.status().state is TherapyState.HALTED  # it does not go back by itself
    ack = bench.ok(AlarmAck(alarm=AlarmId.MOTOR_STALL))
    assert ack.state is TherapyState.RUNNING  # back to the state it was halted from


def test_halted_from_stopped_goes_back_to_stopped():
    bench = commissioned()
    bench.fault(Fault.MOTOR_STALL)
    bench.ok(ClinicianBolus(command_id=bench.next_id(), dose_ng=100_000, duration_s=600))  # a single bolus
    bench.wait_for(lambda s: s.state is TherapyState.HALTED, "the halt")
    bench.clear(Fault.MOTOR_STALL)
    bench.wait_for(lambda s: s.state is TherapyState.STOPPED, "the recovery")


def test_stop_leaves_halted_but_start_stays_refused_while_an_alarm_holds():
    bench = in_state(TherapyState.HALTED)
    assert bench.ok(Stop(command_id=bench.next_id())).state is TherapyState.STOPPED
    refused = bench.ask(Start(command_id=bench.next_id()))
    assert isinstance(refused, Nak) and "high-priority alarm" in refused.detail


def test_an_empty_reservoir_halts_and_only_a_refill_ends_it():
    bench = Bench()
    bench.ok(RefillBegin(command_id=bench.next_id()))
    bench.ok(
        RefillComplete(
            command_id=bench.next_id(),
            withdrawn_nl=0,
            added_nl=1_100_000,
            drug=RX["drug"],
            concentration_ng_per_ml=RX["concentration_ng_per_ml"],
        )
    )
    bench.ok(Program(command_id=bench.next_id(), **RX))
    bench.ok(Start(command_id=bench.next_id()))
    bench.pump.advance(86_400_000)  # 0.1 mL above the empty level, at 0.2 mL a day or more
    s = bench.status()
    assert s.state is TherapyState.HALTED and AlarmId.EMPTY_RESERVOIR in [a.alarm for a in s.alarms]
    assert bench.ok(RefillBegin(command_id=bench.next_id())).expected_reservoir_nl <= 1_000_000
    bench.ok(
        RefillComplete(
            command_id=bench.next_id(),
            withdrawn_nl=1_000_000,
            added_nl=FILL_NL,
            drug=RX["drug"],
            concentration_ng_per_ml=RX["concentration_ng_per_ml"],
        )
    )
    s = bench.status()
    assert s.state is TherapyState.RUNNING  # halted from running: back to running
    assert not {AlarmId.EMPTY_RESERVOIR, AlarmId.LOW_RESERVOIR} & {a.alarm for a in s.alarms}


# ---------------------------------------------------------------- commissioning


def test_a_new_pump_reports_its_reservoir_as_not_known():
    assert f"`reservoir_nl` = 0x{NONE_U32:08X}" in section(SPEC_TEXT, "## Commissioning a new pump")
    assert Bench().status().reservoir_nl == NONE_U32


def test_before_a_fill_start_a_clinician_bolus_and_prime_are_refused_and_no_reservoir_alarm():
    bench = Bench()
    bench.ok(Program(command_id=bench.next_id(), **RX))
    for msg in (
        Start(command_id=bench.next_id()),
        ClinicianBolus(command_id=bench.next_id(), dose_ng=100_000, duration_s=600),
        Prime(command_id=bench.next_id(), volume_nl=RX["catheter_volume_nl"]),
    ):
        reply = bench.ask(msg)
        assert isinstance(reply, Nak) and "record the fill first" in reply.detail, msg
    bench.pump.advance(86_400_000)
    assert not {AlarmId.LOW_RESERVOIR, AlarmId.EMPTY_RESERVOIR} & {a.alarm for a in bench.status().alarms}


def test_the_fill_may_come_before_the_program_with_a_library_drug_it_allows():
    bench = Bench()
    bench.ok(RefillBegin(command_id=bench.next_id()))
    for drug, conc, field in (("aspirin", 1_000, "drug"), ("morphine", 20_000_001, "concentration_ng_per_ml")):
        reply = bench.ask(
            RefillComplete(
                command_id=bench.next_id(), withdrawn_nl=0, added_nl=FILL_NL, drug=drug, concentration_ng_per_ml=conc
            )
        )
        assert isinstance(reply, Nak) and reply.field == field
    filled_ack = bench.ok(
        RefillComplete(
            command_id=bench.next_id(),
            withdrawn_nl=5_000_000,
            added_nl=FILL_NL,
            drug=MORPHINE[0],
            concentration_ng_per_ml=MORPHINE[1],
        )
    )
    assert filled_ack.discrepancy_nl == -(2**31)  # the first fill is not compared, whatever was withdrawn
    bench.ok(Program(command_id=bench.next_id(), **RX))
    assert bench.ok(Start(command_id=bench.next_id())).state is TherapyState.RUNNING
    assert AlarmId.REFILL_DISCREPANCY not in [a.alarm for a in bench.status().alarms]


def test_a_catheter_is_declared_once_a_day_and_primed_with_up_to_twice_its_volume():
    bench = commissioned()
    vol = RX["catheter_volume_nl"]
    assert bench.ok(CatheterReplaced(command_id=bench.next_id())).catheter_state is CatheterState.EMPTY
    again = bench.ask(CatheterReplaced(command_id=bench.next_id()))
    assert isinstance(again, Nak) and "24 h" in again.detail
    over = bench.ask(Prime(command_id=bench.next_id(), volume_nl=2 * vol + 1))
    assert isinstance(over, Nak) and over.field == "volume_nl"
    bench.ok(SimReplaceCatheter(volume_nl=vol))  # the surgery itself: the emulator's catheter is empty too
    bench.ok(Prime(command_id=bench.next_id(), volume_nl=2 * vol))
    s = bench.wait_for(lambda s: not s.bolus_active, "the priming")
    assert s.catheter_state is CatheterState.PRIMED
    # What went into the empty catheter was no drug to the patient; the second volume was.
    drug_ng = vol * RX["concentration_ng_per_ml"] // 1_000_000
    assert s.dose_24h_ng == drug_ng
    truth = bench.ok(SimGroundTruth(tones_from=0))
    assert abs(truth.delivered_ng - drug_ng) < drug_ng // 20  # (the model's stroke error)


# ---------------------------------------------------------------- refill


def running_bench(model: PumpModel | None = None) -> Bench:
    from tools.inprocess import LocalPump

    bench = Bench(LocalPump(model)) if model else Bench()
    filled(bench)
    bench.ok(Program(command_id=bench.next_id(), **RX))
    bench.ok(Start(command_id=bench.next_id()))
    bench.pump.advance(3_600_000)
    return bench


def complete(bench: Bench, withdrawn_nl: int, added_nl: int = FILL_NL):
    return bench.ask(
        RefillComplete(
            command_id=bench.next_id(),
            withdrawn_nl=withdrawn_nl,
            added_nl=added_nl,
            drug=MORPHINE[0],
            concentration_ng_per_ml=MORPHINE[1],
        )
    )


def raised_since(bench: Bench, seen: int) -> set[AlarmId]:
    return {e.alarm for e in bench.pump.events[seen:] if isinstance(e, AlarmRaised)}


def test_refill_begin_stops_the_bolus_in_progress():
    bench = running_bench()
    bench.ok(ClinicianBolus(command_id=bench.next_id(), dose_ng=100_000, duration_s=600))
    seen = len(bench.pump.events)
    bench.ok(RefillBegin(command_id=bench.next_id()))
    ends = [e for e in bench.pump.events[seen:] if isinstance(e, BolusFinished)]
    assert [e.outcome for e in ends] == [BolusOutcome.INTERRUPTED] and not bench.status().bolus_active


def test_sim_refill_with_all_ones_withdraws_everything_there_is():
    assert f"`withdraw_nl` 0x{NONE_U32:08X} withdraws everything" in SPEC_TEXT.replace("\n", " ")
    bench = running_bench()
    there = bench.ok(SimGroundTruth(tones_from=0)).reservoir_nl
    bench.ok(RefillBegin(command_id=bench.next_id()))
    got = bench.ok(SimRefill(withdraw_nl=NONE_U32, add_nl=0, concentration_ng_per_ml=MORPHINE[1], into_pocket=False))
    assert got.withdrawn_nl == there and got.reservoir_nl == 0
    seen = len(bench.pump.events)
    complete(bench, NONE_U32)  # the all-ones value reported as withdrawn: more than the reservoir holds
    assert AlarmId.IMPOSSIBLE_WITHDRAWAL in raised_since(bench, seen)


@pytest.mark.parametrize("capacity_ul", [MODEL.reservoir_capacity_ul, 40_000])
def test_the_discrepancy_threshold_either_way_by_pump_size(capacity_ul):
    spec = section(SPEC_TEXT, "## Refill").replace("\n", " ")
    small, large = CONFIG.refill_discrepancy_small_ul * 1000, CONFIG.refill_discrepancy_large_ul * 1000
    assert f"more than {small / 1e6:g} mL between withdrawn and expected, either way" in spec
    assert f"({large / 1e6:g} mL on a larger one)" in spec and "up to 20 mL" in spec
    limit = small if capacity_ul <= 20_000 else large
    for delta, alarm in ((limit, False), (-limit, False), (limit + 1, True), (-limit - 1, True)):
        bench = running_bench(PumpModel(reservoir_capacity_ul=capacity_ul, stroke_error_sd_ppm=0))
        expected = bench.ok(RefillBegin(command_id=bench.next_id())).expected_reservoir_nl
        seen = len(bench.pump.events)
        ack = complete(bench, expected + delta)
        assert ack.discrepancy_nl == delta
        assert (AlarmId.REFILL_DISCREPANCY in raised_since(bench, seen)) is alarm, (capacity_ul, delta)


def test_a_refill_from_stopped_returns_to_stopped_and_a_low_fill_alarms_at_once():
    bench = commissioned()
    bench.ok(RefillBegin(command_id=bench.next_id()))
    seen = len(bench.pump.events)
    ack = complete(bench, FILL_NL, added_nl=RX["low_reservoir_ul"] * 1000)  # at the low level
    assert ack.reservoir_nl == RX["low_reservoir_ul"] * 1000
    assert bench.status().state is TherapyState.STOPPED
    assert AlarmId.LOW_RESERVOIR in raised_since(bench, seen)


def test_changing_drugs_means_programming_before_the_refill():
    hydromorphone = {**RX, "drug": "hydromorphone", "concentration_ng_per_ml": 2_000_000}
    bench = running_bench()
    refused = bench.ask(Program(command_id=bench.next_id(), **hydromorphone))
    assert isinstance(refused, Nak) and refused.field == "drug"  # running: stop first
    bench.ok(Stop(command_id=bench.next_id()))
    bench.ok(Program(command_id=bench.next_id(), **hydromorphone))
    bench.ok(RefillBegin(command_id=bench.next_id()))
    in_refill = bench.ask(Program(command_id=bench.next_id(), **RX))
    assert isinstance(in_refill, Nak) and in_refill.reason.name == "WRONG_STATE"
    bench.ok(
        RefillComplete(
            command_id=bench.next_id(),
            withdrawn_nl=FILL_NL,
            added_nl=FILL_NL,
            drug="hydromorphone",
            concentration_ng_per_ml=2_000_000,
        )
    )
    assert bench.status().drug == "hydromorphone"


# ---------------------------------------------------------------- drug library and limits

HW = HwLimits(
    stroke_nl=MODEL.stroke_nl,
    min_stroke_interval_ms=MODEL.min_stroke_interval_ms,
    reservoir_capacity_ul=MODEL.reservoir_capacity_ul,
    max_strokes_per_run=MODEL.max_strokes_per_run,
    min_flow_nl_per_day=MODEL.min_flow_nl_per_day,
)
DRUGS = load_library()
MORPHINE_DRUG = DRUGS.get("morphine")
NG_PER_NL = 5  # at 5 mg/mL
STROKE_NG = MODEL.stroke_nl * NG_PER_NL  # one stroke's drug
BASE = Prescription(
    drug="morphine",
    concentration_ng_per_ml=5_000_000,
    basal=(BasalStep(0, 1_000_000),),
    patient_bolus=PatientBolus(10_000, 600, 7_200, 6),  # 2 uL: 4 strokes
    max_dose_24h_ng=3_000_000,
    low_reservoir_ul=2_000,
    catheter_volume_nl=200_000,
)


def refused_field(rx: Prescription) -> str | None:
    try:
        validate(rx, DRUGS, HW, CONFIG.empty_reservoir_ul)
    except PrescriptionError as e:
        return e.field
    return None


def bolus(**kw: int) -> Prescription:
    return replace(BASE, patient_bolus=replace(BASE.patient_bolus, **kw))


# (what the limits table says, a prescription at the limit, one just beyond it, the field named)
LIMITS = [
    (
        f"{MIN_BOLUS_DURATION_S}..{MAX_BOLUS_DURATION_S}",
        bolus(duration_s=MIN_BOLUS_DURATION_S),
        bolus(duration_s=MIN_BOLUS_DURATION_S - 1),
        "bolus_duration_s",
    ),
    ("", bolus(duration_s=MAX_BOLUS_DURATION_S), bolus(duration_s=MAX_BOLUS_DURATION_S + 1), "bolus_duration_s"),
    (
        f"{MIN_LOCKOUT_S}..{MAX_LOCKOUT_S}",
        bolus(lockout_s=MIN_LOCKOUT_S),
        bolus(lockout_s=MIN_LOCKOUT_S - 1),
        "bolus_lockout_s",
    ),
    ("", bolus(lockout_s=MAX_LOCKOUT_S), bolus(lockout_s=MAX_LOCKOUT_S + 1), "bolus_lockout_s"),
    (
        "at least bolus_duration_s",
        bolus(duration_s=1000, lockout_s=1000),
        bolus(duration_s=1001, lockout_s=1000),
        "bolus_lockout_s",
    ),
    (f"1..{MAX_BOLUSES_PER_24H}", bolus(max_per_24h=1), bolus(max_per_24h=0), "bolus_max_per_24h"),
    ("", bolus(max_per_24h=MAX_BOLUSES_PER_24H), bolus(max_per_24h=MAX_BOLUSES_PER_24H + 1), "bolus_max_per_24h"),
    ("at least one stroke's volume", bolus(dose_ng=STROKE_NG), bolus(dose_ng=STROKE_NG - 1), "bolus_dose_ng"),
    (
        "at most max_dose_24h_ng",
        bolus(dose_ng=3_000_000, duration_s=3600),
        bolus(dose_ng=3_000_001, duration_s=3600),
        "bolus_dose_ng",
    ),
    (
        f"stroke_nl ({MODEL.stroke_nl})..{MAX_CATHETER_VOLUME_NL}",
        replace(BASE, catheter_volume_nl=MODEL.stroke_nl),
        replace(BASE, catheter_volume_nl=MODEL.stroke_nl - 1),
        "catheter_volume_nl",
    ),
    (
        "",
        replace(BASE, catheter_volume_nl=MAX_CATHETER_VOLUME_NL),
        replace(BASE, catheter_volume_nl=MAX_CATHETER_VOLUME_NL + 1),
        "catheter_volume_nl",
    ),
    (
        f"empty_reservoir_ul, {CONFIG.empty_reservoir_ul}",
        replace(BASE, low_reservoir_ul=CONFIG.empty_reservoir_ul + 1),
        replace(BASE, low_reservoir_ul=CONFIG.empty_reservoir_ul),
        "low_reservoir_ul",
    ),
    (
        f"capacity ({MODEL.reservoir_capacity_ul})",
        replace(BASE, low_reservoir_ul=MODEL.reservoir_capacity_ul - 1),
        replace(BASE, low_reservoir_ul=MODEL.reservoir_capacity_ul),
        "low_reservoir_ul",
    ),
    (
        "above 0, at most the drug's max_concentration_ng_per_ml",
        replace(BASE, concentration_ng_per_ml=MORPHINE_DRUG.max_concentration_ng_per_ml),
        replace(BASE, concentration_ng_per_ml=MORPHINE_DRUG.max_concentration_ng_per_ml + 1),
        "concentration_ng_per_ml",
    ),
    (
        "above 0, at most the drug's max_daily_dose_ng",
        replace(BASE, max_dose_24h_ng=MORPHINE_DRUG.max_daily_dose_ng),
        replace(BASE, max_dose_24h_ng=MORPHINE_DRUG.max_daily_dose_ng + 1),
        "max_dose_24h_ng",
    ),
    (
        f"min_flow_nl_per_day ({MODEL.min_flow_nl_per_day} nL/day; 0 is refused)",
        replace(BASE, basal=(BasalStep(0, MODEL.min_flow_nl_per_day * NG_PER_NL),)),
        replace(BASE, basal=(BasalStep(0, MODEL.min_flow_nl_per_day * NG_PER_NL - 1),)),
        "basal[0].rate_ng_per_day",
    ),
    (
        "1 to 24 steps",
        replace(BASE, basal=tuple(BasalStep(h * 3600, 1_000_000) for h in range(24))),
        replace(BASE, basal=tuple(BasalStep(h * 3000, 1_000_000) for h in range(25))),
        "basal",
    ),
    (
        f"at most {MAX_TIMED}",
        replace(BASE, timed=(TimedBolus(8 * 3600, 10_000, 600),)),
        replace(BASE, timed=tuple(TimedBolus(h * 3600, 10_000, 600) for h in range(MAX_TIMED + 1))),
        "timed_bolus",
    ),
]


@pytest.mark.parametrize("said,at,beyond,field", LIMITS, ids=lambda x: x if isinstance(x, str) else "")
def test_each_prescription_limit_holds_where_the_table_says(said, at, beyond, field):
    table = section(SPEC_TEXT, "## Drug library and prescription limits")
    assert said in table
    assert refused_field(at) is None
    assert refused_field(beyond) == field


def test_the_mechanisms_fastest_flow_is_the_limit_the_table_states():
    most_nl = MODEL.stroke_nl * 86_400_000 // MODEL.min_stroke_interval_ms
    assert f"one stroke per min_stroke_interval_ms ({most_nl / 1e6:g} mL/day)" in SPEC_TEXT
    rate = most_nl * NG_PER_NL  # ng/day: the fastest the mechanism can go
    assert refused_field(replace(BASE, basal=(BasalStep(0, rate),))) != "basal[0].rate_ng_per_day"
    assert refused_field(replace(BASE, basal=(BasalStep(0, rate + 1),))) == "basal[0].rate_ng_per_day"


def test_a_drug_outside_the_library_is_refused_naming_the_drugs_there_are():
    bench = Bench()
    reply = bench.ask(Program(command_id=1, **{**reference_prescription(), "drug": "aspirin"}))
    assert isinstance(reply, Nak) and reply.field == "drug"
    assert all(name in reply.detail for name in DRUGS.names)
    assert f"`{Path('firmware/drugs.toml')}`" in SPEC_TEXT


# ---------------------------------------------------------------- alarms


def test_tone_and_silence_times_in_the_table_are_what_the_alarm_set_uses():
    alarms = AlarmSet(FirmwareConfig())
    body = section(SPEC_TEXT, "## Alarms")
    words = {
        5 * 60_000: "5 min",
        3_600_000: "1 h",
        86_400_000: "1 day",
        30 * 60_000: "30 min",
        7 * 86_400_000: "7 days",
    }
    for alarm in AlarmId:
        row = next(line for line in body.splitlines() if f"| {alarm.name} |" in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        prio = Priority[cells[2]]
        assert (cells[4], cells[5]) == (words[alarms._interval(prio)], words[alarms._silence(prio)]), alarm


def test_a_high_alarm_in_refill_stops_nothing_more_and_leaves_it_in_refill():
    bench = in_state(TherapyState.REFILL)
    bench.fault(Fault.BATTERY_MV, MODEL.battery_eos_mv - 100)  # end of service: high
    s = bench.wait_for(lambda s: AlarmId.BATTERY_EOS in [a.alarm for a in s.alarms], "the EOS alarm")
    assert s.state is TherapyState.REFILL


def test_therapy_stopped_comes_after_the_time_stated_medium_for_baclofen_and_start_clears_it():
    assert f"not run for {CONFIG.therapy_stopped_alarm_ms // 3_600_000} h" in SPEC_TEXT.replace("\n", " ")
    baclofen = {
        **RX,
        "drug": "baclofen",
        "concentration_ng_per_ml": 500_000,
        "basal": (),
        "bolus_dose_ng": 0,
        "bolus_duration_s": 0,
        "bolus_lockout_s": 0,
        "bolus_max_per_24h": 0,
        "max_dose_24h_ng": 200_000,
        "catheter_volume_nl": 0,
    }
    from protocol.messages import BasalStep as WireStep

    baclofen["basal"] = (WireStep(start_s=0, rate_ng_per_day=100_000),)
    for rx, priority in ((RX, Priority.LOW), (baclofen, Priority.MEDIUM)):
        bench = Bench()
        filled(bench)
        bench.ok(Program(command_id=bench.next_id(), **rx))
        bench.pump.advance(CONFIG.therapy_stopped_alarm_ms - 60_000)
        assert AlarmId.THERAPY_STOPPED not in [a.alarm for a in bench.status().alarms]
        bench.pump.advance(120_000)
        (a,) = [a for a in bench.status().alarms if a.alarm is AlarmId.THERAPY_STOPPED]
        assert a.priority is priority, rx["drug"]
    bench = Bench()
    filled(bench)
    bench.ok(Program(command_id=bench.next_id(), **RX))
    bench.pump.advance(CONFIG.therapy_stopped_alarm_ms + 60_000)
    seen = len(bench.pump.events)
    bench.ok(Start(command_id=bench.next_id()))
    assert AlarmId.THERAPY_STOPPED in {e.alarm for e in bench.pump.events[seen:] if isinstance(e, AlarmCleared)}


def test_the_never_raised_list_finds_what_the_firmware_raises():
    assert _raised_by_firmware(AlarmId.OCCLUSION)
    never = [a for a in AlarmId if not _raised_by_firmware(a)]
    assert f"Declared but never raised by this firmware: {', '.join(a.name for a in never) or 'none'}." in SPEC_TEXT


def test_the_drug_table_is_the_shipped_library():
    body = section(SPEC_TEXT, "## Drug library and prescription limits")
    for d in DRUGS.drugs:
        assert f"| `{d.name}` | {d.unit} | {d.max_concentration_ng_per_ml} (" in body
    assert Role.CLINICIAN in BY_NAME["PROGRAM"].ROLES
