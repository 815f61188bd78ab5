"""The `thecal` commands that need no running pump: demo, bench, spec, diagram, and the
shipped example files. Each runs the real console script in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from emulator.model import load_model
from protocol.codes import Role
from protocol.keyfile import dumps_keys

REPO = Path(__file__).resolve().parent.parent
THECAL = [sys.executable, "-m", "tools.cli"]


def thecal(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*THECAL, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_demo_json_is_one_object_and_the_plot_is_written(tmp_path):
    # The demo starts its own emulator; tests/test_demo.py checks its figures.
    r = thecal("demo", "--days", "1", "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["days"] == 1 and doc["bolus_requests"] == 8
    assert doc["png"] == str(tmp_path / "therapy.png")
    assert (tmp_path / "therapy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_codec_prints_one_json_object_with_both_figures():
    r = thecal("bench", "codec", "--seconds", "0.05", "--repeats", "1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("status_response_pairs_per_s", "authenticated_request_pairs_per_s"):
        fig = doc["results"][key]
        assert fig["best"] > 0 and fig["target"] > 0 and isinstance(fig["meets_target"], bool)
    assert doc["machine"]["cores"] >= 1


def test_bench_firmware_runs_the_reference_therapy_and_reports_ground_truth():
    r = thecal("bench", "firmware", "--days", "2")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["simulated_s"] == 2 * 86_400
    assert doc["boluses_granted"] > 0
    # About 1.2 mg/day of basal plus boluses of 0.1 mg: what the emulator measured.
    assert 2_000_000 < doc["delivered_ng_ground_truth"] < 2 * 3_000_000
    # The firmware's estimate tracks the physical reservoir within the stroke error.
    assert abs(doc["reservoir_nl_firmware"] - doc["reservoir_nl_ground_truth"]) < 100_000


def test_spec_and_vectors_are_current():
    r = thecal("spec", "--check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_diagram_is_current():
    r = thecal("diagram", "--check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_usage_error_exits_2():
    r = thecal("bench", "nonsense")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr


def test_example_pump_model_loads():
    m = load_model(REPO / "examples" / "pump-model.toml")
    assert m.reservoir_capacity_ul == 40_000 and m.catheter_dead_volume_nl == 120_000


def test_emulator_names_the_wrong_key_of_a_firmware_config_and_starts_nothing(tmp_path):
    cfg = tmp_path / "fw.toml"
    cfg.write_text("empty_reservoir_ul = 1000\nocclusion_pressur_pa = 5\n")
    r = thecal("emulator", "--state-dir", str(tmp_path / "sd"), "--firmware-config", str(cfg), timeout=30)
    assert r.returncode == 2 and "'occlusion_pressur_pa'" in r.stderr and str(cfg) in r.stderr
    assert "READY" not in r.stdout


def test_firmware_names_a_drug_library_it_cannot_read(tmp_path):
    (tmp_path / "keys.json").write_bytes(dumps_keys({Role.CLINICIAN: bytes(32), Role.PATIENT: bytes(32)}))
    lib = tmp_path / "drugs.toml"
    lib.write_text('[morphine]\nunit = "mg"\n')
    r = thecal("firmware", "--port", "/dev/null", "--state-dir", str(tmp_path), "--drug-library", str(lib), timeout=30)
    assert r.returncode == 2 and "[morphine] needs exactly" in r.stderr
