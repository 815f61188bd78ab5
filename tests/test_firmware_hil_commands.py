"""The controller firmware over real ptys: host requests that must be refused, and
refused without a trace on therapy.

A refused prescription (one per validation rule reachable over the link) leaves STATUS,
READ_PRESCRIPTION and the event log as they were, apart from one PROGRAM_REFUSED entry,
and its NAK names the field. Roles, message types from the wrong link, duplicate command
ids, and a dosing command whose answer was lost (resolved by asking STATUS, never by
sending again) are covered too.
"""

from __future__ import annotations

import pytest

from firmware.config import FirmwareConfig
from protocol import codec
from protocol.codes import AlarmId, BeepPattern, BolusDecision, LogEvent, NakReason, ResetCause, Role, TherapyState
from protocol.messages import (
    AlarmAck,
    Beep,
    BolusRequest,
    BolusRequestAck,
    Hello,
    HelloAck,
    HostTx,
    LogRead,
    MotorRun,
    Nak,
    PowerOn,
    Program,
    ReadPrescription,
    RefillBegin,
    SleepUntil,
    Start,
    Status,
    StatusAck,
    Stop,
    WatchdogKick,
)
from tests.harness import Procs, PumpHost, firmware_pump, program_message, send_and_lose, send_frame
from tools.client import Refused

MG = 1_000_000
CONC = 5 * MG
FILL_NL = 12_000_000
STROKE_NG = 2_500
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000

BASE = {
    "basal": ((0, MG), (7 * 3600, 3 * MG // 2)),
    "bolus": (100_000, 600, 3_600, 6),
    "max_dose_24h_ng": 3 * MG,
    "low_reservoir_ul": 2_000,
}


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def programmed(procs, start: bool = True) -> PumpHost:
    pump = firmware_pump(procs)
    pump.fill(FILL_NL, CONC)
    pump.program(**BASE)
    if start:
        pump.start()
        pump.advance(2 * HOUR)
    return pump


def snapshot(pump: PumpHost):
    return pump.status(), pump.prescription(), pump.log()


# ============================================================ refused prescriptions

REFUSED_PROGRAMS = [
    ({"drug": "aspirin"}, "drug"),
    ({"concentration_ng_per_ml": 25 * MG}, "concentration_ng_per_ml"),  # morphine: 20 mg/mL at most
    ({"concentration_ng_per_ml": 0}, "concentration_ng_per_ml"),
    ({"basal": ((3_600, MG),)}, "basal[0].start_s"),  # the day must start at 00:00
    ({"basal": ((0, MG), (8 * 3600, MG), (7 * 3600, MG))}, "basal[2].start_s"),  # unsorted
    ({"basal": ((0, MG), (7 * 3600, MG), (7 * 3600, 2 * MG))}, "basal[2].start_s"),  # duplicated
    ({"basal": ((0, MG), (86_400, MG))}, "basal[1].start_s"),  # not a time of day
    ({"basal": ()}, "basal"),  # no step at all
    # 130 mg/day at 5 mg/mL is 26 mL/day: the mechanism does 24 (0.5 uL per 1.8 s).
    ({"basal": ((0, MG), (7 * 3600, 130 * MG)), "max_dose_24h_ng": 15 * MG}, "basal[1].rate_ng_per_day"),
    ({"basal": ((0, 16 * MG),), "max_dose_24h_ng": 15 * MG}, "basal"),  # over morphine's 15 mg/day
    ({"basal": ((0, 4 * MG),)}, "basal"),  # basal alone over the 3 mg hard limit
    ({"max_dose_24h_ng": 16 * MG}, "max_dose_24h_ng"),  # hard limit over the drug's maximum
    ({"basal": ((0, 0),), "max_dose_24h_ng": 0, "bolus": (0, 0, 0, 0)}, "max_dose_24h_ng"),
    ({"bolus": (3_500_000, 3_600, 3_600, 6)}, "bolus_dose_ng"),  # bolus over the hard limit
    ({"bolus": (1_000, 600, 3_600, 6)}, "bolus_dose_ng"),  # less than one stroke
    ({"bolus": (0, 600, 3_600, 6)}, "bolus_dose_ng"),  # bolus settings without a dose
    ({"bolus": (100_000, 30, 3_600, 6)}, "bolus_duration_s"),  # under a minute
    ({"bolus": (100_000, 7_200, 7_200, 6)}, "bolus_duration_s"),  # over an hour
    ({"bolus": (MG, 60, 3_600, 6)}, "bolus_duration_s"),  # 400 strokes in 60 s: beyond the mechanism
    ({"bolus": (100_000, 600, 600, 6)}, "bolus_lockout_s"),  # under 15 minutes
    ({"bolus": (100_000, 3_600, 1_800, 6)}, "bolus_lockout_s"),  # shorter than the bolus
    ({"bolus": (100_000, 600, 90_000, 6)}, "bolus_lockout_s"),  # over a day
    ({"bolus": (100_000, 600, 3_600, 0)}, "bolus_max_per_24h"),
    ({"bolus": (100_000, 600, 3_600, 49)}, "bolus_max_per_24h"),
    ({"low_reservoir_ul": 1_000}, "low_reservoir_ul"),  # not above the empty level
    ({"low_reservoir_ul": 20_000}, "low_reservoir_ul"),  # not below the capacity
]


@pytest.mark.req("SR-001", "SR-002")
def test_every_refused_prescription_changes_nothing_and_names_the_field(procs):
    pump = programmed(procs)
    before = snapshot(pump)
    assert before[0].state is TherapyState.RUNNING and before[1].present
    burst = FirmwareConfig().refusal_log_burst
    for i, (overrides, field) in enumerate(REFUSED_PROGRAMS):
        cmd = pump.next_id()
        with pytest.raises(Refused) as refused:
            pump.request(program_message(cmd, **{**BASE, **overrides}))
        nak = refused.value.nak
        assert (nak.reason, nak.field) == (NakReason.OUT_OF_RANGE, field), overrides
        assert nak.request_type == Program.TYPE and nak.detail, overrides
        status, rx, log = snapshot(pump)
        assert status == before[0], overrides
        assert rx == before[1], overrides
        new = [(e.event, e.arg0, e.arg1) for e in log[len(before[2]) :]]
        # Logged one by one within the refusal log's budget, counted beyond it (SR-056).
        assert new == ([(LogEvent.PROGRAM_REFUSED, cmd, NakReason.OUT_OF_RANGE)] if i < burst else [])
        assert log[: len(before[2])] == before[2]
        before = (status, rx, log)
    # The refusals beyond the budget are logged as one count when it comes back.
    pump.advance(FirmwareConfig().refusal_log_every_ms)
    counts = [(e.arg0, e.arg1) for e in pump.log(before[2][-1].seq + 1) if e.event is LogEvent.REFUSALS_SUMMARY]
    assert counts == [(LogEvent.PROGRAM_REFUSED, len(REFUSED_PROGRAMS) - burst)]
    # And the pump still takes a good one.
    pump.program(**{**BASE, "basal": ((0, 2 * MG),)})
    assert pump.prescription().basal[0].rate_ng_per_day == 2 * MG


@pytest.mark.req("SR-007")
def test_program_refused_in_the_wrong_state_changes_nothing(procs):
    """During a refill, or while a bolus is being given, programming is refused
    (WRONG_STATE): logged once as PROGRAM_REFUSED, nothing else changes."""
    pump = programmed(procs)
    assert pump.press().decision is BolusDecision.GRANTED
    for state in ("bolus", "refill"):
        if state == "refill":
            pump.request(RefillBegin(command_id=pump.next_id()))  # (ends the bolus)
        before = snapshot(pump)
        assert before[0].bolus_active if state == "bolus" else before[0].state is TherapyState.REFILL
        cmd = pump.next_id()
        with pytest.raises(Refused) as refused:
            pump.request(program_message(cmd, **{**BASE, "basal": ((0, 2 * MG),)}))
        assert refused.value.reason is NakReason.WRONG_STATE
        status, rx, log = snapshot(pump)
        assert (status, rx) == before[:2]
        assert [(e.event, e.arg0, e.arg1) for e in log[len(before[2]) :]] == [
            (LogEvent.PROGRAM_REFUSED, cmd, NakReason.WRONG_STATE)
        ]


# ============================================================ roles and link types


@pytest.mark.req("SR-027", "SR-028", "SR-036")
def test_roles_are_enforced(procs):
    pump = programmed(procs)
    before = snapshot(pump)
    clinician_only = [
        program_message(900, **BASE),
        Start(command_id=901),
        Stop(command_id=902),
        RefillBegin(command_id=903),
        AlarmAck(alarm=AlarmId.LOW_RESERVOIR),
        LogRead(from_seq=0, max_entries=8),
        ReadPrescription(),
    ]
    for msg in clinician_only:
        with pytest.raises(Refused) as refused:
            pump.request(msg, Role.PATIENT)
        assert refused.value.reason is NakReason.NOT_PERMITTED, type(msg).NAME
    with pytest.raises(Refused) as refused:
        pump.request(BolusRequest(command_id=904), Role.CLINICIAN)  # only the patient presses
    assert refused.value.reason is NakReason.NOT_PERMITTED
    # The sim key is for the emulator, never for the pump's controller.
    with pytest.raises(Refused) as refused:
        pump.request(Status(), Role.SIM)
    assert refused.value.reason is NakReason.AUTH_FAILED
    # Unsigned: refused too.
    nak = send_frame(pump.client, codec.encode(Status(), 4_321), 4_321)
    assert isinstance(nak, Nak) and nak.reason is NakReason.AUTH_FAILED
    # Anyone with a key may ask who and how the pump is.
    assert isinstance(pump.request(Hello(), Role.PATIENT), HelloAck)
    assert isinstance(pump.status(Role.PATIENT), StatusAck)
    status, rx, log = snapshot(pump)
    assert (status, rx) == before[:2]
    refused_log = [(e.event, e.arg0, e.arg1) for e in log[len(before[2]) :]]
    assert refused_log[: len(clinician_only) + 1] == [
        *((LogEvent.NOT_PERMITTED, Role.PATIENT, type(m).TYPE) for m in clinician_only),
        (LogEvent.NOT_PERMITTED, Role.CLINICIAN, BolusRequest.TYPE),
    ]
    assert {e for e, _, _ in refused_log[len(clinician_only) + 1 :]} == {LogEvent.AUTH_FAILED}


@pytest.mark.req("SR-031")
def test_pump_link_and_response_types_on_the_host_link_are_unknown(procs):
    """Pump-link messages (MOTOR_RUN above all) and responses sent as requests on the
    host link, signed with a valid key: UNKNOWN_TYPE, and nothing moves."""
    pump = programmed(procs, start=False)
    before = snapshot(pump)
    strokes = pump.truth().strokes_total
    tones = pump.truth().tones_total
    foreign = [
        MotorRun(run_id=1, strokes=64, interval_ms=1_800),
        WatchdogKick(),
        Beep(pattern=BeepPattern.TWO_TONE, repeat=3, repeat_interval_ms=1_000),
        SleepUntil(wake_at_ms=0),
        HostTx(frame=b"\x00"),
        PowerOn(reset_cause=ResetCause.POWER_UP, time_ms=0, rtc_s=0, boot_count=1, odometer_strokes=0),
        before[0],  # a STATUS_ACK
        BolusRequestAck(command_id=1, decision=BolusDecision.GRANTED, dose_ng=MG, duration_s=60, next_available_at_s=0),
    ]
    for msg in foreign:
        with pytest.raises(Refused) as refused:
            pump.request(msg, Role.CLINICIAN)
        assert refused.value.reason is NakReason.UNKNOWN_TYPE, type(msg).NAME
        assert refused.value.nak.request_type == type(msg).TYPE
    pump.advance(HOUR // 2)  # (within the hour after which a pump left stopped reminds: SR-050)
    gt = pump.truth()
    assert (gt.strokes_total, gt.tones_total) == (strokes, tones)
    status, rx, _ = snapshot(pump)
    assert status.state is TherapyState.STOPPED and rx == before[1]


# ============================================================ command ids


@pytest.mark.req("SR-012")
def test_duplicate_command_id_is_refused(procs):
    pump = programmed(procs, start=False)
    cmd = pump.next_id()
    assert pump.request(Start(command_id=cmd)).state is TherapyState.RUNNING
    for msg, role in ((Start(command_id=cmd), Role.CLINICIAN), (Stop(command_id=cmd), Role.CLINICIAN)):
        with pytest.raises(Refused) as refused:
            pump.request(msg, role)
        assert (refused.value.reason, refused.value.field) == (NakReason.WRONG_STATE, "command_id")
    assert pump.status().state is TherapyState.RUNNING  # the duplicate STOP did not stop it
    pump.advance(HOUR)
    cmd = pump.next_id()
    assert pump.request(BolusRequest(command_id=cmd), Role.PATIENT).decision is BolusDecision.GRANTED
    with pytest.raises(Refused) as refused:
        pump.request(BolusRequest(command_id=cmd), Role.PATIENT)
    assert (refused.value.reason, refused.value.field) == (NakReason.WRONG_STATE, "command_id")
    with pytest.raises(Refused) as refused:
        pump.request(BolusRequest(command_id=0), Role.PATIENT)
    assert (refused.value.reason, refused.value.field) == (NakReason.OUT_OF_RANGE, "command_id")
    assert pump.status().last_command_id == cmd


@pytest.mark.req("SR-012")
def test_lost_response_is_resolved_by_status_not_by_resending(procs):
    """The PTM's bolus request reaches the pump, the answer is lost. STATUS says the
    command was accepted (last_command_id) and the bolus is running; a blind resend with
    the same id is refused, so there is never a second bolus. The same for a program."""
    pump = programmed(procs)
    pump.advance(HOUR)
    gt0 = pump.truth()
    cmd = pump.next_id()
    lost = send_and_lose(pump.client, BolusRequest(command_id=cmd), Role.PATIENT)
    assert isinstance(lost, BolusRequestAck) and lost.decision is BolusDecision.GRANTED  # (never seen by the host)
    st = pump.status(Role.PATIENT)
    assert st.last_command_id == cmd and st.bolus_active and st.boluses_24h == 1
    with pytest.raises(Refused) as refused:
        pump.request(BolusRequest(command_id=cmd), Role.PATIENT)
    assert (refused.value.reason, refused.value.field) == (NakReason.WRONG_STATE, "command_id")
    again = pump.press()  # a deliberate new press is a new command: denied, not a second bolus
    assert again.decision is BolusDecision.BOLUS_IN_PROGRESS
    pump.advance(HOUR)
    gt = pump.truth()
    st = pump.status()
    assert st.boluses_24h == 1 and not st.bolus_active
    basal = MG * (gt.time_ms - gt0.time_ms) // DAY  # (03:00 to 04:00: 1 mg/day)
    assert abs(gt.delivered_ng - gt0.delivered_ng - basal - 100_000) <= STROKE_NG
    # A lost PROGRAM_ACK: STATUS and READ_PRESCRIPTION tell what happened.
    cmd = pump.next_id()
    send_and_lose(pump.client, program_message(cmd, **{**BASE, "basal": ((0, 2 * MG),)}), Role.CLINICIAN)
    assert pump.status().last_command_id == cmd
    assert pump.prescription().basal[0].rate_ng_per_day == 2 * MG
    with pytest.raises(Refused):
        pump.request(program_message(cmd, **{**BASE, "basal": ((0, 2 * MG),)}))
    accepted = [e for e in pump.log() if e.event is LogEvent.PROGRAM_ACCEPTED and e.arg0 == cmd]
    assert len(accepted) == 1
