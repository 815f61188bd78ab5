"""The pytest plugin (tools/pytest_plugin.py) as another project's suite meets it: small
outside test suites run by pytester, with the plugin loaded from its `pytest11` entry
point as `pip install thecal` would have it.

Inner runs leave pytest-timeout out (-p no:timeout): its alarm would replace this
test's own. Scenario-file comparisons and load errors are tested in test_scenario.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools import pytest_plugin, scenario
from tools.decode import decode_capture

pytest_plugins = ["pytester"]

INNER = ("-p", "no:timeout", "-p", "no:cacheprovider")

FIXTURE_TESTS = """
import pytest
from protocol.codes import NakReason, Role
from protocol.messages import Program, BasalStep
from tools.client import Refused

RX = dict(drug="morphine", concentration_ng_per_ml=5_000_000, basal=(BasalStep(0, 1_000_000),),
          bolus_dose_ng=0, bolus_duration_s=0, bolus_lockout_s=0, bolus_max_per_24h=0,
          max_dose_24h_ng=3_000_000, low_reservoir_ul=2_000, catheter_volume_nl=200_000,
          timed_bolus=())

SEEN = []

@pytest.mark.parametrize("n", [1, 2])
def test_each_test_gets_a_fresh_pump(thecal_pump, n):
    assert thecal_pump.now_ms() == 0  # the other test advanced its own pump
    assert thecal_pump.state_dir not in SEEN and thecal_pump.capture.parent not in SEEN
    SEEN.extend([thecal_pump.state_dir, thecal_pump.capture.parent])
    thecal_pump.sim.advance(3_600_000)
    assert thecal_pump.now_ms() == 3_600_000

def test_roles(thecal_pump, thecal_clinician, thecal_patient, thecal_sim):
    assert thecal_clinician.client is thecal_patient.client is thecal_sim is thecal_pump.client
    with pytest.raises(Refused) as e:
        thecal_patient.program(Program(command_id=thecal_patient.next_command_id(), **RX))
    assert e.value.reason is NakReason.NOT_PERMITTED
    thecal_pump.record_fill()
    thecal_clinician.program(Program(command_id=thecal_clinician.next_command_id(), **RX))
    thecal_clinician.start()
    assert thecal_patient.status().state.name == "RUNNING"
    assert thecal_pump.client.role is Role.CLINICIAN  # a view lends its role for the call only
    thecal_sim.advance(86_400_000)
    assert 900_000 <= thecal_sim.ground_truth().delivered_ng <= 1_100_000

def test_attach(thecal_pump):
    watcher = thecal_pump.attach()  # another program, on the emulator's host socket
    thecal_pump.record_fill()  # through the main client: stopped -> refill -> stopped
    seen = [e.new_state.name for e in watcher.iter_events(2.0) if type(e).__name__ == "TherapyStateChanged"]
    assert seen[-2:] == ["REFILL", "STOPPED"]
    assert watcher.status().reservoir_nl == thecal_pump.truth().reservoir_nl

@pytest.mark.thecal_model(reservoir_capacity_ul=40_000, initial_fill_ul=30_000)
@pytest.mark.thecal_seed(5)
def test_the_model_marker(thecal_pump):
    assert thecal_pump.clinician.hello().reservoir_capacity_ul == 40_000
    assert thecal_pump.truth().reservoir_nl == 30_000_000
    assert thecal_pump.model.reservoir_capacity_ul == 40_000

@pytest.mark.thecal_model(no_such_figure=1)
def test_a_bad_model_figure(thecal_pump):
    pass

def test_no_pump_unless_asked(request):
    assert "thecal_pump" not in request.fixturenames
"""

FAILING_TEST = """
def test_the_patient_presses(thecal_pump):
    thecal_pump.sim.advance(600_000)
    ack = thecal_pump.patient.bolus()
    assert ack.decision.name == "GRANTED", "a pump with no therapy grants nothing"
"""

SPLIT_TEST = """
def test_split(thecal_pump, pytestconfig):
    assert thecal_pump.split is pytestconfig.getoption("thecal_split")
    assert len(thecal_pump.processes()) == (2 if thecal_pump.split else 1)
    assert thecal_pump.truth().controller_alive
    thecal_pump.record_fill()
    assert thecal_pump.clinician.status().reservoir_nl == 12_000_000
"""

SCENARIO = """
name = "a wrong expectation"
fill = "12 mL"

[program]
drug = "morphine"
concentration = "5 mg/mL"
[[program.basal]]
start = "00:00"
rate = "1 mg/day"
[program.patient_bolus]
dose = "0.1 mg"
duration = "10min"
lockout = "2h"
max_per_24h = 6
[program.limits]
max_dose_24h = "3 mg"

[[step]]
at = "0s"
action = "bolus"
expect = { granted = false, reason = "lockout" }

[[step]]
at = "1h 30min"
note = "the engineer got the lockout wrong"
action = "bolus"
expect = { granted = true }
expect_status = { state = "running", boluses_24h = 1 }
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*INNER, *args)


def test_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outside=FIXTURE_TESTS)
    result = run(pytester, "-q")
    result.assert_outcomes(passed=6, errors=1)
    # A figure the pump model does not know is the test's error, named, without a traceback.
    result.stdout.fnmatch_lines(["*ERROR at setup of test_a_bad_model_figure*"])
    result.stdout.fnmatch_lines(["*@pytest.mark.thecal_model: pump model: unknown key 'no_such_figure'*"])


def test_a_failing_test_reports_its_capture_and_decoded_traffic(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fails=FAILING_TEST)
    result = run(pytester, "--thecal-report-frames", "4")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    m = re.search(r"^capture: (\S+\.pcap)$", out, re.MULTILINE)
    assert m, out
    capture = Path(m.group(1))
    assert "thecal capture" in out and "the last 4 host-link frames:" in out
    # The decoded tail is the test's last exchange: the press and the pump's denial.
    assert re.search(r"host->pump +\d+ +BOLUS_REQUEST +patient#\d+ +command_id=\d+", out), out
    assert re.search(r"pump->host +\d+ +BOLUS_REQUEST_ACK .*decision=NOT_RUNNING", out), out
    # The emulator was stopped cleanly before the report: the capture is whole, and its
    # host-link frames end with that denial.
    frames = decode_capture(capture)
    assert frames and all(f.ok for f in frames)
    assert [f.name for f in frames if f.link == 1][-1] == "BOLUS_REQUEST_ACK"
    assert "thecal emulator stderr" not in out  # nothing went wrong in the emulator


def test_a_passing_test_gets_no_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fails=FAILING_TEST.replace('"GRANTED"', '"NOT_RUNNING"'))
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=1)
    assert "thecal capture" not in result.stdout.str()


def test_split_mode_runs_the_firmware_in_its_own_process(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_split=SPLIT_TEST)
    run(pytester, "--thecal-split").assert_outcomes(passed=1)
    run(pytester).assert_outcomes(passed=1)


def test_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outside=FIXTURE_TESTS.replace("@pytest.mark.thecal_model(no_such_figure=1)\n", ""))
    result = pytester.runpytest_subprocess(*INNER, "-p", "xdist", "-n", "2")
    # Two workers, each starting pumps in its own tmp_path: all six pass, none collide.
    result.assert_outcomes(passed=7)


def test_scenario_files_are_collected_and_a_failure_names_step_time_expected_and_actual(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(".scenario.toml", wrong=SCENARIO)
    pytester.makefile(".toml", unrelated="x = 1")  # only *.scenario.toml are scenarios
    result = run(pytester, "-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*wrong.scenario.toml::wrong FAILED*"])
    out = result.stdout.str()
    assert "scenario 'a wrong expectation'" in out
    assert "step 2 at 1h 30min (the engineer got the lockout wrong): `bolus`" in out
    assert "expect.granted: expected true, got false" in out
    assert "expect_status.boluses_24h: expected 1, got 0" in out
    assert '"reason": "lockout"' in out  # the whole result is shown
    assert "Traceback" not in out and "tools/scenario.py" not in out
    assert "thecal capture" in out and "BOLUS_REQUEST_ACK" in out


def test_a_fixed_scenario_passes(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scenario.toml", right=SCENARIO.replace('"1h 30min"', '"2h"'))
    run(pytester).assert_outcomes(passed=1)


def test_a_malformed_scenario_is_a_collection_error_naming_file_step_and_key(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scenario.toml", bad=SCENARIO.replace("boluses_24h = 1", "boluses = 1"))
    result = run(pytester)
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "ERROR collecting bad.scenario.toml" in out
    assert re.search(r"bad scenario: \S*bad\.scenario\.toml: step 2: expect_status\.boluses: unknown key", out), out
    assert "Traceback" not in out


def test_loading_the_plugin_leaves_thecal_unimported() -> None:
    """Every pytest run where Thecal is installed loads the plugin: it must stay cheap
    until a fixture or a scenario file needs the pump."""
    code = (
        "import sys, tools.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tools', 'protocol', 'emulator', 'firmware')))"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['tools', 'tools.pytest_plugin']"
    assert pytest_plugin.SCENARIO_SUFFIX == scenario.SUFFIX
