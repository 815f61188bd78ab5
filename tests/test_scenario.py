"""Scenario files (tools/scenario.py): what a malformed file says at load time, how
expected values compare, and that each action's result keys are those the CLI gives.

The shipped examples (examples/scenarios/) run as tests of their own: testpaths holds
that directory, and the plugin (tools/pytest_plugin.py) collects them.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from tools.hil import start_pump
from tools.scenario import (
    ScenarioError,
    _compile,
    load_scenario,
    parse_time_ms,
    run_action,
    status_keys,
    truth_keys,
)
from tools.units import UnitError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "scenarios"

PROGRAM = """
[program]
drug = "morphine"
concentration = "5 mg/mL"
[[program.basal]]
start = "00:00"
rate = "1 mg/day"
[program.limits]
max_dose_24h = "3 mg"
"""


def write(tmp_path: Path, text: str, name: str = "case.scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    return info.value


# ---------------------------------------------------------------- the shipped examples


@pytest.mark.parametrize("name", ["lockout", "low_reservoir", "occlusion"])
def test_the_shipped_examples_load(name: str) -> None:
    s = load_scenario(EXAMPLES / f"{name}.scenario.toml")
    assert s.steps and s.program is not None and s.start
    times = [step.at_ms for step in s.steps]
    assert times == sorted(times)


def test_a_scenario_reads_its_set_up_and_timeline(tmp_path: Path) -> None:
    (tmp_path / "therapy.toml").write_text((REPO / "examples" / "morphine.toml").read_text())
    s = load_scenario(
        write(
            tmp_path,
            """
name = "x"
program = "therapy.toml"
fill = "3 mL"
seed = 4
[pump_model]
stroke_nl = 250
[[step]]
at = "1h 30min"
action = "bolus"
[[step]]
after = "10min"
action = 'clinician-bolus "0.1 mg" --duration 5min'
[[step]]
expect_status = { state = "running" }
""",
        )
    )
    assert s.program.drug == "morphine" and s.fill_ul == 3_000 and s.seed == 4 and s.start
    # The fill is the pump's physical fill at implant, of the programmed concentration.
    assert s.model == {"stroke_nl": 250, "initial_fill_ul": 3_000, "initial_concentration_ng_per_ml": 5_000_000}
    assert [st.at_ms for st in s.steps] == [5_400_000, 6_000_000, 6_000_000]
    assert s.steps[1].action.command == "clinician-bolus"
    assert (s.steps[1].action.args.dose, s.steps[1].action.args.duration) == (100_000, 300)
    assert s.steps[0].action.args.role == "patient"  # as `thecal bolus` signs


# ---------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("nmae = 'x'\n[[step]]\naction = 'status'", "nmae", "unknown key"),
        ("[[step]]\nat = '1 hour and a bit'\naction = 'status'", "step 1: at", "duration '1 hour and a bit'"),
        ("[[step]]\nat = '10 mins'\naction = 'status'\n[[step]]\nat = '2 min'\naction='status'", "step 2: at", "back"),
        ("[[step]]\nat = '1h'\nwhen = '2h'\naction = 'status'", "step 1: when", "unknown key"),
        ("[[step]]\nat = '1h'\nafter = '2h'\naction = 'status'", "step 1", "not both"),
        ("[[step]]\nat = '1h'", "step 1", "does nothing"),
        ("[[step]]\nexpect_status = { stat = 'running' }", "step 1: expect_status.stat", "unknown key"),
        (
            "[[step]]\nexpect_status = { state = 'runing' }",
            "step 1: expect_status.state",
            "state 'runing' is unknown; one of: boot, stopped, running",
        ),
        (
            "[[step]]\nexpect_status = { alarms = { contains = ['occlussion'] } }",
            "step 1: expect_status.alarms.contains[0]",
            "id 'occlussion' is unknown",
        ),
        (
            "[[step]]\nexpect_status = { alarms = [{ id = 'occlusion', level = 'high' }] }",
            "step 1: expect_status.alarms[0].level",
            "unknown key",
        ),
        (
            "[[step]]\nexpect_status = { reservoir_ul = { atleast = 3 } }",
            "step 1: expect_status.reservoir_ul.atleast",
            "unknown check",
        ),
        ("[[step]]\nexpect_status = { reservoir_ul = '2 mLs' }", "step 1: expect_status.reservoir_ul", "unknown unit"),
        ("[[step]]\nexpect_status = { boluses_24h = '2 mL' }", "step 1: expect_status.boluses_24h", "plain number"),
        ("[[step]]\nexpect_truth = { delivered = 3 }", "step 1: expect_truth.delivered", "delivered_nl"),
        (
            "[[step]]\nexpect_log = { contains = [{ type = 'alarm_raised', decision = 'lockout' }] }",
            "step 1: expect_log.contains[0].decision",
            "a alarm_raised entry has",
        ),
        ("[[step]]\nexpect_log = { since = 'yesterday', count = 0 }", "step 1: expect_log.since", "previous_step"),
        ("[[step]]\naction = 'bolsu'", "step 1: action", "invalid choice"),
        ("[[step]]\naction = 'clinician-bolus 0.1mgg'", "step 1: action", "unknown unit 'mgg'"),
        ("[[step]]\naction = 'sim advance 1h'", "step 1: action", "`at`"),
        ("[[step]]\naction = 'status --port /dev/pts/9'", "step 1: action", "--port is not for scenarios"),
        ("[[step]]\naction = 'demo'", "step 1: action", "not a pump command"),
        ("[[step]]\naction = 'program missing.toml'", "step 1: action", "missing.toml"),
        ("[[step]]\naction = 'bolus'\nexpect = { grantd = true }", "step 1: expect.grantd", "granted"),
        ("[[step]]\nexpect = { granted = true }", "step 1: expect", "give the step an action"),
        ("[[step]]\naction = 'status'\nexpect = { state = 'running' }\n[step.x]\ny = 1", "step 1: x", "unknown key"),
        ("fill = '3 litres'\n[[step]]\naction = 'status'", "fill", "unknown unit"),
        ("[pump_model]\nstroke_ul = 1\n[[step]]\naction = 'status'", "pump_model", "unknown key 'stroke_ul'"),
        ("start = true\n[[step]]\naction = 'status'", "start", "needs a program"),
        ("program = 'nowhere.toml'\n[[step]]\naction = 'status'", "program", "nowhere.toml"),
        ("name = 'no steps'", "step", "at least one [[step]]"),
    ],
)
def test_a_malformed_scenario_names_the_step_and_key(tmp_path: Path, text: str, where: str, says: str) -> None:
    e = error_of(tmp_path, text)
    assert e.where == where, str(e)
    assert says in e.message, str(e)
    assert str(e).startswith(f"{tmp_path / 'case.scenario.toml'}: {where}: ")


def test_a_bad_inline_program_names_its_field(tmp_path: Path) -> None:
    e = error_of(tmp_path, PROGRAM.replace("1 mg/day", "1 mg/fortnight") + "[[step]]\naction = 'status'")
    assert e.where == "program.basal[0].rate" and "unknown unit" in e.message


def test_invalid_toml_and_a_missing_file_name_the_file(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[[step]\n")
    assert "not valid TOML" in str(e) and "case.scenario.toml" in str(e)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "absent.scenario.toml")


# ---------------------------------------------------------------- comparisons


def check(key: str, expected: object, actual: object) -> str | None:
    return _compile(expected, key, "x").check(actual)


def test_numbers_compare_exactly_with_units_read_by_the_key_name() -> None:
    assert check("reservoir_ul", "2 mL", 2000) is None
    assert check("reservoir_ul", "0.1 uL", 0.1) is None  # the CLI's float for 100 nL is 1/10 exactly
    assert check("reservoir_ul", "2 mL", 2000.5) == "got 2000.5"
    assert check("time_s", "1h 30min", 5400) is None
    assert check("time_ms", "1.5s", 1500) is None
    assert check("delivered_ng", {"min": "0.1 mg", "max": "0.2 mg"}, 150_000) is None
    assert check("delivered_ng", {"min": "0.1 mg"}, 99_999) == "got 99999"
    assert check("concentration_ug_per_ml", "5 mg/mL", 5000) is None
    assert check("discrepancy_ul", {"min": "-0.5 mL"}, -400) is None
    # 1 is not true, and "1" is not 1: types count.
    assert check("bolus_active", True, 1) is not None
    assert check("boluses_24h", 1, True) is not None
    assert check("boluses_24h", 1, "1") is not None


def test_lists_null_and_the_other_checks() -> None:
    alarms = [{"id": "occlusion", "priority": "high", "acknowledged": False}]
    assert check("alarms", ["occlusion"], alarms) is None
    assert check("alarms", [], alarms) is not None
    assert check("alarms", [{"id": "occlusion", "acknowledged": True}], alarms) is not None
    assert check("alarms", {"contains": [{"priority": "high"}], "count": 1}, alarms) is None
    assert "no item is" in check("alarms", {"contains": ["low_reservoir"]}, alarms)
    assert check("alarms", {"excludes": ["occlusion"]}, alarms).startswith("found")
    assert check("alarms", {"count": {"max": 0}}, alarms) is not None
    assert check("low_reservoir_at_s", {"none": True}, None) is None
    assert check("low_reservoir_at_s", {"none": True}, 0) == "got 0"
    assert check("state", {"one_of": ["running", "halted"]}, "halted") is None
    assert check("state", {"not": "halted"}, "halted") == 'got "halted"'


def test_compound_durations_add_up_and_a_bad_part_is_named() -> None:
    assert parse_time_ms("2d 3h 30min") == (2 * 24 * 60 + 3 * 60 + 30) * 60_000
    assert parse_time_ms("1h30min") == 5_400_000
    with pytest.raises(UnitError, match="in '3x': unknown unit 'x'"):
        parse_time_ms("1h 3x")
    with pytest.raises(UnitError):
        parse_time_ms("1h 30")
    assert Fraction(parse_time_ms("250ms")) == 250


# ---------------------------------------------------------------- actions on a live pump


def test_every_action_gives_the_keys_its_expectations_are_checked_against(tmp_path: Path) -> None:
    """The result-key table in tools/scenario.py is the README's CLI contract; here it
    is held to what the CLI's own handlers return."""
    (tmp_path / "therapy.toml").write_text((REPO / "examples" / "morphine.toml").read_text())
    texts = [
        "info",
        "status",
        "refill begin",
        "refill complete --withdrawn 0mL --filled 12mL --drug morphine --concentration 5mg/mL",
        "program therapy.toml",
        "start",
        "bolus",
        "clinician-bolus 0.1mg --duration 10min",
        "stop",
        'refill --fill "15 mL"',
        "sim fault battery_mv on --value 3200",
        "ack",
        "sim fault battery_mv off",
        "log --limit 3",
        "sim truth",
        "sim refill --fill 10mL --pocket-fill",
        "sim power-cycle --off 2s",
        "start --role patient",  # refused: a patient may not start therapy
    ]
    s = load_scenario(
        write(tmp_path, "".join(f"[[step]]\naction = '{t}'\n" for t in texts), "all.scenario.toml"),
    )
    with start_pump(tmp_path / "pump") as pump:
        results = {step.action.text: run_action(step.action, pump) for step in s.steps}
        assert set(run_action(s.steps[1].action, pump)) == set(status_keys())
    for step in s.steps:
        got = results[step.action.text]
        assert set(got) <= set(step.action.result_keys), (step.action.text, got)
        assert "refused" not in got or step.action.text == "start --role patient", (step.action.text, got)
    assert set(results["sim truth"]) == set(truth_keys())
    assert results["bolus"]["reason"] == "lockout"
    assert results["start --role patient"] == {
        "refused": True,
        "reason": "not_permitted",
        "field": None,
        "error": results["start --role patient"]["error"],
    }
