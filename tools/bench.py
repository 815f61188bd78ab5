"""`thecal bench ...`: throughput figures as one JSON document.

Figures are the best of several repeats (the least disturbed by whatever else the
machine was doing), with the median beside it, measured in one process on one core.
docs/performance.md quotes them with the machine they ran on.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from protocol import codec
from protocol.auth import FrameSigner, FrameVerifier
from protocol.codes import AlarmId, CatheterState, Priority, Role, TherapyState
from protocol.messages import AlarmEntry, BolusRequest, StatusAck
from protocol.schema import NONE_U64

TARGETS = {"status_response_pairs_per_s": 100_000, "authenticated_request_pairs_per_s": 50_000}


# 30-day reference therapy, simulated over wall time: what `thecal emulator` runs (the
# firmware embedded, its NVM the file; issue 11), in memory (issue 4), split (issue 5).
TARGET_EMBEDDED_FILE = 1_500_000
TARGET_EMBEDDED_MEMORY = 1_000_000
TARGET_SPLIT = 200_000


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
    }


def _rate(pair: Callable[[int], None], seconds: float, repeats: int) -> dict[str, float]:
    # Calibrate a batch size that takes about `seconds`, then time `repeats` batches.
    n = 1000
    while True:
        t0 = time.perf_counter()
        for i in range(n):
            pair(i)
        dt = time.perf_counter() - t0
        if dt >= seconds / 4 or n >= 10_000_000:
            break
        n *= 2
    n = max(1000, int(n * seconds / max(dt, 1e-9)))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            pair(i)
        rates.append(n / (time.perf_counter() - t0))
    return {"best": round(max(rates)), "median": round(statistics.median(rates)), "pairs_per_repeat": n}


def example_status() -> StatusAck:
    return StatusAck(
        state=TherapyState.RUNNING,
        bolus_active=False,
        time_s=86_400,
        clock_s=1_767_312_000,
        drug="morphine",
        concentration_ng_per_ml=5_000_000,
        basal_rate_ng_per_day=1_500_000,
        reservoir_nl=11_400_000,
        low_reservoir_at_s=NONE_U64,
        low_reservoir_worst_at_s=NONE_U64,
        lockout_remaining_s=3_600,
        boluses_24h=2,
        max_boluses_24h=6,
        dose_24h_ng=1_450_000,
        max_dose_24h_ng=3_000_000,
        alarms=(
            AlarmEntry(
                alarm=AlarmId.LOW_RESERVOIR,
                priority=Priority.LOW,
                acknowledged=False,
                condition_present=True,
                silenced=False,
                needs_reset=False,
            ),
        ),
        battery_mv=3_050,
        last_command_id=42,
        catheter_state=CatheterState.PRIMED,
        catheter_volume_nl=200_000,
    )


def bench_codec(seconds: float = 1.0, repeats: int = 5) -> dict[str, Any]:
    """Encode+decode pairs per second: a status response (unauthenticated, as the pump
    sends it) and a signed bolus request checked by the verifier (as the pump receives it)."""
    status = example_status()
    decoder = codec.MessageDecoder()
    encode = codec.encode
    feed = decoder.feed

    def status_pair(i: int) -> None:
        (item,) = feed(encode(status, i))
        if item.message.last_command_id != 42:
            raise AssertionError("status did not survive the round trip")

    key = bytes(range(32))
    signer = FrameSigner(Role.PATIENT, key)
    verifier = FrameVerifier({Role.PATIENT: key})
    check = verifier.check
    request = BolusRequest(command_id=7)

    def auth_pair(i: int) -> None:
        (item,) = feed(encode(request, i, signer))
        if not check(item.frame).ok:
            raise AssertionError("signed request failed verification")

    results = {
        "status_response_pairs_per_s": _rate(status_pair, seconds, repeats),
        "authenticated_request_pairs_per_s": _rate(auth_pair, seconds, repeats),
    }
    if decoder.frames.error_count or decoder.rejected:
        raise AssertionError("the benchmark's own frames were rejected")
    return {
        "bench": "codec",
        "unit": "encode+decode pairs per second, one core",
        "results": {
            k: {**v, "target": TARGETS[k], "meets_target": v["best"] >= TARGETS[k]} for k, v in results.items()
        },
        "status_frame_bytes": len(encode(status, 0)),
        "request_frame_bytes": len(encode(request, 0, FrameSigner(Role.PATIENT, key))),
        "machine": machine(),
    }


def bench_emulator(days: int = 30, seed: int = 1) -> dict[str, Any]:
    """The reference therapy for `days` simulated days, in lockstep, driven by the
    scripted controller in-process (the default embedded mode, every frame through the
    codec). When the physical reservoir falls below the 2 mL low-reservoir level, it is
    refilled to 20 mL the next day, withdrawing the physical residual."""
    import resource

    from emulator.model import PumpModel
    from emulator.rig import InProcessPort, Rig
    from emulator.scripted import ScriptedController, reference_actions
    from protocol.auth import new_key

    model = PumpModel()
    actions = reference_actions(days, seed, model.stroke_nl)
    keys = {role: new_key() for role in Role}
    rig = Rig(model, InProcessPort(lambda: ScriptedController(list(actions))), keys, seed=seed)
    day_ms = 86_400_000
    low_nl = 2_000_000
    refills = []
    t0 = time.perf_counter()
    rig.boot()
    refill_due = None
    for day in range(days):
        if refill_due is not None and day >= refill_due:
            hw = rig.hw
            w = hw.refill(hw.fluid.reservoir_nl, model.reservoir_capacity_ul * 1000, 5_000_000, False)
            refills.append({"day": day, "withdrawn_nl": w})
            refill_due = None
        rig.advance(day_ms)
        if refill_due is None and rig.hw.fluid.reservoir_nl < low_nl:
            refill_due = day + 1
    wall = time.perf_counter() - t0
    hw = rig.hw
    sim_s = days * 86_400
    return {
        "bench": "emulator",
        "scenario": f"reference therapy, {days} days, lockstep, scripted controller in-process",
        "simulated_s": sim_s,
        "wall_s": round(wall, 3),
        "sim_per_wall": round(sim_s / wall),
        "events_handled": hw.sched.events_run,
        "pump_link_frames": rig.pump_rx.frames.frames + rig._pump_seq,
        "strokes": hw.odometer,
        "delivered_nl": hw.fluid.delivered_nl,
        "delivered_ng": hw.fluid.delivered_fg // 1_000_000,
        "refills": refills,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "machine": machine(),
    }


def bench_firmware(days: int = 30, seed: int = 1, split: bool = False, nvm: str = "file") -> dict[str, Any]:
    """The reference therapy with the real firmware, lockstep, every request signed and
    relayed as over a pty (tools/inprocess.py). Embedded in the emulator's process (its NVM
    the real file, or nvm="memory"), or with split=True in its own process over a pty."""
    import resource
    import tempfile

    from protocol.messages import SimGroundTruth, Status
    from tools.inprocess import LocalPump, run_reference

    with tempfile.TemporaryDirectory(prefix="thecal-bench-") as tmp:
        state_dir = tmp if split or nvm == "file" else None
        with LocalPump(seed=seed, state_dir=state_dir, split=split) as pump:
            t0 = time.perf_counter()
            run = run_reference(pump, days, seed)
            wall = time.perf_counter() - t0
            truth = pump.request(SimGroundTruth(tones_from=0))
            status = pump.request(Status())
        # Counted once the firmware process has been waited for (LocalPump.close).
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if split else None
    sim_s = days * 86_400
    target = TARGET_SPLIT if split else TARGET_EMBEDDED_FILE if nvm == "file" else TARGET_EMBEDDED_MEMORY
    where = "in its own process over a pty" if split else f"embedded, NVM in {'a file' if nvm == 'file' else 'memory'}"
    return {
        "bench": "firmware",
        "scenario": f"reference therapy, {days} days, lockstep, firmware {where}",
        "split": split,
        "nvm": "file" if split else nvm,
        "simulated_s": sim_s,
        "wall_s": round(wall, 3),
        "sim_per_wall": round(sim_s / wall),
        "target_sim_per_wall": target,
        "meets_target": sim_s / wall >= target,
        "events_handled": pump.rig.hw.sched.events_run,
        "boluses_granted": run.granted,
        "boluses_denied": run.denied,
        "refills": run.refills,
        "alarms_raised": run.alarms,
        "delivered_ng_ground_truth": truth.delivered_ng,
        "delivered_nl_ground_truth": truth.delivered_nl,
        "reservoir_nl_ground_truth": truth.reservoir_nl,
        "reservoir_nl_firmware": status.reservoir_nl,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "firmware_process_max_rss_kib": child,
        "machine": machine(),
    }


def run_bench(
    what: str,
    seconds: float = 1.0,
    repeats: int = 5,
    days: int = 30,
    split: bool = False,
    nvm: str = "file",
    frames: int = 600_000,
) -> dict[str, Any]:
    if what == "firmware":
        return bench_firmware(days, split=split, nvm=nvm)
    if what == "latency":
        return bench_latency()
    if what == "all":
        return bench_all(days, seconds, repeats)
    if what == "codec":
        return bench_codec(seconds, repeats)
    if what == "emulator":
        return bench_emulator(days)
    if what == "flood":
        from tools.bench_flood import bench_flood

        return bench_flood(frames)
    raise ValueError(f"unknown benchmark {what!r}")


def bench_latency(requests: int = 2_000) -> dict[str, Any]:
    """Host round trips over a real pty to a `thecal emulator` process (firmware in the
    emulator's process): signed STATUS to the controller and back through the relay, and
    sim-control ground truth answered by the emulator itself. Percentiles of wall time."""
    import subprocess
    import sys
    import tempfile

    from protocol.messages import SimGroundTruth, Status
    from tools.client import Client

    def percentiles(samples: list[float]) -> dict[str, float]:
        s = sorted(samples)
        pick = lambda q: round(s[min(len(s) - 1, int(q * len(s)))] * 1e6)  # noqa: E731 - µs
        return {"p50_us": pick(0.50), "p99_us": pick(0.99), "max_us": round(s[-1] * 1e6), "n": len(s)}

    with tempfile.TemporaryDirectory(prefix="thecal-bench-") as tmp:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            [sys.executable, "-m", "tools.cli", "emulator", "--state-dir", tmp, "--exit-on-stdin-eof"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            line = proc.stdout.readline().decode().split()
            if not line or line[0] != "READY":
                raise RuntimeError(f"thecal emulator did not start: {line}")
            with Client.from_state_dir(tmp) as client:
                for _ in range(50):  # warm up: imports, caches, the controller's boot
                    client.request(Status())
                status, sim = [], []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    client.request(Status())
                    status.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    client.request(SimGroundTruth(tones_from=0))
                    sim.append(time.perf_counter() - t0)
        finally:
            os.killpg(proc.pid, 9)
            proc.wait()
    return {
        "bench": "latency",
        "scenario": "signed request, answer read, over a real pty to `thecal emulator` (firmware in-process)",
        "status_round_trip": percentiles(status),
        "sim_ground_truth_round_trip": percentiles(sim),
        "machine": machine(),
    }


def bench_all(days: int = 30, seconds: float = 1.0, repeats: int = 5, latency_requests: int = 2_000) -> dict[str, Any]:
    """Everything in one document, each figure beside its target (None where none is set)."""
    import resource

    codec_r = bench_codec(seconds, repeats)
    latency = bench_latency(latency_requests)
    emulator = bench_emulator(days)
    embedded = bench_firmware(days, nvm="file")
    embedded_mem = bench_firmware(days, nvm="memory")
    split = bench_firmware(days, split=True)

    def fig(value: float, target: float | None, unit: str, higher_is_better: bool = True) -> dict[str, Any]:
        meets = None if target is None else (value >= target if higher_is_better else value <= target)
        return {"value": value, "unit": unit, "target": target, "meets_target": meets}

    return {
        "bench": "all",
        "figures": {
            "codec_status_response": fig(codec_r["results"]["status_response_pairs_per_s"]["best"], 100_000, "pairs/s"),
            "codec_signed_request": fig(
                codec_r["results"]["authenticated_request_pairs_per_s"]["best"], 50_000, "pairs/s"
            ),
            "host_status_latency_p50": fig(latency["status_round_trip"]["p50_us"], None, "us", False),
            "host_status_latency_p99": fig(latency["status_round_trip"]["p99_us"], None, "us", False),
            "emulator_30d_scripted": fig(emulator["sim_per_wall"], None, "x real time"),
            "firmware_30d_embedded_file_nvm": fig(embedded["sim_per_wall"], TARGET_EMBEDDED_FILE, "x real time"),
            "firmware_30d_embedded_memory_nvm": fig(
                embedded_mem["sim_per_wall"], TARGET_EMBEDDED_MEMORY, "x real time"
            ),
            "firmware_30d_split": fig(split["sim_per_wall"], TARGET_SPLIT, "x real time"),
            "peak_rss": fig(
                max(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                ),
                None,
                "KiB",
                False,
            ),
        },
        "details": {
            "codec": codec_r,
            "latency": latency,
            "emulator": emulator,
            "firmware_embedded_file_nvm": embedded,
            "firmware_embedded_memory_nvm": embedded_mem,
            "firmware_split": split,
        },
        "machine": machine(),
    }
