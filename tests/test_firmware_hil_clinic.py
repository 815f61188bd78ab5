"""The firmware over real ptys, run as a clinic runs a pump (issue 12): commissioning a new
pump, and the other behaviours of a real implant the rig did not have. Delivery is
judged by the emulator's ground truth. Every test runs in-process or split
(`pytest --split`).
"""

from __future__ import annotations

import pytest

from protocol.codes import NakReason, TherapyState
from protocol.messages import Prime, RefillBegin, RefillComplete, SimRefill, Start
from protocol.schema import NONE_I32, NONE_U32
from tests.harness import Procs, firmware_pump
from tools.client import Refused

MG = 1_000_000
CONC = 5 * MG
HOUR = 3_600_000


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
