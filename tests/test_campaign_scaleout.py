"""Scale-out of the campaigns (tools/campaign.py): seed ranges, shards, reports and their
merge, and the `thecal campaign` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.campaign import (
    CampaignUsageError,
    SeedResult,
    format_seeds,
    make_report,
    merge_reports,
    parse_seeds,
    parse_shard,
    select_shard,
)

REPO = Path(__file__).resolve().parents[1]


def result(seed: int, passed: bool = True, campaign: str = "link", **counters: int) -> SeedResult:
    return SeedResult(
        campaign=campaign,
        seed=seed,
        passed=passed,
        checks={"a": passed},
        counters={"commands": 2, **counters},
        failure=None if passed else "a: broke",
        reproduce=f"thecal campaign {campaign} --seeds {seed}",
        wall_s=0.5,
    )


def report(spec: str, shard: str | None, seeds: list[int], failed: tuple[int, ...] = (), campaign: str = "link"):
    results = [result(s, s not in failed, campaign) for s in seeds]
    return make_report(campaign, spec, parse_shard(shard), {"noise_hours": 24}, results, 1.0)


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("0-3", [0, 1, 2, 3]),
        ("0:3", [0, 1, 2, 3]),
        ("7", [7]),
        ("3,1,2-4,9", [1, 2, 3, 4, 9]),
        (" 5 - 6 ", [5, 6]),
    ],
)
def test_seed_ranges_are_inclusive_sorted_and_unique(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "5-3", "1-x", "-3", ","])
def test_a_bad_seed_range_is_a_usage_error(text):
    with pytest.raises(CampaignUsageError):
        parse_seeds(text)


@pytest.mark.parametrize("text", ["0/4", "5/4", "1", "a/b", "1/0", "2/1"])
def test_a_bad_shard_is_a_usage_error(text):
    with pytest.raises(CampaignUsageError):
        parse_shard(text)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 48, 100])
def test_shards_cover_every_seed_exactly_once(n):
    seeds = parse_seeds("10-57")
    shards = [select_shard(seeds, (i, n)) for i in range(1, n + 1)]
    assert sorted(s for sh in shards for s in sh) == seeds
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # as even as can be


def test_shard_one_of_four_takes_every_fourth_seed_from_the_first():
    assert select_shard(parse_seeds("0-9"), (1, 4)) == [0, 4, 8]
    assert select_shard(parse_seeds("0-9"), (4, 4)) == [3, 7]


def test_format_seeds_compacts_runs():
    assert format_seeds([5, 0, 1, 2, 3, 7, 8, 9, 11]) == "0-3,5,7-9,11"
    assert format_seeds([]) == ""
    assert parse_seeds(format_seeds([1, 2, 3, 10])) == [1, 2, 3, 10]


def test_merge_of_shards_is_one_report_with_totals():
    a = report("0-9", "1/2", [0, 2, 4, 6, 8])
    b = report("0-9", "2/2", [1, 3, 5, 7, 9], failed=(7,))
    m = merge_reports([a, b], ["a.json", "b.json"])
    c = m["campaigns"]["link"]
    assert c["seeds_covered"] == "0-9" and c["missing"] == "" and c["overlaps"] == ""
    assert c["totals"]["seeds"] == 10 and c["totals"]["failed"] == 1
    assert c["totals"]["counters"]["commands"] == 20
    assert c["failures"] == [{"seed": 7, "failure": "a: broke", "reproduce": "thecal campaign link --seeds 7"}]
    assert c["checks"]["a"] == {"ran": 10, "failed": 1}
    assert not c["passed"] and not m["passed"]


def test_merge_names_missing_seeds_overlaps_and_conflicts():
    a = report("0-9", "1/3", [0, 3, 6, 9])
    b = report("0-9", "2/3", [1, 4, 7, 3], failed=(3,))  # seed 3 again, and failing this time
    m = merge_reports([a, b])
    c = m["campaigns"]["link"]
    assert c["missing"] == "2,5,8"
    assert c["overlaps"] == "3" and c["conflicts"] == "3"
    assert not m["passed"]


def test_merge_keeps_campaigns_apart_and_flags_different_parameters():
    a = report("0-1", None, [0, 1])
    f = report("0-1", None, [0, 1], campaign="fuzz")
    other = make_report("link", "2-3", None, {"noise_hours": 72}, [result(2), result(3)], 1.0)
    m = merge_reports([a, f, other])
    assert set(m["campaigns"]) == {"link", "fuzz"}
    assert m["campaigns"]["fuzz"]["passed"]
    assert not m["campaigns"]["link"]["params_consistent"] and not m["passed"]


def thecal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "campaign", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_shards_on_two_jobs_and_merges_their_reports(tmp_path):
    """What two CI jobs do: each runs its shard and writes a report; one more merges."""
    r1, r2, merged = tmp_path / "r1.json", tmp_path / "r2.json", tmp_path / "merged.json"
    common = ("--seeds", "4-6", "--noise-hours", "2")
    p1 = thecal("link", *common, "--shard", "1/2", "--report", str(r1))
    p2 = thecal("link", *common, "--shard", "2/2", "--report", str(r2), "--json")
    assert p1.returncode == 0, p1.stderr
    assert p2.returncode == 0, p2.stderr
    assert json.loads(p2.stdout)["seeds"] == {"spec": "4-6", "shard": "2/2", "run": "5"}
    assert json.loads(r1.read_text())["seeds"]["run"] == "4,6"
    m = thecal("merge", str(r1), str(r2), "-o", str(merged), "--json")
    assert m.returncode == 0, m.stdout + m.stderr
    out = json.loads(m.stdout)
    assert out == json.loads(merged.read_text())
    link = out["campaigns"]["link"]
    assert link["seeds_covered"] == "4-6" and link["totals"]["seeds"] == 3 and link["passed"]
    # one job's report missing: the merge fails and names the seeds
    m1 = thecal("merge", str(r1))
    assert m1.returncode == 1 and "missing: 5" in m1.stdout


def test_cli_fuzz_in_process_and_usage_errors(tmp_path):
    p = thecal("fuzz", "--seeds", "1", "--frames", "200", "--transport", "inprocess", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert rep["totals"]["counters"]["frames"] == 200 and rep["totals"]["failed"] == 0
    assert rep["results"][0]["reproduce"] == "thecal campaign fuzz --seeds 1 --frames 200 --transport inprocess"
    bad = thecal("link", "--seeds", "9-3", "--json")
    assert bad.returncode == 2 and json.loads(bad.stdout)["usage_error"]
    assert thecal("link", "--shard", "3/2").returncode == 2
    assert thecal("merge", str(tmp_path / "nope.json")).returncode == 2


def test_a_failing_seed_fails_the_command_and_says_how_to_reproduce(tmp_path, monkeypatch):
    from tools import campaign

    def broken(seed, **params):
        raise RuntimeError("the rig fell over")

    monkeypatch.setattr(campaign, "_runner", lambda name: broken)
    r = campaign.run_one("link", 3, {"noise_hours": 1})
    assert not r.passed and "the rig fell over" in r.failure and "Traceback" in r.notes["traceback"]
    assert r.reproduce == "thecal campaign link --seeds 3 --noise-hours 1"
