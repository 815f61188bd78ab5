"""The firmware over real ptys: safety rules no other HIL module covers end to end.

Battery alarms from the pump's voltage, under-delivery when the reservoir runs dry
before the firmware's estimate says it should (a refill into the pocket), and a
clinician bolus held to the same rolling 24 h hard limit as everything else.
"""

from __future__ import annotations

import pytest

from protocol.codes import AlarmId, BeepPattern, Fault, Link, LogEvent, NakReason, Priority, TherapyState
from protocol.messages import ClinicianBolus, RefillBegin, RefillComplete, SimClearFault, SimInjectFault, SimRefill
from tests.harness import Procs, PumpHost, firmware_pump
from tools.client import Refused

MG = 1_000_000
CONC = 5 * MG
MINUTE = 60_000
HOUR = 3_600_000


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def running(procs, rate: int = 2 * MG, limit: int = 5 * MG, fill_nl: int = 12_000_000) -> PumpHost:
    pump = firmware_pump(procs)
    pump.fill(fill_nl, CONC)
    pump.program(basal=((0, rate),), max_dose_24h_ng=limit)
    pump.start()
    pump.advance(HOUR)
    return pump


def alarms(pump: PumpHost) -> dict[AlarmId, Priority]:
    return {a.alarm: a.priority for a in pump.status().alarms}


@pytest.mark.req("SR-024")
def test_battery_eri_is_a_medium_alarm_eos_a_high_one_that_halts(procs):
    pump = running(procs)
    pump.sim(SimInjectFault(fault=Fault.BATTERY_MV, link=Link.NONE, value=3_250, rate_ppm=0, seed=0))
    pump.advance(2 * HOUR)  # the firmware reads the battery on its own
    assert alarms(pump) == {AlarmId.BATTERY_ERI: Priority.MEDIUM}
    assert pump.status().state is TherapyState.RUNNING  # ERI warns; delivery goes on
    delivered = pump.truth().delivered_nl
    pump.sim(SimInjectFault(fault=Fault.BATTERY_MV, link=Link.NONE, value=3_050, rate_ppm=0, seed=0))
    pump.advance(2 * HOUR)
    st = pump.status()
    assert {a.alarm: a.priority for a in st.alarms}[AlarmId.BATTERY_EOS] is Priority.HIGH
    assert st.state is TherapyState.HALTED
    halted_at = pump.truth().delivered_nl
    pump.advance(2 * HOUR)
    assert pump.truth().delivered_nl == halted_at >= delivered
    assert BeepPattern.TWO_TONE in {t.pattern for t in pump.tones()}
    # A new battery: the condition clears, a clinician acknowledges, therapy resumes.
    pump.sim(SimClearFault(fault=Fault.BATTERY_MV))
    pump.advance(2 * HOUR)
    for a in (AlarmId.BATTERY_EOS, AlarmId.BATTERY_ERI):
        pump.ack(a)
    assert pump.status().state is TherapyState.RUNNING


@pytest.mark.req("SR-025")
def test_reservoir_running_dry_before_the_estimate_is_under_delivery_not_a_silent_stop(procs):
    """The reservoir was refilled into the pocket: the firmware believes 12 mL are there,
    but the reservoir holds 1.2 mL. When it runs dry the mechanism pushes nothing: the
    firmware must say so (delivery shortfall and empty reservoir, high priority, halted,
    two-tone), not go on believing it delivers."""
    pump = running(procs, rate=12 * MG, limit=14 * MG)
    gt = pump.truth()
    pump.request(RefillBegin(command_id=pump.next_id()))
    pump.sim(
        SimRefill(withdraw_nl=gt.reservoir_nl - 1_200_000, add_nl=0, concentration_ng_per_ml=CONC, into_pocket=False)
    )
    pump.request(
        RefillComplete(
            command_id=pump.next_id(),
            withdrawn_nl=gt.reservoir_nl - 1_200_000,
            added_nl=gt.reservoir_nl - 1_200_000,  # what the clinician believes went in
            drug="morphine",
            concentration_ng_per_ml=CONC,
        )
    )
    pump.advance(24 * HOUR)
    st = pump.status()
    held = {a.alarm for a in st.alarms}
    assert st.state is TherapyState.HALTED
    assert {AlarmId.DELIVERY_SHORTFALL, AlarmId.EMPTY_RESERVOIR} <= held
    assert any(e.event is LogEvent.DELIVERY_SHORTFALL for e in pump.log())
    assert BeepPattern.TWO_TONE in {t.pattern for t in pump.tones()}


@pytest.mark.req("SR-006")
def test_clinician_bolus_is_held_to_the_rolling_24h_hard_limit(procs):
    pump = running(procs, rate=2 * MG, limit=3 * MG)
    before = pump.status()
    with pytest.raises(Refused) as refused:
        pump.request(ClinicianBolus(command_id=pump.next_id(), dose_ng=1_500_000, duration_s=1_800))
    assert (refused.value.reason, refused.value.field) == (NakReason.OUT_OF_RANGE, "dose_ng")
    after = pump.status()
    assert (after.last_command_id, after.bolus_active) == (before.last_command_id, False)
    ack = pump.request(ClinicianBolus(command_id=pump.next_id(), dose_ng=500_000, duration_s=1_800))
    assert ack.volume_nl == 100_000
    pump.advance(24 * HOUR)
    gt = pump.truth()
    # basal (2 mg/day) + 0.5 mg in the first day: within 3 mg plus one stroke
    assert gt.delivered_ng <= 3 * MG + 2_500 + 2 * MG * HOUR // (24 * HOUR)
