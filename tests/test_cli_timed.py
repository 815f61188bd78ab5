"""The `thecal` CLI with timed boluses (issue 12, items 9 and 10): a therapy file's
[[timed_bolus]] tables programmed, refused naming the file's field, the log's
timed_bolus entries, and status's worst-case low-reservoir time, as the real CLI in a
subprocess against a fresh emulator over a real pty.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import REPO, Procs
from tests.test_cli_contract import Cli, one_object, pump, record_fill

EXAMPLE = str(REPO / "examples" / "timed-boluses.toml")


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def with_timed(directory: Path, name: str, *timed: tuple[str, str, str], limit: str = "3 mg") -> str:
    text = Path(EXAMPLE).read_text().replace('max_dose_24h = "3 mg"', f'max_dose_24h = "{limit}"')
    head = text[: text.index("[[timed_bolus]]")]
    tail = text[text.index("[limits]") :]
    tables = "".join(f'[[timed_bolus]]\nstart = "{s}"\ndose = "{d}"\nduration = "{t}"\n\n' for s, d, t in timed)
    path = Path(directory) / f"{name}.toml"
    path.write_text(head + tables + tail)
    return str(path)


@pytest.mark.req("SR-053", "SR-054")
def test_program_status_and_log_with_timed_boluses(procs):
    _, cli = pump(procs)
    assert cli.json("status")["low_reservoir_worst_at_s"] is None  # nothing programmed
    assert cli.json("program", EXAMPLE)["accepted"] is True
    record_fill(cli)
    cli.json("start")
    st = cli.json("status")
    # 10 mL above the low level: 27.6 days at basal and timed boluses, 20.7 if the
    # patient also takes every bolus allowed (six of 0.1 mg a day).
    assert 27 * 86_400 < st["low_reservoir_at_s"] < 28 * 86_400
    assert 20 * 86_400 < st["low_reservoir_worst_at_s"] < 21 * 86_400
    human = cli.ok("status")
    assert "low reservoir at, every bolus taken  day 20 " in human, human
    cli.json("sim", "advance", "500min")  # 08:20
    timed = [e for e in cli.json("log")["events"] if e["type"] == "timed_bolus"]
    assert [(e["time_s"], e["timed_bolus"], e["result"]) for e in timed] == [(28_800, 0, "started")]
    kinds = [e["kind"] for e in cli.json("log")["events"] if e["type"] == "bolus_started"]
    assert kinds == ["timed"]
    assert "timed_bolus  timed_bolus=0, result=started" in cli.ok("log")
    truth = cli.json("sim", "truth")
    assert abs(truth["delivered_ng"] - 625_000) <= 2_500  # 0.375 mg of basal and the 0.25 mg bolus


@pytest.mark.req("SR-053", "SR-001")
def test_timed_boluses_the_pump_refuses_exit_3_naming_the_file_field(procs, tmp_path):
    _, cli = pump(procs)
    over = with_timed(tmp_path, "over", ("08:00", "0.5 mg", "15min"), ("20:00", "0.5 mg", "15min"), limit="2.5 mg")
    doc = cli.json("program", over, code=3)
    assert (doc["accepted"], doc["field"]) == (False, "timed_bolus[1].dose")
    assert doc["wire_field"] == "timed_bolus[1].dose_ng"
    assert "need a hard limit of at least" in doc["error"]
    overlap = with_timed(tmp_path, "overlap", ("08:00", "0.25 mg", "15min"), ("08:10", "0.25 mg", "15min"))
    doc = cli.json("program", overlap, code=3)
    assert doc["field"] == "timed_bolus[1].start" and "one bolus at a time" in doc["error"]
    r = cli.run("program", overlap)
    assert r.returncode == 3 and "refused (out_of_range): timed_bolus[1].start: 08:10 is before" in r.stderr
    assert cli.json("status")["drug"] is None  # nothing changed


@pytest.mark.parametrize(
    ("timed", "says"),
    [
        ((("8:00", "0.25 mg", "15min"),), "timed_bolus[0].start: '8:00' is not a time of day \"HH:MM\""),
        ((("08:00", "0.25 mgg", "15min"),), "timed_bolus[0].dose: "),
        (tuple((f"{h:02d}:00", "0.1 mg", "10min") for h in range(9)), "timed_bolus: at most 8 timed boluses, not 9"),
    ],
)
def test_a_bad_timed_bolus_in_the_file_is_a_usage_error_before_any_traffic(tmp_path, timed, says):
    r = Cli(tmp_path / "nowhere").run("program", with_timed(tmp_path, "bad", *timed), "--json")
    doc = one_object(r.stdout)
    assert r.returncode == 2 and doc["usage_error"] is True and says in doc["error"], doc
