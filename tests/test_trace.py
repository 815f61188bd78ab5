"""The traceability matrix: requirement -> tests -> result, and its failure modes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tools.trace import TraceError, load_requirements, run_trace

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "safety-requirements.md"


def results(tmp_path: Path, tests: dict, name: str = "r.json", label: str = "in-process") -> str:
    p = tmp_path / name
    p.write_text(json.dumps({"label": label, "tests": tests}))
    return str(p)


def reqs(tmp_path: Path, *ids: str) -> str:
    p = tmp_path / "reqs.md"
    p.write_text(
        "| id | hazard | requirement | rationale |\n|---|---|---|---|\n"
        + "".join(f"| {i} | overdose | r | w |\n" for i in ids)
    )
    return str(p)


def test_all_requirements_with_a_passing_test_exit_0(tmp_path, capsys):
    r = results(
        tmp_path, {"t1": {"reqs": ["SR-001"], "outcome": "passed"}, "t2": {"reqs": ["SR-002"], "outcome": "passed"}}
    )
    assert run_trace(reqs(tmp_path, "SR-001", "SR-002"), [r], as_json=False) == 0
    assert "2 of 2 requirements verified" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("tests", "why"),
    [
        ({"t1": {"reqs": ["SR-001"], "outcome": "passed"}}, "SR-002 has no test"),
        (
            {
                "t1": {"reqs": ["SR-001", "SR-002"], "outcome": "passed"},
                "t2": {"reqs": ["SR-002"], "outcome": "failed"},
            },
            "a test failed",
        ),
        (
            {
                "t1": {"reqs": ["SR-001", "SR-002"], "outcome": "passed"},
                "t3": {"reqs": ["SR-099"], "outcome": "passed"},
            },
            "unknown id",
        ),
        (
            {"t1": {"reqs": ["SR-001"], "outcome": "passed"}, "t2": {"reqs": ["SR-002"], "outcome": "skipped"}},
            "only skipped",
        ),
    ],
)
def test_a_requirement_without_a_passing_test_fails_the_trace(tmp_path, capsys, tests, why):
    assert run_trace(reqs(tmp_path, "SR-001", "SR-002"), [results(tmp_path, tests)], as_json=True) == 1, why
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False


def test_a_failure_in_either_mode_counts_and_both_modes_are_listed(tmp_path, capsys):
    a = results(tmp_path, {"t1": {"reqs": ["SR-001"], "outcome": "passed"}}, "a.json", "in-process")
    b = results(tmp_path, {"t1": {"reqs": ["SR-001"], "outcome": "failed"}}, "b.json", "split")
    assert run_trace(reqs(tmp_path, "SR-001"), [a, b], as_json=True) == 1
    (row,) = json.loads(capsys.readouterr().out)["requirements"]
    assert row["passed"] == ["t1 [in-process]"] and row["failed"] == ["t1 [split]"]


def test_bad_inputs_are_named(tmp_path, capsys):
    (tmp_path / "junk.json").write_text("{}")
    assert run_trace(reqs(tmp_path, "SR-001"), [str(tmp_path / "junk.json")], as_json=False) == 2
    assert "junk.json" in capsys.readouterr().out
    dup = tmp_path / "dup.md"
    dup.write_text("| SR-001 | a | b | c |\n| SR-001 | a | b | c |\n")
    with pytest.raises(TraceError, match="SR-001"):
        load_requirements(dup)


def test_every_requirement_in_the_document_is_named_by_a_hil_test_and_no_marker_is_unknown():
    """A static check of the suite against the document (the run-time check is `make test`)."""
    ids = {r.id for r in load_requirements(DOC) if not r.retired}  # (a retired one: no test may name it)
    marked: set[str] = set()
    for path in (REPO / "tests").glob("test_*.py"):
        text = path.read_text()
        for args in re.findall(r"@pytest\.mark\.req\(([^)]*)\)", text):
            found = set(re.findall(r'"(SR-\d{3})"', args))
            marked |= found
            if found:
                assert "Procs" in text or "harness" in text, f"{path.name}: req markers belong on HIL tests"
    assert marked <= ids, sorted(marked - ids)
    assert ids <= marked, sorted(ids - marked)


def test_bench_latency_measures_round_trips_over_a_pty():
    from tools.bench import bench_latency

    r = bench_latency(requests=30)
    for key in ("status_round_trip", "sim_ground_truth_round_trip"):
        p = r[key]
        assert p["n"] == 30 and 0 < p["p50_us"] <= p["p99_us"] <= p["max_us"]


def test_a_retired_requirement_needs_no_test_and_no_test_may_name_it(tmp_path, capsys):
    p = tmp_path / "reqs.md"
    p.write_text(
        "| id | hazard | requirement | rationale |\n|---|---|---|---|\n"
        "| SR-001 | overdose | r | w |\n"
        "| SR-002 | overdose | Retired (replaced by SR-001): r | w |\n"
    )
    ok = results(tmp_path, {"t1": {"reqs": ["SR-001"], "outcome": "passed"}})
    assert run_trace(str(p), [ok], as_json=False) == 0
    out = capsys.readouterr().out
    assert "ret  SR-002" in out and "1 of 1 requirements verified by a passing HIL test (1 retired)" in out
    named = results(tmp_path, {"t1": {"reqs": ["SR-001", "SR-002"], "outcome": "passed"}}, "n.json")
    assert run_trace(str(p), [named], as_json=True) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["problems"] == ["t1 [in-process] names SR-002, which docs/safety-requirements.md has retired"]
    assert [r["retired"] for r in doc["requirements"]] == [False, True]
