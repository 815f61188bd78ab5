"""The firmware over real ptys, run as a clinic runs a pump (issue 12): commissioning a new
pump, and the other behaviours of a real implant the rig did not have. Delivery is
judged by the emulator's ground truth. Every test runs in-process or split
(`pytest --split`).
"""

from __future__ import annotations

import pytest

from protocol.codes import BolusKind, BolusOutcome, CatheterState, Fault, Link, NakReason, TherapyState
from protocol.messages import (
    BolusFinished,
    Prime,
    RefillBegin,
    RefillComplete,
    SimInjectFault,
    SimPowerCycle,
    SimRefill,
    Start,
)
from protocol.schema import NONE_I32, NONE_U32
from tests.harness import Procs, PumpHost, firmware_pump
from tools.client import Refused

MG = 1_000_000
CONC = 5 * MG
HOUR = 3_600_000
STROKE_NG = 500 * CONC // 1_000_000  # 0.5 uL a stroke


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


@pytest.mark.req("SR-046")
def test_bug_a_new_pump_alarmed_and_halted_when_programmed_before_its_fill_was_recorded(procs):
    """Bug: on a pump never filled the firmware took its reservoir for empty: programming
    it raised the low-reservoir and empty-reservoir alarms (the empty one high: halted,
    two-tone), and recording the factory fill then raised a refill discrepancy of the
    whole fill. The README's first steps (program, fill, start) sounded alarms nobody
    caused. Now the reservoir is not known until a fill is recorded: no alarm, START and
    PRIME say to record the fill, and the first fill is the initial fill."""
    pump = firmware_pump(procs)
    pump.program(basal=((0, 2 * MG),))
    assert pump.truth().tones_total == 0  # by the pump's own beeper: nothing sounded
    st = pump.status()
    assert (st.state, st.alarms, st.reservoir_nl) == (TherapyState.STOPPED, (), NONE_U32)
    for request in (Start(command_id=pump.next_id()), Prime(command_id=pump.next_id(), volume_nl=10_000)):
        with pytest.raises(Refused) as refused:
            pump.request(request)
        assert refused.value.reason is NakReason.WRONG_STATE and "record the fill" in refused.value.nak.detail
    pump.advance(HOUR)
    assert pump.truth().delivered_nl == 0
    # The initial fill: the factory's fluid drawn out, 12 mL in. Nothing to compare with.
    begun = pump.request(RefillBegin(command_id=pump.next_id()))
    assert begun.expected_reservoir_nl == NONE_U32
    drawn = pump.sim(
        SimRefill(withdraw_nl=20_000_000, add_nl=12_000_000, concentration_ng_per_ml=CONC, into_pocket=False)
    )
    done = pump.request(
        RefillComplete(
            command_id=pump.next_id(),
            withdrawn_nl=drawn.withdrawn_nl,
            added_nl=12_000_000,
            drug="morphine",
            concentration_ng_per_ml=CONC,
        )
    )
    assert (done.discrepancy_nl, done.reservoir_nl) == (NONE_I32, 12_000_000)
    pump.start()
    pump.advance(HOUR)
    assert pump.truth().tones_total == 0
    st = pump.status()
    assert (st.state, st.alarms, st.reservoir_nl) == (TherapyState.RUNNING, (), 12_000_000 - pump.truth().delivered_nl)
    assert pump.truth().delivered_ng > 0


@pytest.mark.req("SR-047")
def test_a_basal_step_below_the_pumps_minimum_flow_is_refused_naming_the_step_and_the_minimum(procs):
    """The pump delivers no slower than 0.048 mL/day (SynchroMed II): a step below it, 0
    included, is refused and changes nothing; a step exactly at it runs, by ground truth."""
    pump = firmware_pump(procs)
    pump.fill(12_000_000, CONC)
    least = 48_000 * CONC // 1_000_000  # 0.24 mg/day at 5 mg/mL
    for rate in (least - 1, 0):
        with pytest.raises(Refused) as refused:
            pump.program(basal=((0, MG), (12 * 3_600, rate)))
        assert (refused.value.reason, refused.value.field) == (NakReason.OUT_OF_RANGE, "basal[1].rate_ng_per_day")
        assert "minimum flow 0.048 mL/day" in refused.value.nak.detail and "0.24 mg/day" in refused.value.nak.detail
    assert not pump.prescription().present
    pump.program(basal=((0, least),), max_dose_24h_ng=MG)
    pump.start()
    pump.advance(24 * HOUR)
    assert abs(pump.truth().delivered_ng - least) <= 2_500  # a day at the minimum, within a stroke


def stopped_pump(procs: Procs, **rx: object) -> PumpHost:
    """Filled with 12 mL of morphine 5 mg/mL, programmed 2 mg/day, hard limit 3 mg, and
    left stopped."""
    pump = firmware_pump(procs)
    pump.fill(12_000_000, CONC)
    pump.program(**{"basal": ((0, 2 * MG),), "max_dose_24h_ng": 3 * MG, **rx})
    return pump


def finished(pump: PumpHost) -> list[BolusFinished]:
    return [e for e in pump.events(BolusFinished) if e.kind is BolusKind.CLINICIAN]


@pytest.mark.req("SR-048")
def test_a_clinician_bolus_while_stopped_is_a_single_bolus_delivered_then_the_pump_stays_stopped(procs):
    """SynchroMed's single bolus: ordered while stopped, it is delivered (by ground truth,
    within a stroke) and the pump stays stopped: no basal before, during or after it."""
    pump = stopped_pump(procs)
    pump.advance(HOUR // 2)  # (within the hour after which a pump left stopped reminds: SR-050)
    assert pump.truth().delivered_nl == 0
    ack = pump.client.clinician_bolus(MG // 2, 600)
    assert ack.volume_nl == 100_000
    st = pump.status()
    assert (st.state, st.bolus_active) == (TherapyState.STOPPED, True)
    pump.advance(11 * 60_000)
    assert abs(pump.truth().delivered_ng - MG // 2) <= STROKE_NG
    st = pump.status()
    assert (st.state, st.bolus_active, st.alarms) == (TherapyState.STOPPED, False, ())
    assert [(f.outcome, f.delivered_nl) for f in finished(pump)] == [(BolusOutcome.COMPLETED, 100_000)]
    after = pump.truth().delivered_ng
    pump.advance(6 * HOUR)
    assert pump.truth().delivered_ng == after  # stopped: no basal
    assert pump.status().dose_24h_ng == after  # and it counts toward the rolling 24 h


@pytest.mark.req("SR-048", "SR-006")
def test_a_single_bolus_cannot_get_round_the_24h_hard_limit(procs):
    """Attack: single boluses one after another while stopped, each within the hard
    limit, add up in the rolling 24 h like any drug; the one that would break it is
    refused and changes nothing. The basal the pump would give once started counts too."""
    pump = stopped_pump(procs)
    pump.client.clinician_bolus(MG // 2, 600)
    pump.advance(11 * 60_000)
    # 0.5 mg given, and 2 mg/day of basal projected from now: 0.5 mg more fits, 1 mg does not.
    with pytest.raises(Refused) as refused:
        pump.client.clinician_bolus(MG, 1_800)
    assert (refused.value.reason, refused.value.field) == (NakReason.OUT_OF_RANGE, "dose_ng")
    assert "24 h" in refused.value.nak.detail
    pump.client.clinician_bolus(MG // 4, 600)
    pump.advance(11 * 60_000)
    gt = pump.truth()
    assert abs(gt.delivered_ng - 3 * MG // 4) <= 2 * STROKE_NG
    with pytest.raises(Refused):
        pump.client.clinician_bolus(3 * MG, 3_600)  # the whole hard limit at once
    pump.advance(HOUR)
    assert pump.truth().delivered_ng == gt.delivered_ng
    assert pump.status().state is TherapyState.STOPPED


@pytest.mark.req("SR-048")
def test_stop_ends_a_single_bolus_and_a_reset_does_not_resume_it(procs):
    """Attack: a single bolus stopped part-way delivers no more (by ground truth) and
    the pump stays stopped; a power cycle in the middle of the next one abandons it, and
    the restarted pump neither finishes it nor starts basal."""
    pump = stopped_pump(procs)
    pump.client.clinician_bolus(MG // 2, 600)
    pump.advance(5 * 60_000)
    part = pump.truth().delivered_ng
    assert 0 < part < MG // 2
    pump.client.stop()
    st = pump.status()
    assert (st.state, st.bolus_active) == (TherapyState.STOPPED, False)
    assert [f.outcome for f in finished(pump)] == [BolusOutcome.STOPPED]
    pump.advance(HOUR)
    assert pump.truth().delivered_ng == part
    # A STOP with nothing to stop is still a wrong state.
    with pytest.raises(Refused) as refused:
        pump.client.stop()
    assert refused.value.reason is NakReason.WRONG_STATE
    pump.client.clinician_bolus(MG // 4, 600)
    pump.advance(2 * 60_000)
    pump.sim(SimPowerCycle(off_ms=60_000))
    pump.advance(HOUR)
    mid = pump.truth().delivered_ng
    pump.advance(6 * HOUR)
    assert pump.truth().delivered_ng == mid
    st = pump.status()
    assert (st.state, st.bolus_active) == (TherapyState.STOPPED, False)
    assert mid - part < MG // 4


@pytest.mark.req("SR-048", "SR-020")
def test_a_single_bolus_is_refused_while_a_high_alarm_stands(procs):
    """Attack: a stopped pump holding a high-priority alarm (an occlusion while it ran,
    then stopped by the clinician) may not be made to deliver by a single bolus."""
    pump = stopped_pump(procs)
    pump.start()
    pump.sim(SimInjectFault(fault=Fault.OCCLUSION, link=Link.NONE, value=0, rate_ppm=0, seed=0))
    pump.advance(2 * HOUR)
    assert pump.status().state is TherapyState.HALTED
    with pytest.raises(Refused) as refused:
        pump.client.clinician_bolus(MG // 4, 600)
    assert refused.value.reason is NakReason.WRONG_STATE
    pump.client.stop()
    assert pump.status().state is TherapyState.STOPPED
    before = pump.truth()
    with pytest.raises(Refused) as refused:
        pump.client.clinician_bolus(MG // 4, 600)
    assert refused.value.reason is NakReason.WRONG_STATE and "high-priority alarm" in refused.value.nak.detail
    pump.advance(HOUR)
    assert pump.truth().strokes_total == before.strokes_total


def revised_pump(procs: Procs) -> PumpHost:
    """A stopped pump (as stopped_pump) whose catheter a surgeon has just replaced with an
    empty 0.2 mL one, and the clinician has said so."""
    pump = stopped_pump(procs)
    assert pump.client.replace_catheter(200_000) == 200_000
    ack = pump.client.catheter_replaced()
    assert (ack.catheter_state, ack.catheter_volume_nl) == (CatheterState.EMPTY, 200_000)
    return pump


@pytest.mark.req("SR-049")
def test_priming_a_replaced_catheter_up_to_its_volume_is_no_drug_and_beyond_it_is(procs):
    """After revision surgery the new catheter is empty: priming fills it before any drug
    reaches the tip. The firmware counts nothing for that part and the 24 h total for the
    rest, as ground truth measures it. Until primed, START and a bolus are refused."""
    pump = revised_pump(procs)
    st = pump.status()
    assert (st.catheter_state, st.catheter_volume_nl) == (CatheterState.EMPTY, 200_000)
    for request in (lambda: pump.start(), lambda: pump.client.clinician_bolus(MG // 10, 600)):
        with pytest.raises(Refused) as refused:
            request()
        assert "catheter is empty" in refused.value.nak.detail
    pump.client.prime(150_000)  # three quarters of it: no drug out yet
    pump.advance(10 * 60_000)
    assert pump.truth().delivered_ng == 0 and pump.status().dose_24h_ng == 0
    assert pump.status().catheter_state is CatheterState.EMPTY
    pump.client.prime(100_000)  # the last 50 uL fill it, then 50 uL of drug out: 0.25 mg
    pump.advance(10 * 60_000)
    gt, st = pump.truth(), pump.status()
    assert abs(gt.delivered_ng - MG // 4) <= STROKE_NG
    assert abs(st.dose_24h_ng - gt.delivered_ng) <= STROKE_NG
    assert st.catheter_state is CatheterState.PRIMED
    pump.start()
    pump.advance(HOUR)
    assert pump.truth().delivered_ng > gt.delivered_ng  # basal reaches the patient at once


@pytest.mark.req("SR-049", "SR-040")
def test_priming_beyond_an_empty_catheter_counts_and_is_refused_at_the_hard_limit(procs):
    """Attack: prime the most PRIME allows (twice the catheter) again and again after a
    revision. Only the first catheter volume is free of drug; the rest counts, and the
    prime that would break the 3 mg hard limit is refused. Ground truth stays within it."""
    pump = revised_pump(procs)
    refused = 0
    for _ in range(4):
        try:
            pump.client.prime(400_000)
        except Refused as e:
            assert (e.reason, e.field) == (NakReason.OUT_OF_RANGE, "volume_nl") and "hard limit" in e.nak.detail
            refused += 1
        pump.advance(30 * 60_000)
    gt = pump.truth()
    assert refused >= 1
    assert gt.delivered_ng <= 3 * MG + STROKE_NG
    assert abs(pump.status().dose_24h_ng - gt.delivered_ng) <= STROKE_NG


@pytest.mark.req("SR-049")
def test_a_reset_while_priming_an_empty_catheter_keeps_what_it_holds(procs):
    """Attack: a power cycle part-way through priming a new catheter. The restarted
    firmware still knows the catheter is part-filled (NVM), so the next prime counts the
    drug it pushes out of the tip exactly as ground truth sees it: nothing is counted
    free twice."""
    pump = revised_pump(procs)
    pump.client.prime(300_000)
    pump.advance(60_000)  # part of it
    pump.sim(SimPowerCycle(off_ms=1_000))
    pump.advance(60_000)
    st = pump.status()
    assert (st.state, st.bolus_active) == (TherapyState.STOPPED, False)
    assert st.catheter_state is CatheterState.EMPTY
    pump.client.prime(400_000)
    pump.advance(30 * 60_000)
    gt, st = pump.truth(), pump.status()
    assert gt.delivered_ng > 0 and st.catheter_state is CatheterState.PRIMED
    # The abandoned prime's planned drug (its last 100 uL beyond the catheter: 0.5 mg)
    # counts in full (SR-011); beyond that, the firmware counts what ground truth saw.
    assert abs(st.dose_24h_ng - MG // 2 - gt.delivered_ng) <= STROKE_NG


@pytest.mark.req("SR-049")
def test_a_catheter_whose_contents_are_unknown_counts_priming_as_drug(procs):
    """The catheter's volume changed in a program (or was never entered): its contents are
    unknown, so priming counts as drug even where ground truth says none came out. No
    volume at all: no priming (the pump cannot know how much it takes)."""
    pump = revised_pump(procs)
    pump.client.prime(100_000)
    pump.advance(10 * 60_000)
    pump.program(basal=((0, 2 * MG),), max_dose_24h_ng=3 * MG, catheter_volume_nl=180_000)
    assert pump.status().catheter_state is CatheterState.UNKNOWN
    pump.client.prime(50_000)
    pump.advance(10 * 60_000)
    assert pump.truth().delivered_ng == 0  # the fluid is still filling the new catheter
    assert pump.status().dose_24h_ng == MG // 4  # counted as drug: what it holds is not known
    pump.program(basal=((0, 2 * MG),), max_dose_24h_ng=3 * MG, catheter_volume_nl=0)
    with pytest.raises(Refused) as refused:
        pump.client.prime(50_000)
    assert "catheter's volume" in refused.value.nak.detail


@pytest.mark.req("SR-049")
def test_declaring_the_catheter_replaced_again_within_a_day_is_refused(procs):
    """Attack: the firmware cannot check a declaration, and each lets up to the
    catheter's volume through uncounted. Declared again at once (no surgery), then primed:
    the second declaration is refused, and the priming counts as the drug it is, by
    ground truth. A day later a real second revision can be declared."""
    pump = revised_pump(procs)
    pump.client.prime(200_000)  # fills the new catheter: no drug out
    pump.advance(15 * 60_000)
    assert pump.truth().delivered_ng == 0
    with pytest.raises(Refused) as refused:
        pump.client.catheter_replaced()
    assert refused.value.reason is NakReason.WRONG_STATE and "24 h" in refused.value.nak.detail
    pump.client.prime(100_000)  # 0.5 mg of drug out of the primed catheter
    pump.advance(15 * 60_000)
    gt, st = pump.truth(), pump.status()
    assert abs(gt.delivered_ng - MG // 2) <= STROKE_NG and abs(st.dose_24h_ng - gt.delivered_ng) <= STROKE_NG
    pump.advance(24 * HOUR)
    pump.client.replace_catheter()
    assert pump.client.catheter_replaced().catheter_state is CatheterState.EMPTY
