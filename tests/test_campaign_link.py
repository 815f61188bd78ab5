"""The link fault campaign (tools/campaign_link.py), one test per seed so pytest-xdist
spreads the seeds over its workers.

Default (CI): seeds 0-47, every cell of the matrix (fault kind x link x rate) once, 24 h
of noise each. `--long`: seeds 0-479, every cell ten times, 72 h of noise each.
`--campaign-shard i/n` keeps shard i of n of the seeds (CI jobs on several machines);
`--campaign-report DIR` writes each seed's result for `thecal campaign merge`.
A failure names the checks that failed and the command that runs the seed again.
"""

from __future__ import annotations

import pytest

from tests.campaign_support import message, plan, record
from tools.campaign import run_one
from tools.campaign_link import CELLS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "link_seed" in metafunc.fixturenames:
        _, _, _, seeds = plan(metafunc.config, "link")
        ids = []
        for s in seeds:
            kind, link, rate = CELLS[s % len(CELLS)]
            ids.append(f"{s}-{kind.name.lower().removeprefix('link_')}-{link.name.lower()}-{rate / 10_000:g}%")
        metafunc.parametrize("link_seed", seeds, ids=ids)


def test_link_campaign(link_seed: int, request: pytest.FixtureRequest) -> None:
    _, params, _, _ = plan(request.config, "link")
    result = run_one("link", link_seed, params)
    record(request.config, "link", result)
    assert result.passed, message(result)
