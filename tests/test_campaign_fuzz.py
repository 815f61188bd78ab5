"""Protocol fuzzing of the running rig (tools/campaign_fuzz.py), one test per seed so
pytest-xdist spreads the seeds over its workers.

Default (CI): seeds 0-9, 1,000 frames each (10,000 in all), each seed on its own
`thecal emulator` process over its host pty. `--long`: seeds 0-47, 2,500 frames each
(120,000 in all). `--campaign-shard i/n` and `--campaign-report DIR` as for the link
campaign. A failure names the checks that failed and the command that runs the seed again.
"""

from __future__ import annotations

import pytest

from tests.campaign_support import message, plan, record
from tools.campaign import run_one


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fuzz_seed" in metafunc.fixturenames:
        _, _, _, seeds = plan(metafunc.config, "fuzz")
        metafunc.parametrize("fuzz_seed", seeds, ids=[f"seed{s}" for s in seeds])


def test_fuzz_campaign(fuzz_seed: int, request: pytest.FixtureRequest) -> None:
    _, params, _, _ = plan(request.config, "fuzz")
    result = run_one("fuzz", fuzz_seed, params)
    record(request.config, "fuzz", result)
    assert result.passed, message(result)
    assert result.counters["frames"] == params["frames"]
    assert result.counters["accepted_corrupted"] == 0


def test_fuzz_ci_profile_sends_at_least_ten_thousand_frames_and_the_long_one_a_hundred_thousand() -> None:
    from tools.campaign import PROFILES, parse_seeds

    def total(profile: dict) -> int:
        return len(parse_seeds(profile["seeds"])) * profile["frames"]

    assert total(PROFILES["fuzz"]["ci"]) >= 10_000
    assert total(PROFILES["fuzz"]["long"]) >= 100_000


def test_fuzz_in_process_transport_finds_the_same_as_the_pty() -> None:
    """The in-process rig (quick to reproduce a seed under a debugger) answers a seed's
    frames as the emulator process does."""
    a = run_one("fuzz", 3, {"frames": 300, "transport": "inprocess"})
    b = run_one("fuzz", 3, {"frames": 300, "transport": "pty"})
    assert a.passed and b.passed, (a.failure, b.failure)
    # What was sent and what the pump logged are the same (answers on the pty are not
    # compared: a pty with nobody reading fast enough drops them, as a serial line would).
    same = {k: v for k, v in a.counters.items() if not k.startswith("answer_")}
    assert same == {k: v for k, v in b.counters.items() if not k.startswith("answer_")}
