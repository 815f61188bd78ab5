"""A fresh emulated pump for a hardware-in-the-loop test: `thecal emulator` (and, split,
`thecal firmware`) as real processes, and one client on its host port.

    with start_pump(tmp_path, model={"initial_fill_ul": 3_000}) as pump:
        pump.record_fill()
        pump.clinician.program(load_program("therapy.toml", 0))
        pump.clinician.start()
        pump.advance_to(3_600_000)
        assert pump.patient.bolus().decision is BolusDecision.LOCKOUT

This is what the pytest plugin (tools/pytest_plugin.py) and scenario files build on;
it needs no pytest. It follows what the project's own HIL harness learned:
  * each process runs in its own session, and its whole process group is killed when the
    pump is closed, so nothing outlives a test (nor a test that hung);
  * the processes run with `--exit-on-stdin-eof` and a pipe on stdin: closing it is the
    clean stop, which also flushes the capture file;
  * the READY line is read from the raw stdout fd with a wall-clock timeout (select),
    never through a buffered reader that could swallow or stall on it;
  * every pump has its own directory (state, keys, capture, logs) and its own ptys, so
    pumps in parallel test processes (pytest-xdist) never meet.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.capture import Link as CapLink
from emulator.hostlink import SOCKET_NAME
from emulator.model import PumpModel
from protocol.codes import MotorState, Role
from protocol.messages import SimGroundTruthAck
from tools.client import Client, load_keys
from tools.decode import CaptureError, decode_capture, format_text

START_TIMEOUT_S = 20.0  # generous: a loaded CI machine running tests on every core
STOP_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 10.0


class PumpStartError(RuntimeError):
    """The emulator or the firmware did not start; the message holds what it printed."""


def read_line(fd: int, timeout_s: float) -> bytes:
    """One line from a raw fd, byte by byte, so nothing past the newline is taken from
    the pipe. Returns what was read (without a newline) if the fd closes first; raises
    PumpStartError when no whole line came within timeout_s."""
    deadline = time.monotonic() + timeout_s
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise PumpStartError(f"no complete line within {timeout_s:g} s (got {line!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        b = os.read(fd, 1)
        if not b:
            return line
        line += b
    return line


def thecal_argv(*args: str) -> list[str]:
    """`thecal ARGS` as this interpreter runs it. -P keeps the working directory off
    sys.path, so a project's own `tools/` (or `protocol/` ...) package cannot shadow ours."""
    return [sys.executable, "-P", "-m", "tools.cli", *args]


class ManagedProcess:
    """A child in its own session with a pipe on stdin and stderr in a log file."""

    def __init__(self, argv: Sequence[str], log: Path, cwd: Path, stdout: int | None = None) -> None:
        self.argv = list(argv)
        self.log = Path(log)
        self._log_f = open(self.log, "wb")  # closed in kill_group()
        self.proc = subprocess.Popen(  # noqa: S603 - argv is ours: this interpreter running thecal
            self.argv,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=self._log_f,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self) -> str:
        if not self._log_f.closed:
            self._log_f.flush()
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Close stdin (the clean stop) and wait; None if it did not exit in time."""
        self.close_stdin()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        """SIGKILL the process group (the process and anything it started), then reap."""
        self.close_stdin()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_f.close()


class RoleClient:
    """A view of a Client that signs as one role: methods that take a `role` get this one
    unless the call names another, and the client's default role is this one for the
    call (so requests a method makes on its own are signed alike). Sim-control is signed
    with the sim key whatever the view. Every view of a pump shares its one Client: two
    readers on one pty would take each other's bytes."""

    def __init__(self, client: Client, role: Role) -> None:
        self._client = client
        self._role = role

    @property
    def role(self) -> Role:
        return self._role

    @property
    def client(self) -> Client:
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or not inspect.ismethod(attr):
            return attr
        signature = inspect.signature(attr)
        takes_role = "role" in signature.parameters

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            if takes_role and "role" not in signature.bind_partial(*args, **kwargs).arguments:
                kwargs["role"] = self._role
            saved = self._client.role
            self._client.role = self._role
            try:
                return attr(*args, **kwargs)
            finally:
                self._client.role = saved

        return call

    def __repr__(self) -> str:
        return f"<RoleClient {self._role.name.lower()} on {self._client.port_path}>"


@dataclass(frozen=True)
class PumpFiles:
    """Where one pump keeps its things: all under one directory of its own."""

    directory: Path

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def capture(self) -> Path:
        return self.directory / "capture.pcap"

    @property
    def model(self) -> Path:
        return self.directory / "pump-model.toml"

    @property
    def emulator_log(self) -> Path:
        return self.directory / "emulator.log"

    @property
    def firmware_log(self) -> Path:
        return self.directory / "firmware.log"


def write_model_file(path: Path, figures: Mapping[str, Any]) -> PumpModel:
    """Check `figures` against emulator/model.py (ModelError naming a bad key or value)
    and write them as a pump-model TOML file."""
    model = PumpModel().with_overrides(dict(figures))
    # Integers and strings are all a model holds, and JSON writes both as valid TOML.
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in figures.items()))
    return model


class Pump:
    """A running emulated pump, its files and its one host client.

    `clinician` and `patient` are views of the client that sign as that role; `sim` is the
    client itself, whose sim-control methods (advance, inject_fault, clear_fault,
    ground_truth, tones, power_cycle, sim_refill) always sign with the sim key."""

    def __init__(
        self,
        files: PumpFiles,
        model: PumpModel,
        split: bool,
        emulator: ManagedProcess,
        firmware: ManagedProcess | None,
        client: Client,
    ) -> None:
        self.files = files
        self.model = model
        self.split = split
        self._emulator = emulator
        self._firmware = firmware
        self.client = client
        self.clinician = RoleClient(client, Role.CLINICIAN)
        self.patient = RoleClient(client, Role.PATIENT)
        self.sim = client
        self.stopped = False
        self._attached: list[Client] = []

    def attach(self, role: Role = Role.CLINICIAN) -> Client:
        """Another host program on this pump, on the emulator's host socket: it gets the
        answers to its own requests and every event, beside `client` (closed with the pump)."""
        c = Client(
            str(self.files.state_dir / SOCKET_NAME),
            load_keys(self.files.state_dir / "keys.json"),
            role,
            timeout_s=CLIENT_TIMEOUT_S,
        )
        self._attached.append(c)
        return c

    @property
    def state_dir(self) -> Path:
        return self.files.state_dir

    @property
    def capture(self) -> Path:
        return self.files.capture

    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self._firmware, self._emulator) if p is not None]

    def logs(self) -> dict[str, str]:
        """stderr of each process so far, by name ('emulator', 'firmware')."""
        out = {"emulator": self._emulator.stderr_text()}
        if self._firmware is not None:
            out["firmware"] = self._firmware.stderr_text()
        return out

    # ------------------------------------------------------------ time and truth

    def now_ms(self) -> int:
        """The pump's simulated time (ms since the emulator started)."""
        return self.sim.ground_truth().time_ms

    def advance_to(self, time_ms: int) -> int:
        """Lockstep: move simulated time on to time_ms; returns the time now. ValueError
        when the pump is already past it."""
        now = self.now_ms()
        if time_ms < now:
            raise ValueError(f"cannot go back in time: the pump is at {now} ms, asked for {time_ms} ms")
        return self.sim.advance(time_ms - now) if time_ms > now else now

    def truth(self) -> SimGroundTruthAck:
        return self.sim.ground_truth()

    def motor_running(self) -> bool:
        return self.truth().motor is MotorState.RUNNING

    # ------------------------------------------------------------ set-up

    def record_fill(self, drug: str | None = None, concentration_ng_per_ml: int | None = None) -> int:
        """Tell the firmware what the pump physically holds (until a fill is recorded it
        does not know, and therapy cannot start): a
        REFILL_BEGIN and a REFILL_COMPLETE that withdrew nothing and added the volume the
        ground truth shows. Drug and concentration default to the pump model's fill
        ('morphine' when the model says nothing of the drug). Returns the volume (nL)."""
        held_nl = self.truth().reservoir_nl
        self.clinician.refill_begin()
        self.clinician.refill_complete(
            withdrawn_nl=0,
            added_nl=held_nl,
            drug=drug or "morphine",
            concentration_ng_per_ml=concentration_ng_per_ml or self.model.initial_concentration_ng_per_ml,
        )
        return held_nl

    # ------------------------------------------------------------ reports

    def traffic_report(self, max_frames: int = 60) -> str:
        """The capture's path and its host-link frames (the test's own traffic) decoded,
        the last max_frames of them (0: all). Stop the pump first: the emulator writes the
        capture out as it exits."""
        return traffic_report(self.capture, max_frames)

    # ------------------------------------------------------------ stopping

    def stop(self) -> dict[str, int | None]:
        """Stop cleanly (stdin closed, so the capture is flushed and complete), killing
        what does not exit in time. Returns each process's exit status (None: killed).
        Idempotent."""
        if self.stopped:
            return {}
        self.stopped = True
        self._close_clients()
        codes: dict[str, int | None] = {}
        # The firmware first: with the emulator (and its pty) gone, it would be writing
        # into a dead link. In lockstep no time passes while it is away.
        if self._firmware is not None:
            codes["firmware"] = self._firmware.stop()
        codes["emulator"] = self._emulator.stop()
        self.close()
        return codes

    def _close_clients(self) -> None:
        self.client.close()
        for c in self._attached:
            c.close()
        self._attached.clear()

    def close(self) -> None:
        """Kill every process group of the pump at once (no clean stop). Idempotent."""
        self.stopped = True
        self._close_clients()
        for p in self.processes():
            p.kill_group()

    def __enter__(self) -> Pump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def traffic_report(capture: Path, max_frames: int = 60) -> str:
    """A capture file named and its host-link frames decoded (the last max_frames; 0: all)."""
    try:
        frames = decode_capture(capture)
    except CaptureError as e:
        return f"capture: {capture}\n(not decoded: {e})\n"
    host = [f for f in frames if f.link == CapLink.HOST]
    shown = host[-max_frames:] if max_frames > 0 else host
    lines = [
        f"capture: {capture}",
        f"{len(frames)} frames, {len(host)} of them on the host link; `thecal decode {capture}` shows every one",
    ]
    if len(shown) < len(host):
        lines.append(f"the last {len(shown)} host-link frames:")
    return "\n".join(lines) + "\n" + format_text(shown)


def _wait_until(cond: Callable[[], bool], what: str, procs: Sequence[ManagedProcess], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        for p in procs:
            if not p.alive:
                raise PumpStartError(f"{what}: {p.argv[4]} exited with {p.proc.returncode}:\n{p.stderr_text()}")
        if time.monotonic() > deadline:
            raise PumpStartError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


def start_pump(
    directory: str | Path,
    *,
    split: bool = False,
    model: Mapping[str, Any] | None = None,
    seed: int = 0,
    start_clock: str | None = None,
    capture_wall_time: bool = True,
    timeout_s: float = START_TIMEOUT_S,
) -> Pump:
    """Start a fresh pump with everything under `directory` (made if missing; its state
    must be new): `thecal emulator` in lockstep with a capture, the firmware in its
    process, or with split=True in a `thecal firmware` process of its own. `model`
    overrides figures of emulator/model.py (ModelError names a bad key before anything
    starts); seed, start_clock and capture_wall_time are the emulator's --seed, --start
    and --no-capture-wall-time."""
    files = PumpFiles(Path(directory))
    files.directory.mkdir(parents=True, exist_ok=True)
    if (files.state_dir / "pump.json").exists():
        raise PumpStartError(f"{files.state_dir} already holds a pump: a fresh pump needs a fresh directory")
    figures = dict(model or {})
    pump_model = write_model_file(files.model, figures)
    args = [
        "emulator",
        "--state-dir",
        str(files.state_dir),
        "--exit-on-stdin-eof",
        "--capture",
        str(files.capture),
        "--seed",
        str(seed),
        "--pump-model",
        str(files.model),
    ]
    if split:
        args.append("--split")
    if start_clock is not None:
        args += ["--start", start_clock]
    if not capture_wall_time:
        args.append("--no-capture-wall-time")
    emulator = ManagedProcess(thecal_argv(*args), files.emulator_log, files.directory, stdout=subprocess.PIPE)
    firmware: ManagedProcess | None = None
    client: Client | None = None
    try:
        line = read_line(emulator.proc.stdout.fileno(), timeout_s)
        fields = line.decode(errors="replace").split()
        if not fields or fields[0] != "READY":
            emulator.stop(1.0)
            raise PumpStartError(f"the emulator did not start (stdout {line!r}):\n{emulator.stderr_text()}")
        host = fields[1]
        client = Client(host, load_keys(files.state_dir / "keys.json"), Role.CLINICIAN, timeout_s=CLIENT_TIMEOUT_S)
        if split:
            fw_args = ["firmware", "--port", fields[2], "--state-dir", str(files.state_dir), "--exit-on-stdin-eof"]
            firmware = ManagedProcess(thecal_argv(*fw_args), files.firmware_log, files.directory)
            c = client
            _wait_until(
                lambda: c.ground_truth().controller_alive, "the firmware to connect", [emulator, firmware], timeout_s
            )
    except BaseException:
        if client is not None:
            client.close()
        for p in (firmware, emulator):
            if p is not None:
                p.kill_group()
        raise
    return Pump(files, pump_model, split, emulator, firmware, client)
