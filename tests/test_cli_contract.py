"""The `thecal` CLI contract (issue 6, README "The CLI contract"): every command, run as
the real CLI in a subprocess against a fresh emulator over a real pty, each exit status
(0 done, 2 usage, 3 refused, 4 no answer) and each bolus denial reason.

One emulator per test; a test is one scenario, so several CLI calls share it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PYTHON, REPO, EmulatorProcess, Procs, _Process, wait_alive, write_model
from tools.cli import _fill_defaults, build_parser

THECAL = [sys.executable, "-m", "tools.cli"]

STATUS_KEYS = {
    "state",
    "time_s",
    "clock",
    "drug",
    "concentration_ug_per_ml",
    "basal_rate_ng_per_day",
    "reservoir_ul",
    "low_reservoir_at_s",
    "low_reservoir_worst_at_s",
    "bolus_active",
    "lockout_remaining_s",
    "boluses_24h",
    "max_boluses_24h",
    "dose_24h_ng",
    "max_dose_24h_ng",
    "alarms",
    "battery_mv",
    "last_command_id",
    "catheter_state",
    "catheter_volume_ul",
}


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


class Cli:
    """The real `thecal` against one state directory."""

    def __init__(self, state_dir: Path | None, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = {k: v for k, v in os.environ.items() if k != "THECAL_STATE_DIR"}
        self.env.update(env or {})

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        conn = ["--state-dir", str(self.state_dir)] if self.state_dir is not None else []
        return subprocess.run(
            [*THECAL, *conn, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def json(self, *args: str, code: int = 0) -> dict[str, Any]:
        """Run with --json; check the exit status and that stdout is exactly one JSON object."""
        r = self.run(*args, "--json")
        assert r.returncode == code, f"thecal {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return one_object(r.stdout)

    def ok(self, *args: str) -> str:
        r = self.run(*args)
        assert r.returncode == 0, f"thecal {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout


def one_object(stdout: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {stdout!r}"
    doc = json.loads(lines[0])
    assert isinstance(doc, dict)
    return doc


def pump(procs: Procs, **model: Any) -> tuple[EmulatorProcess, Cli]:
    """A fresh emulator with the firmware in-process and an exact pump model; no client
    of the test's own holds its port (one reader per pty: the CLI)."""
    path = write_model(procs.tmp, f"{procs._name('model')}.toml", stroke_error_sd_ppm=0, **model)
    emu = procs.emulator(split=False, firmware=True, model=path)
    return emu, Cli(emu.state_dir)


def therapy(
    directory: Path,
    name: str,
    bolus: tuple[str, str, str, int] | None = ("0.1 mg", "5min", "15min", 2),
    limit: str = "3 mg",
    basal: tuple[tuple[str, str], ...] = (("00:00", "1 mg/day"),),
    concentration: str = "5 mg/mL",
) -> str:
    lines = ['drug = "morphine"', f'concentration = "{concentration}"', 'low_reservoir_alarm = "2 mL"']
    for start, rate in basal:
        lines += ["[[basal]]", f'start = "{start}"', f'rate = "{rate}"']
    if bolus is not None:
        dose, duration, lockout, most = bolus
        lines += ["[patient_bolus]", f'dose = "{dose}"', f'duration = "{duration}"', f'lockout = "{lockout}"']
        lines.append(f"max_per_24h = {most}")
    lines += ["[limits]", f'max_dose_24h = "{limit}"']
    path = Path(directory) / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def record_fill(cli: Cli, filled: str = "12 mL", withdrawn: str = "0 mL") -> dict[str, Any]:
    """Record a refill the clinician did by hand (or the pump's factory fill)."""
    expected = cli.json("refill", "begin")["expected_ul"]
    assert expected is None or expected >= 0  # (None: a pump never filled, its initial fill)
    return cli.json("refill", "complete", "--withdrawn", withdrawn, "--filled", filled)


# ============================================================ parsing (no pump)


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--state-dir", "S", "--role", "patient", "status"],
        ["status", "--json", "--state-dir", "S", "--role", "patient"],
        ["--state-dir", "S", "status", "--role", "patient", "--json"],
    ],
)
def test_connection_options_and_json_before_or_after_the_command(argv):
    args = _fill_defaults(build_parser().parse_args(argv))
    assert (args.command, args.json, args.state_dir, args.role) == ("status", True, "S", "patient")


def test_defaults_state_dir_from_env_and_bolus_signs_as_patient(monkeypatch):
    monkeypatch.delenv("THECAL_STATE_DIR", raising=False)
    args = _fill_defaults(build_parser().parse_args(["status"]))
    assert (args.state_dir, args.role, args.json, args.port, args.keys) == (".thecal", "clinician", False, None, None)
    monkeypatch.setenv("THECAL_STATE_DIR", "/elsewhere")
    args = _fill_defaults(build_parser().parse_args(["bolus"]))
    assert (args.state_dir, args.role) == ("/elsewhere", "patient")
    args = _fill_defaults(build_parser().parse_args(["--role", "clinician", "bolus"]))
    assert args.role == "clinician"
    args = _fill_defaults(build_parser().parse_args(["sim", "advance", "--json", "6h", "--port", "/dev/x"]))
    assert (args.duration, args.json, args.port) == (21_600_000, True, "/dev/x")
    args = _fill_defaults(build_parser().parse_args(["--state-dir", "E", "emulator"]))
    assert args.state_dir == "E"


# ============================================================ exit 2: usage errors


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["clinician-bolus", "0.1 mgg"], "unknown unit 'mgg'"),
        (["clinician-bolus", "0.1 mg", "--duration", "10 mn"], "unknown unit 'mn'"),
        (["sim", "advance", "10"], "no unit"),
        (["refill", "--fill", "2 mg"], "unknown unit 'mg'"),
        (["refill", "complete", "--withdrawn", "1 mL"], "--filled"),
        (["refill"], "refill begin"),
        (["ack", "gremlins"], "invalid choice: 'gremlins'"),
        (["sim", "fault", "gremlins", "on"], "invalid choice: 'gremlins'"),
        (["sim", "fault", "battery_mv", "on"], "needs --value"),
        (["sim", "fault", "stroke_error_pct", "on", "--value", "lots"], "percentage"),
        (["sim", "fault", "occlusion", "maybe"], "invalid choice: 'maybe'"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["--role", "sim", "status"], "invalid choice: 'sim'"),
        (["log", "--limit", "0"], "--limit must be at least 1"),
        (["sim", "speed", "-1"], "speed factor must be >= 0"),
    ],
)
def test_usage_errors_exit_2_naming_what_was_wrong(tmp_path, argv, says):
    """Checked before any traffic: there is no emulator behind this state directory."""
    cli = Cli(tmp_path / "nobody")
    r = cli.run(*argv)
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr
    assert r.stdout == ""
    r = cli.run(*argv, "--json")
    assert r.returncode == 2
    assert says in one_object(r.stdout)["error"]


def test_a_bad_therapy_file_exits_2_naming_the_field(tmp_path):
    cli = Cli(tmp_path / "nobody")
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(therapy(tmp_path, "t")).read_text().replace("lockout =", "lockot ="))
    r = cli.run("program", str(bad))
    assert r.returncode == 2
    assert "patient_bolus.lockot: unknown key" in r.stderr
    doc = cli.json("program", str(bad), code=2)
    assert "patient_bolus.lockot" in doc["error"]
    typo = tmp_path / "typo.toml"
    typo.write_text(Path(therapy(tmp_path, "v")).read_text().replace("1 mg/day", "1 mg/dy"))
    assert "basal[0].rate" in cli.json("program", str(typo), code=2)["error"]
    assert "cannot read" in cli.json("program", str(tmp_path / "missing.toml"), code=2)["error"]


# ============================================================ exit 4: no answer


def test_no_emulator_in_the_state_dir_exits_4(tmp_path):
    doc = Cli(tmp_path / "nobody").json("status", code=4)
    assert "port" in doc["error"]


def test_a_port_nobody_serves_exits_4_after_the_timeout(tmp_path):
    master, slave = os.openpty()
    try:
        keys = tmp_path / "keys.json"
        keys.write_text(json.dumps({"clinician": "11" * 32, "patient": "22" * 32, "sim": "33" * 32}))
        t0 = time.monotonic()
        cli = Cli(None)
        r = cli.run("--port", os.ttyname(slave), "--keys", str(keys), "--timeout", "0.2", "status", "--json")
        assert r.returncode == 4, r.stderr
        assert "no answer" in one_object(r.stdout)["error"]
        assert time.monotonic() - t0 < 10
        # A command is not resent: it and the status asked after it, nothing else.
        r = cli.run("--port", os.ttyname(slave), "--keys", str(keys), "--timeout", "0.2", "start")
        assert r.returncode == 4
        assert "STATUS did not answer either" in r.stderr
    finally:
        os.close(master)
        os.close(slave)


def test_an_emulator_killed_mid_request_exits_4(procs):
    """The device lost while the CLI waits for it. (Not by asking a dead emulator's state
    directory again: its pty number may already serve another emulator.)"""
    emu, cli = pump(procs)
    cli.json("program", str(REPO / "examples" / "morphine.toml"))
    record_fill(cli)
    cli.json("start")
    argv = [*THECAL, "--state-dir", str(emu.state_dir), "--json", "sim", "advance", "400d"]
    with subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        time.sleep(1.0)  # well inside the 400 simulated days
        emu.kill_group()
        out, err = p.communicate(timeout=30)
    assert p.returncode == 4, err
    doc = one_object(out)
    assert doc["no_answer"] is True and doc["kind"] == "PortLost"
    assert "lost" in err


# ============================================================ the therapy, start to end


def test_info_status_program_start_stop_log(procs):
    emu, cli = pump(procs)
    info = cli.json("info")
    assert info == {
        "serial": info["serial"],
        "firmware_version": info["firmware_version"],
        "protocol_version": 2,
        "reservoir_capacity_ul": 20_000,
        "stroke_nl": 500,
    }
    assert info["serial"] and info["firmware_version"]
    assert "reservoir  20 mL" in cli.ok("info")

    fresh = cli.json("status")
    assert STATUS_KEYS <= fresh.keys()
    assert fresh["state"] == "stopped" and fresh["drug"] is None and fresh["time_s"] == 0
    assert fresh["clock"] == "2026-01-01T00:00:00"
    assert fresh["low_reservoir_at_s"] is None

    prog = cli.json("program", str(REPO / "examples" / "morphine.toml"))
    assert prog["accepted"] is True
    filled = record_fill(cli)
    assert filled["reservoir_ul"] == 12_000 and filled["discrepancy_ul"] is None  # the initial fill
    started = cli.json("start")
    assert started["state"] == "running"

    st = cli.json("status")
    assert st["state"] == "running"
    assert (st["drug"], st["concentration_ug_per_ml"]) == ("morphine", 5_000)
    assert st["basal_rate_ng_per_day"] == 1_000_000
    assert st["reservoir_ul"] == 12_000
    assert st["lockout_remaining_s"] == 7_200  # the lockout after programming
    assert (st["boluses_24h"], st["max_boluses_24h"]) == (0, 6)
    assert (st["dose_24h_ng"], st["max_dose_24h_ng"]) == (0, 3_000_000)
    assert st["bolus_active"] is False and st["alarms"] == []
    assert st["battery_mv"] > 0
    assert st["last_command_id"] == started["command_id"]
    assert isinstance(st["low_reservoir_at_s"], int) and st["low_reservoir_at_s"] > 86_400

    # Simulated time starts at --start (midnight): the 07:00 step falls at 25200 s.
    assert cli.json("sim", "advance", "7h") == {"time_s": 25_200, "time_ms": 25_200_000}
    st = cli.json("status")
    assert st["basal_rate_ng_per_day"] == 1_500_000
    assert st["clock"] == "2026-01-01T07:00:00"
    assert 0 < st["dose_24h_ng"] < 400_000  # 7 h at 1 mg/day

    # Options and --json before or after the command name: the same object.
    before = Cli(None).run("--json", "--state-dir", str(emu.state_dir), "status")
    assert one_object(before.stdout) == st
    env = Cli(None, env={"THECAL_STATE_DIR": str(emu.state_dir)})
    assert env.json("status") == st

    human = cli.ok("status")
    for text in ("running", "1.5 mg/day", "morphine 5 mg/mL", "of 3 mg", "0 of 6", "2026-01-01T07:00:00"):
        assert text in human, human

    stopped = cli.json("stop")
    assert stopped["state"] == "stopped"
    assert cli.json("status")["basal_rate_ng_per_day"] == 0

    log = cli.json("log")["events"]
    types = [e["type"] for e in log]
    assert types[0] == "boot" and log[0]["reset_cause"] == "power_up"
    assert [e["seq"] for e in log] == sorted(e["seq"] for e in log)
    accepted = [e for e in log if e["type"] == "program_accepted"]
    assert [e["command_id"] for e in accepted] == [prog["command_id"]]
    states = [(e["old_state"], e["new_state"]) for e in log if e["type"] == "therapy_state"]
    assert ("stopped", "running") in states and ("running", "stopped") in states
    page = cli.json("log", "--since", str(log[2]["seq"]), "--limit", "2")["events"]
    assert page == log[2:4]
    assert "program_accepted" in cli.ok("log")

    # Refused by the pump: start twice is fine (stopped -> running), stop when stopped is not.
    r = cli.run("stop", "--json")
    assert r.returncode == 3
    doc = one_object(r.stdout)
    assert doc["reason"] == "wrong_state" and "stop" in doc["error"]
    assert "refused" in r.stderr


@pytest.mark.req("SR-001")
def test_program_refused_by_the_pump_exits_3_naming_the_field(procs, tmp_path):
    _, cli = pump(procs)
    strong = therapy(tmp_path, "strong", concentration="25 mg/mL")
    r = cli.run("program", strong, "--json")
    assert r.returncode == 3
    doc = one_object(r.stdout)
    assert doc["accepted"] is False
    assert doc["field"] == "concentration"
    assert "exceeds" in doc["error"] and "20 mg" in doc["error"]
    late = therapy(tmp_path, "late", basal=(("00:00", "1 mg/day"), ("06:00", "1 mg/day"), ("05:00", "1 mg/day")))
    doc = cli.json("program", late, code=3)
    assert (doc["accepted"], doc["field"]) == (False, "basal[2].start")
    # Human output: the refusal on stderr, nothing on stdout.
    r = cli.run("program", strong)
    assert r.returncode == 3 and r.stdout == ""
    assert "refused (out_of_range): concentration: 25 mg/mL exceeds" in r.stderr
    # The patient's key may not program.
    doc = cli.json("--role", "patient", "program", str(REPO / "examples" / "morphine.toml"), code=3)
    assert doc["accepted"] is False and doc["reason"] == "not_permitted"
    assert cli.json("status")["drug"] is None  # nothing changed


# ============================================================ the bolus button


def bolus(cli: Cli, reason: str | None, *extra: str) -> dict[str, Any]:
    doc = cli.json(*extra, "bolus", code=0 if reason is None else 3)
    assert doc["granted"] is (reason is None)
    assert doc["reason"] == reason, doc
    return doc


@pytest.mark.req("SR-003", "SR-005", "SR-007")
def test_each_bolus_denial_reason(procs, tmp_path):
    _, cli = pump(procs)
    cli.json("program", therapy(tmp_path, "a", bolus=("0.1 mg", "5min", "15min", 2)))
    record_fill(cli)
    doc = bolus(cli, "not_running")
    assert (doc["dose_ng"], doc["available_in_s"]) == (0, None)

    cli.json("start")
    assert bolus(cli, "lockout")["available_in_s"] == 900  # the lockout after programming
    cli.json("sim", "advance", "15min")
    granted = bolus(cli, None)
    assert (granted["dose_ng"], granted["duration_s"], granted["available_in_s"]) == (100_000, 300, None)
    assert bolus(cli, "bolus_in_progress")["available_in_s"] == 900
    cli.json("sim", "advance", "15min")
    bolus(cli, None)
    cli.json("sim", "advance", "15min")
    # Two per rolling 24 h: the next when the first (at 900 s) leaves the window.
    assert bolus(cli, "max_boluses")["available_in_s"] == 86_400 + 900 - 2_700
    human = cli.run("bolus")
    assert human.returncode == 3 and "denied (max_boluses)" in human.stdout and "next possible in" in human.stdout
    # The clinician's key may not press the patient's button.
    r = cli.run("--role", "clinician", "bolus", "--json")
    assert r.returncode == 3 and one_object(r.stdout)["reason"] == "not_permitted"

    # 1 mg/day of basal + 0.3 mg does not fit under 1.25 mg.
    cli.json("program", therapy(tmp_path, "b", bolus=("0.3 mg", "5min", "15min", 6), limit="1.25 mg"))
    cli.json("sim", "advance", "15min")
    doc = bolus(cli, "daily_limit")
    assert doc["available_in_s"] is None or doc["available_in_s"] > 0

    # 1.01 mL left: a 20 uL bolus would take the reservoir below its 1 mL empty level.
    cli.json("program", therapy(tmp_path, "c", bolus=("0.1 mg", "5min", "15min", 6), limit="5 mg"))
    record_fill(cli, filled="1.01 mL")
    cli.json("ack")
    assert cli.json("status")["state"] == "running"
    cli.json("sim", "advance", "15min")
    bolus(cli, "reservoir")

    cli.json("program", therapy(tmp_path, "d", bolus=None))
    bolus(cli, "disabled")


class StandinProcess(_Process):
    """tests/standin_controller.py on a split emulator's pump link."""

    def __init__(self, pump_port: str, log: Path, keys: Path) -> None:
        argv = [PYTHON, "-m", "tests.standin_controller", "--port", pump_port, "--keys", str(keys)]
        super().__init__([*argv, "--exit-on-stdin-eof"], log)


def test_bolus_denied_for_an_active_alarm(procs, tmp_path):
    """The firmware halts therapy on any high-priority alarm, so NOT_RUNNING always comes
    first there; ALARM_ACTIVE is its rule's defence in depth. A stand-in controller on the
    pump link gives that answer, so the CLI's mapping is tested over the real links."""
    emu = procs.emulator(split=True)
    ctl = StandinProcess(emu.pump, tmp_path / "standin.log", emu.state_dir / "keys.json")
    procs.started.append(ctl)
    wait_alive(emu.sim, ctl)
    emu.sim.close()
    emu.clients.clear()
    doc = bolus(Cli(emu.state_dir), "alarm")
    assert doc["available_in_s"] is None
    # What the stand-in does not know it answers NAK BUSY: a refusal, exit 3.
    doc = Cli(emu.state_dir).json("start", code=3)
    assert doc["reason"] == "busy"


# ============================================================ refill, alarms, clinician bolus


def test_refill_ack_and_clinician_bolus(procs, tmp_path):
    _, cli = pump(procs)
    cli.json("program", str(REPO / "examples" / "morphine.toml"))
    assert cli.json("status")["reservoir_ul"] is None  # never filled: not known
    # The whole procedure on a fresh pump: the factory's 12 mL comes out, 18 mL goes in.
    # It is the pump's initial fill: nothing was expected, so there is nothing to compare.
    done = cli.json("refill", "--fill", "18 mL")
    assert done == {
        "expected_ul": None,
        "withdrawn_ul": 12_000,
        "reservoir_ul": 18_000,
        "discrepancy_ul": None,
        "command_id": done["command_id"],
    }
    truth = cli.json("sim", "truth")
    assert truth["reservoir_nl"] == 18_000_000
    assert cli.json("status")["alarms"] == []
    # A later refill entered 2 mL over what the firmware expected: the discrepancy alarm.
    assert cli.json("refill", "begin")["expected_ul"] == 18_000
    assert cli.json("refill", "complete", "--withdrawn", "20 mL", "--filled", "18 mL")["discrepancy_ul"] == 2_000
    alarms = cli.json("status")["alarms"]
    assert alarms == [
        {
            "id": "refill_discrepancy",
            "priority": "medium",
            "acknowledged": False,
            "condition_present": False,  # a one-off finding: latched until acknowledged
            "silenced": False,
            "needs_reset": False,
        }
    ]
    assert cli.json("ack", "refill_discrepancy") == {
        "acknowledged": [
            {
                "id": "refill_discrepancy",
                "still_active": False,
                "condition_present": False,
                "priority": "medium",
                "needs_reset": False,
                "state": "stopped",
            }
        ]
    }
    assert cli.json("ack") == {"acknowledged": []}
    doc = cli.json("ack", "low_reservoir", code=3)
    assert doc["reason"] == "wrong_state"

    cli.json("start")
    cb = cli.json("clinician-bolus", "50 mcg", "--duration", "2min")
    assert (cb["dose_ng"], cb["duration_s"], cb["volume_ul"]) == (50_000, 120, 10)
    st = cli.json("status")
    assert st["bolus_active"] is True and st["last_command_id"] == cb["command_id"]
    assert cli.json("clinician-bolus", "50 ug", code=3)["reason"] == "wrong_state"  # one at a time
    cli.json("sim", "advance", "2min")
    assert cli.json("status")["bolus_active"] is False
    assert cli.json("clinician-bolus", "5 mg", code=3)["field"] == "dose_ng"  # over the 3 mg hard limit
    cb = cli.ok("clinician-bolus", "0.05 mg")
    assert "clinician bolus started: 50 mcg over 10min" in cb

    # The physical refill alone, into the pocket: the reservoir does not get it, and the
    # controller has not been told anything.
    before = cli.json("status")["reservoir_ul"]
    phys = cli.json("sim", "refill", "--fill", "5 mL", "--pocket-fill")
    assert phys["pocket_fill"] is True
    assert abs(phys["withdrawn_ul"] - before) < 50
    assert phys["reservoir_ul"] == 0
    assert cli.json("status")["reservoir_ul"] == before
    began = cli.json("refill", "begin")
    assert began["expected_ul"] == cli.json("status")["reservoir_ul"]
    assert cli.json("status")["state"] == "refill"
    # Recorded as if it had gone in: the controller believes 5 mL; the truth is empty.
    done = cli.json("refill", "complete", "--withdrawn", f"{phys['withdrawn_ul']} uL", "--filled", "5 mL")
    assert done["reservoir_ul"] == 5_000
    assert done["discrepancy_ul"] == phys["withdrawn_ul"] - began["expected_ul"]
    assert cli.json("status")["state"] == "running"  # back to what it was
    human = cli.ok("refill", "begin")
    assert "expect to withdraw 5 mL" in human


def test_catheter_replaced_prime_and_the_surgery_in_the_emulator(procs):
    _, cli = pump(procs)
    fresh = cli.json("status")
    assert (fresh["catheter_state"], fresh["catheter_volume_ul"]) == ("unknown", None)
    cli.json("program", str(REPO / "examples" / "morphine.toml"))  # [catheter] volume = "0.2 mL"
    record_fill(cli)
    st = cli.json("status")
    assert (st["catheter_state"], st["catheter_volume_ul"]) == ("unknown", 200)
    assert "unknown, 200 uL" in cli.ok("status")
    assert cli.json("sim", "replace-catheter", "--volume", "0.15 mL") == {"volume_ul": 150}
    assert cli.json("sim", "replace-catheter") == {"volume_ul": 200}  # the pump model's
    done = cli.json("catheter-replaced")
    assert done == {"catheter_state": "empty", "catheter_volume_ul": 200, "command_id": done["command_id"]}
    again = cli.run("catheter-replaced")  # at most one declaration in 24 h
    assert again.returncode == 3 and "less than 24 h ago" in again.stderr
    refused = cli.json("start", code=3)
    assert refused["reason"] == "wrong_state" and "catheter is empty" in refused["error"]
    primed = cli.json("prime", "0.25 mL")
    assert primed == {"volume_ul": 250, "command_id": primed["command_id"]}
    cli.json("sim", "advance", "15min")
    st = cli.json("status")
    assert st["catheter_state"] == "primed" and st["dose_24h_ng"] == 250_000  # 50 uL beyond it
    assert abs(cli.json("sim", "truth")["delivered_ng"] - 250_000) <= 2_500
    log = cli.json("log")["events"]
    assert {"type": "catheter_state", "old_catheter_state": "empty", "catheter_state": "primed"}.items() <= next(
        e for e in log if e["type"] == "catheter_state" and e["arg1"] == 2
    ).items()
    assert cli.json("prime", "1 mL", code=3)["field"] == "volume_nl"  # over twice the catheter
    assert cli.run("prime", "0.2 mLL").returncode == 2  # a unit typo: a usage error, nothing sent
    cli.json("sim", "advance", "1d")
    assert "new and empty (200 uL): prime it" in cli.ok("catheter-replaced")
    cli.json("prime", "0.2 mL")
    cli.json("sim", "advance", "15min")
    cli.json("start")
    assert cli.json("catheter-replaced", code=3)["reason"] == "wrong_state"  # therapy running


@pytest.mark.req("SR-052")
def test_status_ack_and_a_refused_start_say_acknowledge_versus_reset(procs):
    """An occlusion (recovery policy hold) as a clinician meets it at the command line."""
    _, cli = pump(procs)
    cli.json("program", str(REPO / "examples" / "morphine.toml"))
    record_fill(cli)
    cli.json("start")
    cli.json("sim", "advance", "1h")
    cli.json("sim", "fault", "occlusion", "on")
    cli.json("sim", "advance", "15min")
    out = cli.ok("status")
    needs = "halts therapy until acknowledged with its condition gone"
    assert f"occlusion (high, condition present, not acknowledged, {needs})" in out
    assert cli.ok("ack", "occlusion").strip() == (
        "acknowledged occlusion: silenced; the condition is still present; acknowledge again once it clears to resume"
    )
    (a,) = cli.json("status")["alarms"]
    assert a == {
        "id": "occlusion",
        "priority": "high",
        "acknowledged": True,
        "condition_present": True,
        "silenced": True,
        "needs_reset": True,
    }
    r = cli.run("start")
    assert r.returncode == 3
    assert "halted by occlusion (still present): acknowledge each once its condition is gone" in r.stderr
    doc = cli.json("start", code=3)
    assert doc["reason"] == "wrong_state" and "halted by occlusion (still present)" in doc["error"]
    cli.json("sim", "fault", "occlusion", "off")
    cli.json("sim", "advance", "10min")
    assert f"occlusion (high, condition gone, silenced, {needs})" in cli.ok("status")
    assert "halted by occlusion (gone, not acknowledged)" in cli.run("start").stderr
    assert cli.ok("ack").strip() == "acknowledged occlusion: cleared; therapy running"


# ============================================================ sim-control


def test_sim_truth_and_faults(procs, tmp_path):
    _, cli = pump(procs)
    cli.json("program", str(REPO / "examples" / "morphine.toml"))
    record_fill(cli)
    cli.json("start")
    t = cli.json("sim", "truth")
    assert {"time_s", "delivered_nl", "reservoir_nl", "motor_running", "tones"} <= t.keys()
    assert t["time_s"] == 0 and t["delivered_nl"] == 0 and t["reservoir_nl"] == 12_000_000
    assert t["tones"] == []  # programming, filling and starting a new pump sound nothing

    # Exact strokes: 1 mg/day of 5 mg/mL is 0.2 mL/day, one 500 nL stroke per 216 s.
    cli.json("sim", "advance", "1h")
    t1 = cli.json("sim", "truth")
    strokes = t1["strokes_total"]
    assert strokes == 3_600 // 216
    assert t1["reservoir_nl"] == 12_000_000 - 500 * strokes

    # A +10 % stroke error: each stroke now pushes 550 nL out of the reservoir.
    cli.json("sim", "fault", "stroke_error_pct", "on", "--value", "10")
    cli.json("sim", "advance", "1h")
    t2 = cli.json("sim", "truth")
    assert t1["reservoir_nl"] - t2["reservoir_nl"] == 550 * (t2["strokes_total"] - strokes)
    cli.json("sim", "fault", "stroke_error_pct", "off")

    # A battery at its end of service: a high alarm, therapy halted, and the two-tone.
    cli.json("sim", "fault", "battery_mv", "on", "--value", "2700")
    cli.json("sim", "advance", "1min")
    st = cli.json("status")
    assert st["battery_mv"] == 2_700 and st["state"] == "halted"
    eos = {"id": "battery_eos", "priority": "high", "acknowledged": False, "condition_present": True}
    assert {**eos, "silenced": False, "needs_reset": True} in st["alarms"]
    tones = cli.json("sim", "truth")["tones"]
    assert tones and all(set(x) == {"time_s", "pattern"} for x in tones)
    later = [x["pattern"] for x in tones if x["time_s"] >= t2["time_s"]]
    assert "two_tone" in later
    cli.json("sim", "fault", "battery_mv", "off")
    cli.json("ack")

    # Occlusion: pressure builds as the motor strokes into a blocked catheter.
    cli.json("sim", "fault", "occlusion", "on")
    assert cli.json("status")["state"] == "running"  # the alarm acknowledged once its condition went
    cli.json("sim", "advance", "2h")
    ids = [a["id"] for a in cli.json("status")["alarms"]]
    assert "occlusion" in ids
    cli.json("sim", "fault", "occlusion", "off")

    cli.json("sim", "fault", "motor_stall", "on")
    cli.json("sim", "fault", "motor_stall", "off")


def test_sim_link_noise_and_power_cycle(procs, tmp_path):
    _, cli = pump(procs)
    cli.json("program", str(REPO / "examples" / "morphine.toml"))
    record_fill(cli)
    cli.json("start")
    # Noise on the pump link: the pump no longer hears its controller, so host requests
    # (relayed over that link) go unanswered; sim-control (answered by the emulator) works.
    cli.json("sim", "fault", "link_noise", "on", "--value", "100", "--link", "pump")
    r = cli.run("--timeout", "0.3", "info")
    assert r.returncode == 4
    assert cli.json("sim", "truth")["reservoir_nl"] == 12_000_000
    cli.json("sim", "fault", "link_noise", "off")
    cli.json("sim", "advance", "1s")
    assert cli.json("info")["stroke_nl"] == 500

    boots = cli.json("sim", "power-cycle")["boot_count"]
    assert boots == 2
    log = cli.json("log")["events"]
    assert any(e["type"] == "boot" and e["reset_cause"] == "power_cycle" for e in log)
    assert "power restored (boot 3)" in cli.ok("sim", "power-cycle", "--off", "10s")
    human = cli.ok("sim", "truth")
    assert re.search(r"controller\s+alive", human) and re.search(r"delivered\s+\d", human)


def test_only_one_json_object_even_with_notes(procs):
    """Several requests behind one command (refill --fill: status, begin, the physical
    refill, complete) still print one object."""
    _, cli = pump(procs)
    cli.json("program", str(REPO / "examples" / "morphine.toml"))
    r = cli.run("refill", "--fill", "12 mL", "--json")
    assert r.returncode == 0
    one_object(r.stdout)


def test_sim_speed_switches_lockstep_off_and_on(procs):
    _, cli = pump(procs)
    assert cli.json("sim", "speed", "100") == {"speed": 100}
    assert cli.json("sim", "advance", "1s", code=3)["reason"] == "wrong_state"  # advance is for lockstep
    assert cli.json("sim", "speed", "0") == {"speed": 0}
    assert cli.json("sim", "advance", "1s")["time_s"] >= 1


# ============================================================ demo, plot, decode (written elsewhere)


def test_demo_plot_and_decode_are_dispatched(procs, tmp_path):
    cli = Cli(tmp_path / "nobody")
    demo = cli.json("demo", "--days", "1", "--out", str(tmp_path / "demo"))
    assert demo["days"] == 1 and demo["simulated_s"] == 86_400
    if importlib.util.find_spec("matplotlib") is not None:
        png = tmp_path / "again.png"
        cli.ok("plot", "--from", demo["timeline"], "-o", str(png))
        assert png.stat().st_size > 0
    capture = tmp_path / "cap.pcap"
    emu = procs.emulator("--capture", str(capture), split=False, firmware=True)
    assert Cli(emu.state_dir).json("info")["stroke_nl"] == 500
    assert emu.stop() == 0
    doc = cli.json("decode", str(capture))
    assert doc["count"] > 0 and "HELLO_ACK" in json.dumps(doc).upper()  # the info request and its answer
    assert cli.run("decode", str(tmp_path / "missing.pcap")).returncode == 2


def test_the_in_process_firmware_runs_with_the_drug_library_and_settings_it_is_given(procs, tmp_path):
    lib = tmp_path / "lib.toml"
    lib.write_text(
        '[hydromorphone]\nunit = "mg"\nmax_concentration_ng_per_ml = 15_000_000\nmax_daily_dose_ng = 10_000_000\n'
    )
    cfg = tmp_path / "fw.toml"
    cfg.write_text("empty_reservoir_ul = 3000\n")
    emu = procs.emulator("--drug-library", str(lib), "--firmware-config", str(cfg), split=False, firmware=True)
    cli = Cli(emu.state_dir)
    refused = cli.json("program", therapy(tmp_path, "rx.toml"), code=3)
    assert refused["field"] == "drug" and "hydromorphone" in refused["error"]
    # The low-reservoir alarm (2 mL) must lie above the empty level: here 3 mL, not 1 mL.
    rx = Path(therapy(tmp_path, "rx2.toml", bolus=None, limit="2 mg"))
    rx.write_text(rx.read_text().replace('"morphine"', '"hydromorphone"'))
    refused = cli.json("program", str(rx), code=3)
    assert refused["field"] == "low_reservoir_alarm" and "3000 uL" in refused["error"]
