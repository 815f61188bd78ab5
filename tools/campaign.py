"""Campaigns: seeded runs of the link fault campaign and the protocol fuzzer, sharded and merged.

    thecal campaign link --seeds 0-47 [--shard 1/4] [--report link-1.json] [--json] [--jobs 2]
    thecal campaign fuzz --seeds 0-9 [--frames 1000] [--transport pty|inprocess]
    thecal campaign link --long                 # the long profile's seeds and sizes
    thecal campaign merge link-*.json fuzz-*.json [-o merged.json] [--json]

A campaign is a function of one seed that returns a SeedResult (seed, passed, the checks
by name, counters, the failure and the command that reproduces it); the same seed always
runs the same scenario. `--seeds` takes inclusive ranges and lists (`0-47`, `0:47`,
`3,9,20-29`); `--shard i/n` (i from 1 to n) keeps the i-th, (i+n)-th ... seed of them, so
n CI jobs (or `--jobs` processes, or pytest-xdist workers) share one range, and `merge`
joins their reports into one, naming seeds that are missing or were run twice.

This module holds what is common (seeds, shards, reports, the CLI) and imports little;
the campaigns themselves are tools/campaign_link.py and tools/campaign_fuzz.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_FORMAT = "thecal-campaign-report/1"
MERGED_FORMAT = "thecal-campaign-merged/1"
CAMPAIGNS = ("link", "fuzz")

# The CI profile runs by default (pytest and the CLI); the long one with `--long`.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "link": {
        "ci": {"seeds": "0-47", "noise_hours": 24},  # every cell of the matrix once
        "long": {"seeds": "0-479", "noise_hours": 72},  # every cell ten times, three noisy days each
    },
    "fuzz": {
        "ci": {"seeds": "0-9", "frames": 1_000, "transport": "pty"},  # 10,000 frames
        "long": {"seeds": "0-47", "frames": 2_500, "transport": "pty"},  # 120,000 frames
    },
}


class CampaignUsageError(ValueError):
    """A bad seed range, shard or report file (exit 2)."""


# ---------------------------------------------------------------- seeds and shards


def parse_seeds(text: str) -> list[int]:
    """`0-47`, `0:47` (both inclusive), `5`, or a comma list of those: sorted, unique."""
    seeds: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        sep = "-" if "-" in part else ":" if ":" in part else None
        try:
            if sep is None:
                seeds.add(int(part))
                continue
            lo_s, hi_s = part.split(sep, 1)
            lo, hi = int(lo_s), int(hi_s)
        except ValueError:
            raise CampaignUsageError(f"--seeds {text!r}: {part!r} is not N, A-B or A:B") from None
        if lo > hi:
            raise CampaignUsageError(f"--seeds {text!r}: {part!r} runs backwards")
        seeds.update(range(lo, hi + 1))
    if not seeds:
        raise CampaignUsageError(f"--seeds {text!r} names no seed")
    if min(seeds) < 0:
        raise CampaignUsageError(f"--seeds {text!r}: seeds are 0 or more")
    return sorted(seeds)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`i/n` with 1 <= i <= n: this job's share of a seed range (None: all of it)."""
    if text is None:
        return None
    try:
        i_s, n_s = str(text).split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise CampaignUsageError(f"--shard {text!r} is not i/n (e.g. 1/4)") from None
    if not 1 <= i <= n:
        raise CampaignUsageError(f"--shard {text!r}: i must be 1..n (shards are numbered from 1)")
    return i, n


def select_shard(seeds: Sequence[int], shard: tuple[int, int] | None) -> list[int]:
    """The i-th, (i+n)-th, (i+2n)-th ... seed of `seeds` (sorted), for shard i/n."""
    ordered = sorted(seeds)
    if shard is None:
        return ordered
    i, n = shard
    return ordered[i - 1 :: n]


def format_seeds(seeds: Iterable[int]) -> str:
    """Seeds as compact ranges: `0-3,5,7-9` (`` for none)."""
    out: list[str] = []
    run: list[int] = []
    for s in sorted(set(seeds)):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [s]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class SeedResult:
    """What one seed of a campaign found. `checks` maps each check's name to whether it
    held; `failure` says what failed (None when passed); `reproduce` is the command that
    runs this seed again (the same seed and parameters run the same scenario)."""

    campaign: str
    seed: int
    passed: bool
    checks: dict[str, bool]
    counters: dict[str, int]
    failure: str | None
    reproduce: str
    wall_s: float
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeedResult:
        return cls(
            campaign=d["campaign"],
            seed=int(d["seed"]),
            passed=bool(d["passed"]),
            checks=dict(d.get("checks", {})),
            counters=dict(d.get("counters", {})),
            failure=d.get("failure"),
            reproduce=d.get("reproduce", ""),
            wall_s=float(d.get("wall_s", 0.0)),
            notes=dict(d.get("notes", {})),
        )


class Checks:
    """Named checks for one seed: `ok(name, cond, why)` records each; the first failure's
    text becomes the result's failure message (all failures are kept in `failures`)."""

    def __init__(self) -> None:
        self.results: dict[str, bool] = {}
        self.failures: list[str] = []

    def ok(self, name: str, cond: bool, why: str = "") -> bool:
        held = bool(cond)
        self.results[name] = self.results.get(name, True) and held
        if not held:
            self.failures.append(f"{name}: {why}" if why else name)
        return held

    @property
    def passed(self) -> bool:
        return not self.failures


def reproduce_command(campaign: str, seed: int, params: dict[str, Any]) -> str:
    opts = "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(params.items()))
    return f"thecal campaign {campaign} --seeds {seed}{opts}"


def _runner(campaign: str) -> Callable[..., SeedResult]:
    if campaign == "link":
        from .campaign_link import run_seed
    elif campaign == "fuzz":
        from .campaign_fuzz import run_seed
    else:
        raise CampaignUsageError(f"no campaign {campaign!r} (one of {', '.join(CAMPAIGNS)})")
    return run_seed


def run_one(campaign: str, seed: int, params: dict[str, Any]) -> SeedResult:
    """One seed; an exception in the campaign's own code is a failed seed, not a crash."""
    t0 = time.monotonic()
    try:
        return _runner(campaign)(seed, **params)
    except CampaignUsageError:
        raise
    except Exception as e:  # noqa: BLE001 - reported as this seed's failure, with the traceback
        return SeedResult(
            campaign=campaign,
            seed=seed,
            passed=False,
            checks={"ran_to_the_end": False},
            counters={},
            failure=f"ran_to_the_end: {type(e).__name__}: {e}",
            reproduce=reproduce_command(campaign, seed, params),
            wall_s=round(time.monotonic() - t0, 3),
            notes={"traceback": traceback.format_exc()},
        )


def run_campaign(
    campaign: str,
    seeds: Sequence[int],
    params: dict[str, Any],
    jobs: int = 1,
    progress: Callable[[SeedResult], None] | None = None,
) -> list[SeedResult]:
    """Every seed, in `jobs` processes; results in seed order."""
    _runner(campaign)  # an unknown campaign fails here, before any work
    results: list[SeedResult] = []
    if jobs <= 1 or len(seeds) <= 1:
        for s in seeds:
            r = run_one(campaign, s, params)
            if progress:
                progress(r)
            results.append(r)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_one, campaign, s, params) for s in seeds]
            for f in futures:
                r = f.result()
                if progress:
                    progress(r)
                results.append(r)
    return sorted(results, key=lambda r: r.seed)


# ---------------------------------------------------------------- reports


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def _sum_counters(results: Iterable[SeedResult]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in results:
        for k, v in r.counters.items():
            if isinstance(v, int) and not isinstance(v, bool):
                total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def make_report(
    campaign: str,
    seed_spec: str,
    shard: tuple[int, int] | None,
    params: dict[str, Any],
    results: Sequence[SeedResult],
    wall_s: float,
) -> dict[str, Any]:
    failed = [r for r in results if not r.passed]
    return {
        "format": REPORT_FORMAT,
        "campaign": campaign,
        "params": params,
        "seeds": {
            "spec": seed_spec,
            "shard": f"{shard[0]}/{shard[1]}" if shard else None,
            "run": format_seeds(r.seed for r in results),
        },
        "totals": {
            "seeds": len(results),
            "passed": len(results) - len(failed),
            "failed": len(failed),
            "counters": _sum_counters(results),
            "wall_s": round(wall_s, 3),
            "cpu_s": round(sum(r.wall_s for r in results), 3),
        },
        "failures": [{"seed": r.seed, "failure": r.failure, "reproduce": r.reproduce} for r in failed],
        "results": [r.to_dict() for r in results],
        "machine": machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(p)


def load_report(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CampaignUsageError(f"no report {path}") from None
    except json.JSONDecodeError as e:
        raise CampaignUsageError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise CampaignUsageError(f"{path} is not a campaign report ({REPORT_FORMAT})")
    return data


def merge_reports(reports: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> dict[str, Any]:
    """One report from many (shards, CI jobs, pytest workers), campaign by campaign:
    totals, every failure, the seeds covered, seeds a report's range declared but no
    report ran (missing), seeds run more than once (overlaps) and those whose runs
    disagree (conflicts). passed only when nothing failed, is missing or conflicts."""
    names = list(names or [f"report{i + 1}" for i in range(len(reports))])
    by_campaign: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, rep in zip(names, reports, strict=True):
        by_campaign.setdefault(rep["campaign"], []).append((name, rep))
    out: dict[str, Any] = {}
    all_ok = True
    for campaign, reps in sorted(by_campaign.items()):
        declared: set[int] = set()
        runs: dict[int, list[tuple[str, SeedResult]]] = {}
        params: list[dict[str, Any]] = []
        wall = 0.0
        for name, rep in reps:
            declared.update(parse_seeds(rep["seeds"]["spec"]))
            if rep.get("params") not in params:
                params.append(rep.get("params"))
            wall = max(wall, float(rep.get("totals", {}).get("wall_s", 0.0)))
            for d in rep.get("results", []):
                r = SeedResult.from_dict(d)
                runs.setdefault(r.seed, []).append((name, r))
        final = {s: rs[-1][1] for s, rs in runs.items()}
        overlaps = sorted(s for s, rs in runs.items() if len(rs) > 1)
        conflicts = sorted(s for s, rs in runs.items() if len({r.passed for _, r in rs}) > 1)
        missing = sorted(declared - set(runs))
        results = [final[s] for s in sorted(final)]
        failed = [r for r in results if not r.passed]
        ok = not failed and not missing and not conflicts and len(params) == 1
        all_ok = all_ok and ok
        out[campaign] = {
            "passed": ok,
            "params": params[0] if len(params) == 1 else params,
            "params_consistent": len(params) == 1,
            "reports": [name for name, _ in reps],
            "seeds_declared": format_seeds(declared),
            "seeds_covered": format_seeds(final),
            "missing": format_seeds(missing),
            "overlaps": format_seeds(overlaps),
            "conflicts": format_seeds(conflicts),
            "totals": {
                "seeds": len(results),
                "passed": len(results) - len(failed),
                "failed": len(failed),
                "counters": _sum_counters(results),
                "cpu_s": round(sum(r.wall_s for r in results), 3),
                "wall_s_longest_report": round(wall, 3),
            },
            "failures": [{"seed": r.seed, "failure": r.failure, "reproduce": r.reproduce} for r in failed],
            "checks": _check_totals(results),
        }
    return {"format": MERGED_FORMAT, "passed": all_ok, "inputs": names, "campaigns": out}


def _check_totals(results: Sequence[SeedResult]) -> dict[str, dict[str, int]]:
    """Per check: in how many seeds it ran and how many of those it failed."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        for name, held in r.checks.items():
            c = out.setdefault(name, {"ran": 0, "failed": 0})
            c["ran"] += 1
            c["failed"] += 0 if held else 1
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- the CLI


def add_campaign_parser(sub: Any, json_parent: argparse.ArgumentParser) -> None:
    """`thecal campaign link|fuzz|merge` (tools/cli.py calls this)."""
    camp = sub.add_parser(
        "campaign", help="link fault campaign, protocol fuzzing; merge their reports", parents=[json_parent]
    )
    csub = camp.add_subparsers(dest="campaign", required=True, parser_class=type(camp), metavar="CAMPAIGN")
    for name, help_ in (
        ("link", "noise, drops, duplicates, delays on the host and pump links at rising rates"),
        ("fuzz", "random and mutated frames on the host port of a running rig"),
    ):
        c = csub.add_parser(name, help=help_, parents=[json_parent])
        c.add_argument("--seeds", help=f"seed range: A-B, A:B (inclusive) or a list (default: {name}'s profile)")
        c.add_argument("--shard", help="i/n: run the i-th, (i+n)-th ... seed of the range only (i from 1)")
        c.add_argument("--long", action="store_true", help="the long profile's seeds and sizes")
        c.add_argument("--report", metavar="FILE.json", help="write the report here")
        c.add_argument("--jobs", type=int, default=1, help="processes on this machine (default 1)")
        if name == "link":
            c.add_argument("--noise-hours", type=int, help="simulated hours of noise per seed (CI 24, long 72)")
        else:
            c.add_argument("--frames", type=int, help="frames per seed (CI 1000, long 2500)")
            c.add_argument(
                "--transport",
                choices=["pty", "inprocess"],
                help="pty: `thecal emulator` as a process, frames on its host pty (default); "
                "inprocess: the same rig in this process",
            )
    m = csub.add_parser("merge", help="merge campaign reports into one", parents=[json_parent])
    m.add_argument("reports", nargs="+", metavar="REPORT.json")
    m.add_argument("-o", "--output", metavar="FILE.json", help="write the merged report here")


def campaign_params(campaign: str, long: bool, **given: Any) -> tuple[str, dict[str, Any]]:
    """The seed spec and parameters: the profile's, overridden by what was given."""
    prof = dict(PROFILES[campaign]["long" if long else "ci"])
    default_seeds = prof.pop("seeds")
    seeds = given.pop("seeds", None) or default_seeds
    for k, v in given.items():
        if v is not None:
            prof[k] = v
    return str(seeds), prof


def run_campaign_cli(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))
    try:
        if args.campaign == "merge":
            return _merge_cli(args.reports, args.output, as_json)
        extra = (
            {"noise_hours": args.noise_hours}
            if args.campaign == "link"
            else {"frames": args.frames, "transport": args.transport}
        )
        spec, params = campaign_params(args.campaign, args.long, seeds=args.seeds, **extra)
        shard = parse_shard(args.shard)
        seeds = select_shard(parse_seeds(spec), shard)
        for k in ("noise_hours", "frames"):
            if k in params and params[k] <= 0:
                raise CampaignUsageError(f"--{k.replace('_', '-')} must be positive")
    except CampaignUsageError as e:
        return _usage(str(e), as_json)

    def progress(r: SeedResult) -> None:
        if not as_json:
            state = "pass" if r.passed else f"FAIL {r.failure}"
            print(f"{r.campaign} seed {r.seed}: {state} ({r.wall_s:.2f} s)", file=sys.stderr)

    t0 = time.monotonic()
    results = run_campaign(args.campaign, seeds, params, jobs=max(1, args.jobs), progress=progress)
    report = make_report(args.campaign, spec, shard, params, results, time.monotonic() - t0)
    if args.report:
        write_report(args.report, report)
    if as_json:
        print(json.dumps(report))
    else:
        t = report["totals"]
        print(
            f"{args.campaign}: {t['passed']}/{t['seeds']} seeds passed in {t['wall_s']:.1f} s; "
            + ", ".join(f"{k} {v:,}" for k, v in t["counters"].items() if k in SUMMARY_COUNTERS)
        )
        for f in report["failures"]:
            print(f"  seed {f['seed']}: {f['failure']}\n    reproduce: {f['reproduce']}")
    return 0 if not report["failures"] else 1


SUMMARY_COUNTERS = ("frames", "commands", "sim_hours", "watchdog_resets", "accepted_corrupted", "log_rejections")


def _usage(message: str, as_json: bool) -> int:
    print(f"thecal campaign: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "usage_error": True}))
    return 2


def _merge_cli(paths: Sequence[str], output: str | None, as_json: bool) -> int:
    reports = [load_report(p) for p in paths]
    merged = merge_reports(reports, [str(p) for p in paths])
    if output:
        write_report(output, merged)
    if as_json:
        print(json.dumps(merged))
    else:
        for name, c in merged["campaigns"].items():
            t = c["totals"]
            print(
                f"{name}: {t['passed']}/{t['seeds']} seeds passed (covered {c['seeds_covered']}); "
                + ", ".join(f"{k} {v:,}" for k, v in t["counters"].items() if k in SUMMARY_COUNTERS)
            )
            for what in ("missing", "overlaps", "conflicts"):
                if c[what]:
                    print(f"  {what}: {c[what]}")
            if not c["params_consistent"]:
                print("  the reports ran with different parameters")
            for f in c["failures"]:
                print(f"  seed {f['seed']}: {f['failure']}\n    reproduce: {f['reproduce']}")
    return 0 if merged["passed"] else 1
