"""What the campaign test modules share: which seeds and parameters a run takes (the CI
profile, or the long one under --long), the --campaign-shard selection, and writing each
seed's result for `thecal campaign merge` (--campaign-report DIR)."""

from __future__ import annotations

import pytest

from tools.campaign import (
    PROFILES,
    SeedResult,
    campaign_params,
    make_report,
    parse_seeds,
    parse_shard,
    select_shard,
    write_report,
)


def is_long(config: pytest.Config) -> bool:
    from hypothesis import settings

    return bool(config.getoption("--long")) or settings.get_current_profile_name() == "long"


def plan(config: pytest.Config, campaign: str) -> tuple[str, dict, tuple[int, int] | None, list[int]]:
    """(seed spec, parameters, shard, the seeds this run takes) for a campaign."""
    spec, params = campaign_params(campaign, is_long(config))
    shard = parse_shard(config.getoption("--campaign-shard"))
    return spec, params, shard, select_shard(parse_seeds(spec), shard)


def record(config: pytest.Config, campaign: str, result: SeedResult) -> None:
    """With --campaign-report DIR: this seed's result as a one-seed report, naming the
    whole seed range and shard so a merge can tell which seeds are missing."""
    out = config.getoption("--campaign-report")
    if not out:
        return
    spec, params, shard, _ = plan(config, campaign)
    report = make_report(campaign, spec, shard, params, [result], result.wall_s)
    write_report(f"{out}/{campaign}-seed{result.seed:05d}.json", report)


def message(result: SeedResult) -> str:
    return f"{result.failure}\nreproduce: {result.reproduce}"


__all__ = ["PROFILES", "is_long", "message", "plan", "record"]
