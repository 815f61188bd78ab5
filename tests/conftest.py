"""Hypothesis profiles and the --long switch.

Profiles (pick one with THECAL_HYPOTHESIS_PROFILE=<name>, or pytest --long for "long"):
  ci    the default: 100 examples a test (tests scale their own counts from this, see
        tests/strategies.py `scaled`), no deadline, random seeds (not derandomized: each
        run explores new inputs; a failure prints the blob to reproduce it).
  long  ten times the examples, for soak runs; also runs tests marked `slow` and lifts
        the per-test timeout unless --timeout is given.
  dev   a quick look while editing: ten examples a test.

`pytest --hypothesis-profile=<name>` (hypothesis' own option) also works and wins.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.strategies import CI_MAX_EXAMPLES

PROFILE_ENV = "THECAL_HYPOTHESIS_PROFILE"
LONG_PROFILE = "long"

settings.register_profile(
    "ci",
    max_examples=CI_MAX_EXAMPLES,
    deadline=None,  # CI machines stall; a deadline would make tests flaky, not faster
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(LONG_PROFILE, settings.get_profile("ci"), max_examples=10 * CI_MAX_EXAMPLES)
settings.register_profile("dev", settings.get_profile("ci"), max_examples=CI_MAX_EXAMPLES // 10)
settings.load_profile(os.environ.get(PROFILE_ENV) or "ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="long campaigns: the 'long' hypothesis profile, tests marked slow, no per-test timeout",
    )
    parser.addoption(
        "--trace-report",
        metavar="FILE",
        help="write each req-marked test's requirements and outcome to FILE (for `thecal trace`)",
    )
    parser.addoption(
        "--split",
        action="store_true",
        default=False,
        help="firmware HIL tests run the firmware in its own process (`thecal firmware`) instead of in the emulator",
    )
    # Campaigns (tests/test_campaign_link.py, tests/test_campaign_fuzz.py; docs/campaigns.md).
    parser.addoption(
        "--campaign-shard",
        default=None,
        metavar="i/n",
        help="campaign tests: run only shard i of n (1..n) of each campaign's seeds, for CI jobs on several machines",
    )
    parser.addoption(
        "--campaign-report",
        default=None,
        metavar="DIR",
        help="campaign tests: write each seed's result to DIR (merge them with `thecal campaign merge DIR/*.json`)",
    )


def _long(config: pytest.Config) -> bool:
    return bool(config.getoption("--long")) or settings.get_current_profile_name() == LONG_PROFILE


def pytest_configure(config: pytest.Config) -> None:
    from tests import harness

    harness.DEFAULT_SPLIT = bool(config.getoption("--split"))
    explicit = os.environ.get(PROFILE_ENV) or config.getoption("--hypothesis-profile", default=None)
    if config.getoption("--long") and not explicit:
        settings.load_profile(LONG_PROFILE)


def pytest_report_header(config: pytest.Config) -> str:
    mode = "split (own process)" if config.getoption("--split") else "in-process"
    return (
        f"thecal: hypothesis profile {settings.get_current_profile_name()!r} ({PROFILE_ENV} or --long); "
        f"firmware HIL tests {mode} (--split)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Runs after every plugin's pytest_configure, so the profile is final here.
    if _long(config):
        if config.getoption("timeout", default=None) is None:  # no --timeout given
            for item in items:
                item.add_marker(pytest.mark.timeout(0))
        return
    skip = pytest.mark.skip(reason="long campaign: run with --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------- traceability


def pytest_itemcollected(item: pytest.Item) -> None:
    # user_properties travel with the report from xdist workers to the controller.
    reqs = [r for m in item.iter_markers("req") for r in m.args]
    if reqs:
        item.user_properties.append(("req", reqs))


_TRACE: dict[str, dict] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    reqs = next((v for k, v in report.user_properties if k == "req"), None)
    if reqs is None:
        return
    t = _TRACE.setdefault(report.nodeid, {"reqs": list(reqs), "outcome": "passed"})
    if report.failed:
        t["outcome"] = "failed"
    elif report.skipped and t["outcome"] != "failed":
        t["outcome"] = "skipped"


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    path = config.getoption("--trace-report")
    if not path or hasattr(config, "workerinput"):
        return
    import json
    from pathlib import Path

    label = "split" if config.getoption("--split") else "in-process"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"label": label, "tests": _TRACE}, indent=1))
