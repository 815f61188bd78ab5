"""`thecal bench all`: one JSON document, every figure beside its target (figures are
quoted in docs/performance.md, never asserted as timings here)."""

from __future__ import annotations

import json

from tools.bench import bench_all


def test_bench_all_is_one_document_with_every_figure_and_its_target():
    d = bench_all(days=1, seconds=0.02, repeats=1, latency_requests=20)
    json.dumps(d)  # one JSON document
    f = d["figures"]
    assert set(f) == {
        "codec_status_response",
        "codec_signed_request",
        "host_status_latency_p50",
        "host_status_latency_p99",
        "emulator_30d_scripted",
        "firmware_30d_embedded_file_nvm",
        "firmware_30d_embedded_memory_nvm",
        "firmware_30d_split",
        "peak_rss",
    }
    assert f["firmware_30d_split"]["target"] == 200_000 and f["codec_status_response"]["target"] == 100_000
    assert f["firmware_30d_embedded_file_nvm"]["target"] == 1_500_000  # issue 11
    for v in f.values():
        assert v["value"] > 0 and (v["meets_target"] is None) == (v["target"] is None)
    runs = [d["details"][k] for k in ("firmware_embedded_file_nvm", "firmware_embedded_memory_nvm", "firmware_split")]
    # The same therapy gives the same result however the firmware is run.
    assert (
        len({(r["boluses_granted"], json.dumps(r["boluses_denied"]), r["delivered_nl_ground_truth"]) for r in runs})
        == 1
    )
