"""`thecal bench flood`: the emulator's memory while host programs write and never read.

A `thecal emulator` process (firmware in-process, lockstep) gets `frames` signed STATUS
requests on its pty and as many on a connection to its host socket, from programs that
never read an answer, while a third program on the socket is answered throughout. The
figure is the emulator's peak resident memory (VmHWM) against its resident memory
before the flood; docs/performance.md states the bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Any

from emulator.hostlink import SOCKET_NAME, connect
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import Role
from protocol.keyfile import load_keys
from protocol.messages import SimGroundTruth, Status
from tools.client import Client


def _mem_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


def bench_flood(frames: int = 600_000) -> dict[str, Any]:
    from tools.bench import machine

    with tempfile.TemporaryDirectory(prefix="thecal-bench-") as tmp:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            [sys.executable, "-m", "tools.cli", "emulator", "--state-dir", tmp, "--exit-on-stdin-eof"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            line = proc.stdout.readline().decode().split()
            if not line or line[0] != "READY":
                raise RuntimeError(f"thecal emulator did not start: {line}")
            keys = load_keys(Path(tmp) / "keys.json")
            counter = time.time_ns() // 1000

            def signed(role: Role) -> list[bytes]:
                # Each frame fresh (a replayed one would be refused before the firmware
                # did its work, and answered only within the key id's NAK budget).
                s = FrameSigner(role, keys[role], counter=counter)
                return [codec.encode(Status(), i & 0xFFFF, s) for i in range(frames)]

            pty_frames, sock_frames = signed(Role.CLINICIAN), signed(Role.PATIENT)
            with Client.from_state_dir(tmp) as probe:  # asks as the simulator: a key of its own
                probe.sim(SimGroundTruth(tones_from=0))  # started and answering
                before = _mem_kib(proc.pid)["VmRSS"]
                pty = os.open(line[1], os.O_RDWR | os.O_NOCTTY)
                tty.setraw(pty)
                sock = connect(Path(tmp) / SOCKET_NAME)

                def write_pty() -> None:
                    for frame in pty_frames:
                        data = memoryview(frame)
                        while data:
                            data = data[os.write(pty, data) :]

                def write_sock() -> None:
                    for frame in sock_frames:
                        sock.sendall(frame)

                t0 = time.perf_counter()
                writers = [threading.Thread(target=write_pty), threading.Thread(target=write_sock)]
                for w in writers:
                    w.start()
                answered = []
                while any(w.is_alive() for w in writers):
                    s0 = time.perf_counter()
                    probe.sim(SimGroundTruth(tones_from=0), timeout_s=30)
                    answered.append(time.perf_counter() - s0)
                    time.sleep(0.2)
                wall = time.perf_counter() - t0
                probe.sim(SimGroundTruth(tones_from=0), timeout_s=60)  # the emulator has caught up
                mem = _mem_kib(proc.pid)
                os.close(pty)
                sock.close()
        finally:
            os.killpg(proc.pid, 9)
            proc.wait()
    return {
        "bench": "flood",
        "scenario": f"{frames} signed STATUS requests on the pty and {frames} on a host-socket connection, "
        "answers never read; a third client answered throughout",
        "frames": 2 * frames,
        "wall_s": round(wall, 1),
        "frames_per_s": round(2 * frames / wall),
        "rss_before_kib": before,
        "rss_after_kib": mem["VmRSS"],
        "peak_rss_kib": mem["VmHWM"],
        "peak_growth_kib": mem["VmHWM"] - before,
        "probe_answers": len(answered),
        "probe_worst_round_trip_ms": round(max(answered, default=0.0) * 1000, 1),
        "machine": machine(),
    }
