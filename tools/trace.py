"""`thecal trace`: the traceability matrix, requirement -> tests -> result.

Requirements are the `SR-NNN` rows of docs/safety-requirements.md. Results come from
one or more pytest runs with `--trace-report FILE` (tests/conftest.py writes, for each
test marked `@pytest.mark.req(...)`, its requirements and outcome). A requirement is
verified when at least one of its tests passed and none failed. A retired requirement
(its text begins "Retired") keeps its row and number but needs no test, and no test may
name it. Exit status 1 when a requirement is not verified, a marked test failed, or a
test names a requirement the document does not have or has retired.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ROW = re.compile(r"^\|\s*(SR-\d{3})\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|")


@dataclass(frozen=True)
class Requirement:
    id: str
    hazard: str
    text: str

    @property
    def retired(self) -> bool:
        return self.text.startswith("Retired")


@dataclass(frozen=True)
class Row:
    requirement: Requirement
    passed: tuple[str, ...]
    failed: tuple[str, ...]
    skipped: tuple[str, ...]

    @property
    def verified(self) -> bool:
        return bool(self.passed) and not self.failed

    @property
    def ok(self) -> bool:
        return self.requirement.retired or self.verified


class TraceError(ValueError):
    pass


def load_requirements(path: str | Path) -> list[Requirement]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            out.append(Requirement(m.group(1), m.group(2), m.group(3)))
    ids = [r.id for r in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise TraceError(f"{path}: requirement ids used twice: {', '.join(dup)}")
    if not out:
        raise TraceError(f"{path}: no requirement rows (| SR-NNN | hazard | requirement | ... |)")
    return out


def load_results(paths: list[str | Path]) -> dict[str, dict]:
    """nodeid -> {"reqs": [...], "outcome": ...}; a test in several runs keeps the worst outcome."""
    rank = {"failed": 2, "passed": 1, "skipped": 0}
    tests: dict[str, dict] = {}
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text(encoding="utf-8"))
            entries = doc["tests"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TraceError(f"{p}: not a --trace-report file ({e})") from None
        label = doc.get("label", "")
        for nodeid, t in entries.items():
            key = f"{nodeid} [{label}]" if label else nodeid
            old = tests.get(key)
            if old is None or rank[t["outcome"]] > rank[old["outcome"]]:
                tests[key] = {"reqs": list(t["reqs"]), "outcome": t["outcome"]}
    return tests


def matrix(requirements: list[Requirement], tests: dict[str, dict]) -> tuple[list[Row], list[str]]:
    """The rows, and the problems found (unknown requirement ids)."""
    known = {r.id for r in requirements}
    retired = {r.id for r in requirements if r.retired}
    problems = []
    by_req: dict[str, dict[str, list[str]]] = {r.id: {"passed": [], "failed": [], "skipped": []} for r in requirements}
    for nodeid, t in sorted(tests.items()):
        for rid in t["reqs"]:
            if rid not in known:
                problems.append(f"{nodeid} names {rid}, which docs/safety-requirements.md does not have")
                continue
            if rid in retired:
                problems.append(f"{nodeid} names {rid}, which docs/safety-requirements.md has retired")
            by_req[rid][t["outcome"]].append(nodeid)
    rows = [
        Row(r, tuple(by_req[r.id]["passed"]), tuple(by_req[r.id]["failed"]), tuple(by_req[r.id]["skipped"]))
        for r in requirements
    ]
    return rows, problems


def run_trace(requirements: str, results: list[str], as_json: bool) -> int:
    try:
        reqs = load_requirements(requirements)
        tests = load_results(results)
    except (OSError, TraceError) as e:
        print(f"thecal trace: {e}")
        return 2
    rows, problems = matrix(reqs, tests)
    bad = [r for r in rows if not r.ok]
    if as_json:
        print(
            json.dumps(
                {
                    "requirements": [
                        {
                            "id": r.requirement.id,
                            "hazard": r.requirement.hazard,
                            "verified": r.verified,
                            "retired": r.requirement.retired,
                            "passed": list(r.passed),
                            "failed": list(r.failed),
                            "skipped": list(r.skipped),
                        }
                        for r in rows
                    ],
                    "unverified": [r.requirement.id for r in bad],
                    "problems": problems,
                    "ok": not bad and not problems,
                }
            )
        )
    else:
        for r in rows:
            mark = "ret " if r.requirement.retired else "ok  " if r.verified else "FAIL"
            print(f"{mark} {r.requirement.id}  {r.requirement.hazard}")
            for t in r.passed:
                print(f"       passed   {t}")
            for t in r.failed:
                print(f"       FAILED   {t}")
            for t in r.skipped:
                print(f"       skipped  {t}")
            if not (r.passed or r.failed or r.skipped or r.requirement.retired):
                print("       (no test)")
        for p in problems:
            print(f"ERROR {p}")
        live = [r for r in rows if not r.requirement.retired]
        print(
            f"\n{len(live) - len(bad)} of {len(live)} requirements verified by a passing HIL test"
            + (f" ({len(rows) - len(live)} retired)" if len(live) < len(rows) else "")
            + (f"; not verified: {', '.join(r.requirement.id for r in bad)}" if bad else "")
        )
    return 1 if bad or problems else 0
