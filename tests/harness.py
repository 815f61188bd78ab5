"""Start the emulator and a controller (scripted, or the firmware) as real processes,
for the HIL tests.

Measured pitfalls this module follows:
  * each process is started in its own session (start_new_session) and its whole process
    group is killed on teardown (os.killpg, then wait), so nothing outlives a test;
  * `--exit-on-stdin-eof` with a pipe kept to stdin: closing it is the clean stop;
  * the READY line is read byte by byte from the raw stdout fd with a wall-clock timeout
    (select), never through a buffered reader that could swallow or stall on it;
  * every test passes its own state directory (tmp_path) and gets fresh ptys, so the
    tests are safe under `pytest -n auto`.

Use `Procs` as a context manager (the `procs` fixture in the test modules does):

    with Procs(tmp_path) as procs:
        emu = procs.emulator(split=True, model=write_model(tmp_path, watchdog_window_ms=10_000))
        ctl = procs.controller(emu, [run(1_000, 10, 1_000)])
        emu.sim.sim(SimAdvance(duration_ms=60_000))
        assert ground_truth(emu.sim).strokes_total == 10

The firmware's tests use `firmware_pump(procs, ...)`: the emulator with the controller
firmware in-process (its default), or with split=True `thecal emulator --split` plus
`thecal firmware --port ... --state-dir ...` as a third process; the pump model is exact
(no stroke error) unless told otherwise. It returns a PumpHost: one Client on the host
port signing as clinician, patient or simulator per request, with command ids counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from emulator.capture import Capture
from emulator.model import PumpModel
from emulator.rig import InProcessPort, Rig
from emulator.scripted import Action, ScriptedController
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import MessageFamily, Role
from protocol.messages import (
    HOST_LINK_TYPES,
    AlarmAck,
    BasalStep,
    BolusRequest,
    LogRead,
    Message,
    Nak,
    Program,
    ReadPrescription,
    RefillBegin,
    RefillComplete,
    SimAdvance,
    SimGroundTruth,
    Start,
    Status,
    TimedBolus,
)
from protocol.schema import family_of
from tools import hil
from tools.client import Client, NoAnswer, Refused, Unauthentic, load_keys

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
START_TIMEOUT_S = 15.0  # generous: a loaded CI machine under -n auto
STOP_TIMEOUT_S = 10.0


class HarnessError(AssertionError):
    """The rig itself did not behave (did not start, did not connect)."""


# ---------------------------------------------------------------- files


def write_model(directory: Path, name: str = "model.toml", **keys: Any) -> Path:
    """A pump-model TOML file with `keys` (flat). Values are written with json.dumps,
    which is valid TOML for integers and strings."""
    path = Path(directory) / name
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()))
    return path


def write_drug_library(directory: Path, extra: str, name: str = "drugs.toml") -> Path:
    """The default drug library (firmware/drugs.toml) with `extra` TOML after it, e.g.
    '[morphine.recovery]\nmotor_stall = "hold"\n'."""
    path = Path(directory) / name
    path.write_text((REPO / "firmware" / "drugs.toml").read_text() + "\n" + extra)
    return path


def action(at_ms: int, kind: str, **kw: Any) -> dict[str, Any]:
    return {"at_ms": at_ms, "kind": kind, **kw}


def run(at_ms: int, strokes: int, interval_ms: int) -> dict[str, Any]:
    return action(at_ms, "run", strokes=strokes, interval_ms=interval_ms)


def write_script(directory: Path, actions: Iterable[dict[str, Any]], name: str = "script.json") -> Path:
    path = Path(directory) / name
    path.write_text(json.dumps(list(actions)))
    return path


# ---------------------------------------------------------------- processes


def read_line(fd: int, timeout_s: float) -> bytes:
    """One line from a raw fd, byte by byte (nothing buffered past the newline); the
    installable tools.hil has the one implementation."""
    try:
        return hil.read_line(fd, timeout_s)
    except hil.PumpStartError as e:
        raise HarnessError(str(e)) from None


class _Process(hil.ManagedProcess):
    """A child in its own session with a pipe on stdin; killed with its group on close
    (tools.hil holds the mechanics; this adds what the tests assert with)."""

    def __init__(self, argv: Sequence[str], log: Path, stdout: int | None = None) -> None:
        super().__init__(argv, log, REPO, stdout)

    @property
    def stderr(self) -> str:
        return self.stderr_text()

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.proc.pid, signum)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.argv[2]} pid {self.proc.pid} did not exit within {timeout_s:g} s") from None


class EmulatorProcess(_Process):
    """`thecal emulator` as its own process; `host` / `pump` are the ports from READY."""

    def __init__(self, state_dir: Path, args: Sequence[str], log: Path) -> None:
        self.state_dir = Path(state_dir)
        argv = [PYTHON, "-m", "tools.cli", "emulator", "--state-dir", str(state_dir), "--exit-on-stdin-eof", *args]
        super().__init__(argv, log, stdout=subprocess.PIPE)
        self.clients: list[Client] = []
        line = read_line(self.proc.stdout.fileno(), START_TIMEOUT_S)
        fields = line.decode(errors="replace").split()
        if not fields or fields[0] != "READY":
            self.kill_group()
            raise HarnessError(f"emulator did not start: {line!r}; stderr:\n{self.stderr}")
        self.host = fields[1]
        self.pump = fields[2] if len(fields) > 2 else None

    def keys(self) -> dict[Role, bytes]:
        return load_keys(self.state_dir / "keys.json")

    @property
    def sim(self) -> Client:
        """The host client of this emulator, made on first use. Keep to one: two readers
        on one pty take each other's bytes."""
        return self.clients[0] if self.clients else self.client()

    def client(self, role: Role = Role.CLINICIAN, timeout_s: float = 10.0, port: str | None = None) -> Client:
        c = Client(port or self.host, self.keys(), role, timeout_s=timeout_s)
        self.clients.append(c)
        return c

    def stop(self, how: str = "stdin", timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Stop cleanly: close stdin, or send SIGTERM / SIGINT. Returns the exit status."""
        for c in self.clients:
            c.close()
        self.clients.clear()
        if how == "stdin":
            self.close_stdin()
        else:
            self.signal({"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[how])
        rc = self.wait(timeout_s)
        self.close_stdin()
        return rc

    def kill_group(self) -> None:
        for c in getattr(self, "clients", ()):
            c.close()
        super().kill_group()


class ControllerProcess(_Process):
    """`python -m emulator.scripted` on the emulator's pump-link pty."""

    def __init__(self, pump_port: str, script: Path, log: Path, keys: Path | None = None) -> None:
        argv = [PYTHON, "-m", "emulator.scripted", "--port", pump_port, "--script", str(script), "--exit-on-stdin-eof"]
        argv += ["--keys", str(keys)] if keys is not None else []
        super().__init__(argv, log)


class FirmwareProcess(_Process):
    """`thecal firmware --port PUMP --state-dir DIR` (the real controller) as its own process."""

    def __init__(self, pump_port: str, state_dir: Path, log: Path, args: Sequence[str] = ()) -> None:
        argv = [
            PYTHON,
            "-m",
            "tools.cli",
            "firmware",
            "--port",
            pump_port,
            "--state-dir",
            str(state_dir),
            "--exit-on-stdin-eof",
            *args,
        ]
        super().__init__(argv, log)


class Procs:
    """Every process a test starts, killed (by process group) when the test ends."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = Path(tmp_path)
        self.started: list[_Process] = []
        self._n = 0

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in reversed(self.started):
            p.kill_group()
        self.started.clear()

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def emulator(
        self,
        *args: str,
        state_dir: Path | None = None,
        split: bool = True,
        model: Path | None = None,
        seed: int | None = None,
        script: Iterable[dict[str, Any]] | None = None,
        firmware: bool = False,
    ) -> EmulatorProcess:
        """Without split, the in-process controller is the scripted one running `script`
        (a harmless one-action script if None, so it is never the firmware by accident),
        or with firmware=True the controller firmware (the emulator's default)."""
        name = self._name("emu")
        sd = state_dir or self.tmp / f"{name}-state"
        argv = list(args)
        if split:
            argv.append("--split")
        elif firmware:
            if script is not None:
                raise HarnessError("firmware=True runs the firmware in-process: no script")
        elif "--script" not in argv:
            actions = list(script) if script is not None else [action(0, "resume")]
            argv += ["--script", str(write_script(self.tmp, actions, f"{name}-script.json"))]
        if model is not None:
            argv += ["--pump-model", str(model)]
        if seed is not None:
            argv += ["--seed", str(seed)]
        emu = EmulatorProcess(sd, argv, self.tmp / f"{name}.log")
        self.started.append(emu)
        return emu

    def controller(
        self, emu: EmulatorProcess, actions: Iterable[dict[str, Any]] = (), connect: str | None = "sim"
    ) -> ControllerProcess:
        """Start a scripted controller on emu's pump link. connect="sim" waits until the
        emulator reports a controller alive (ground-truth polls, a few ms; right for the
        first controller or one replacing a dead one); "state" waits without a host frame
        (pump.json's boot count, saved within about a second), so a capture stays
        reproducible; None does not wait."""
        if emu.pump is None:
            raise HarnessError("the emulator was not started with --split")
        name = self._name("ctl")
        script = write_script(self.tmp, actions, f"{name}.json")
        boots = boot_count(emu.state_dir)
        ctl = ControllerProcess(emu.pump, script, self.tmp / f"{name}.log", emu.state_dir / "keys.json")
        self.started.append(ctl)
        if connect == "sim":
            wait_alive(emu.sim, ctl)
        elif connect == "state":
            wait_until(lambda: boot_count(emu.state_dir) > boots, f"controller {name} to connect", ctl)
        return ctl

    def firmware(
        self, emu: EmulatorProcess, state_dir: Path | None = None, args: Sequence[str] = ()
    ) -> FirmwareProcess:
        """Start `thecal firmware` on emu's pump link (split mode) and wait until it has
        connected (kicked the watchdog). Its keys come from the emulator's state dir
        unless another directory (with a keys.json) is given; `args` are more options
        (`--config FILE`, `--drug-library FILE`)."""
        if emu.pump is None:
            raise HarnessError("the emulator was not started with --split")
        name = self._name("fw")
        fw = FirmwareProcess(emu.pump, state_dir or emu.state_dir, self.tmp / f"{name}.log", args)
        self.started.append(fw)
        wait_alive(emu.sim, fw)
        return fw


def boot_count(state_dir: Path) -> int:
    try:
        return json.loads((Path(state_dir) / "pump.json").read_text()).get("boot_count", 0)
    except (FileNotFoundError, ValueError):
        return 0


def wait_until(cond, what: str, proc: _Process | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and not proc.alive:
            raise HarnessError(f"{what}: process exited with {proc.proc.returncode}; stderr:\n{proc.stderr}")
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_alive(sim: Client, proc: _Process | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the emulator says a controller kicked its watchdog (it has connected)."""
    wait_until(lambda: sim.sim(SimGroundTruth(tones_from=0)).controller_alive, "controller to connect", proc, timeout_s)


# ---------------------------------------------------------------- host-link helpers


def ground_truth(sim: Client, tones_from: int = 0):
    return sim.sim(SimGroundTruth(tones_from=tones_from))


def advance(sim: Client, ms: int, timeout_s: float = 30.0):
    return sim.sim(SimAdvance(duration_ms=ms), timeout_s=timeout_s).time_ms


def make_deterministic(client: Client, keys: dict[Role, bytes]) -> None:
    """Sequence numbers and auth counters from 1 instead of the wall clock, so the host
    frames (and a capture of them) are the same on every run."""
    client._seq = 0
    client._signers = {role: FrameSigner(role, key) for role, key in keys.items()}


def send_frame(client: Client, wire: bytes, seq: int, timeout_s: float = 5.0) -> Message:
    """Send pre-built wire bytes and return the response with `seq` (ACK or NAK)."""
    client.send_raw(wire)
    return client._wait(lambda: client._responses.pop(seq, None), timeout_s)


def retry_sim(
    client: Client, msg: Message, attempts: int = 40, timeout_s: float = 0.5, lost: list[int] | None = None
) -> Message:
    """A sim request over a noisy link: resend (each a fresh counter) until answered.
    Appends the number of unanswered attempts to `lost` if given."""
    for i in range(attempts):
        try:
            reply = client.sim(msg, timeout_s=timeout_s)
        except NoAnswer:
            continue
        if lost is not None:
            lost.append(i)
        return reply
    raise HarnessError(f"{type(msg).NAME} not answered in {attempts} attempts")


# ---------------------------------------------------------------- in-process rig


class RigHost:
    """An in-process Rig (scripted controller through the codec) and a host talking to it
    in signed frames, as the HIL tests do over a pty, without processes or ports."""

    def __init__(
        self,
        model: PumpModel | None = None,
        actions: Iterable[dict[str, Any] | Action] = (),
        seed: int = 0,
        state: dict[str, Any] | None = None,
        keys: dict[Role, bytes] | None = None,
        capture: Capture | None = None,
        boot: bool = True,
    ) -> None:
        self.model = model or PumpModel()
        acts = [a if isinstance(a, Action) else Action.from_dict(a) for a in actions]
        self.keys = keys or {role: bytes([role]) * 32 for role in Role}
        self.port = InProcessPort(lambda: ScriptedController(list(acts)))
        self.rig = Rig(self.model, self.port, self.keys, state=state, seed=seed, capture=capture, host_write=self._out)
        counter = (state or {}).get("sim_counter", 0)
        self.signers = {role: FrameSigner(role, key, counter) for role, key in self.keys.items()}
        self.decoder = codec.MessageDecoder(HOST_LINK_TYPES)
        self.responses: dict[int, Message] = {}
        self.events: list[Message] = []
        self.seq = 0
        if boot:
            self.rig.boot()

    @property
    def hw(self):
        return self.rig.hw

    @property
    def controller(self) -> ScriptedController:
        return self.port.controller

    def _out(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, codec.Received):
                if family_of(item.frame.msg_type) is MessageFamily.HOST_EVENT:
                    self.events.append(item.message)
                else:
                    self.responses[item.frame.seq] = item.message

    def frame(self, msg: Message, role: Role | None = Role.SIM) -> tuple[bytes, int]:
        """Wire bytes of a request signed by `role` (None: unsigned) and its seq."""
        self.seq = (self.seq + 1) & 0xFFFF
        return codec.encode(msg, self.seq, self.signers[role] if role is not None else None), self.seq

    def send(self, wire: bytes, seq: int | None = None) -> Message | None:
        """Feed host bytes to the rig; the response with `seq` if one came."""
        self.rig.host_bytes(wire)
        return self.responses.pop(seq, None) if seq is not None else None

    def request(self, msg: Message, role: Role | None = Role.SIM) -> Message:
        """The ACK or NAK of one request (AssertionError if none)."""
        wire, seq = self.frame(msg, role)
        reply = self.send(wire, seq)
        assert reply is not None, f"no answer to {type(msg).NAME}"
        return reply

    def sim(self, msg: Message) -> Message:
        reply = self.request(msg)
        if isinstance(reply, Nak):
            raise Refused(reply)
        return reply

    def advance(self, ms: int) -> int:
        return self.sim(SimAdvance(duration_ms=ms)).time_ms

    def truth(self, tones_from: int = 0):
        return self.sim(SimGroundTruth(tones_from=tones_from))


# ---------------------------------------------------------------- the firmware over the host link


def read_log(client: Client, from_seq: int = 0, page: int = 32) -> list:
    """Every event-log entry from from_seq on (LOG_READ page by page, clinician)."""
    out = []
    seq = from_seq
    while True:
        ack = client.request(LogRead(from_seq=seq, max_entries=page), role=Role.CLINICIAN)
        out.extend(ack.entries)
        if not ack.entries or ack.entries[-1].seq + 1 >= ack.next_seq:
            return out
        seq = ack.entries[-1].seq + 1


def rolling_max(samples: list[tuple[int, int]], window_ms: int = 86_400_000) -> int:
    """Largest ground-truth delivery (samples of (time_ms, delivered), in time order) over
    any window_ms: delivered minus delivered window_ms earlier, or at the nearest sample
    after that. Sampled, it can only under-estimate a window by what was delivered
    between two samples, never over-estimate one."""
    times = [t for t, _ in samples]
    best = 0
    for t, d in samples:
        i = bisect_left(times, t - window_ms)
        best = max(best, d - samples[i][1])
    return best


def send_and_lose(client: Client, msg: Message, role: Role, timeout_s: float = 5.0) -> Message:
    """Send a request and lose its answer, as a host whose link dropped the response
    would: the frame goes out, the pump acts and answers, and the host never reads the
    answer (it is returned here only so a test can check what was lost)."""
    client._seq = (client._seq + 1) & 0xFFFF
    seq = client._seq
    client.send_raw(codec.encode(msg, seq, client._signers[role]))
    return client._wait(lambda: client._responses.pop(seq, None), timeout_s)


class PumpHost:
    """The host side of a firmware HIL test: one Client on the pump's host port (one
    reader per pty), signing as the clinician, the patient or the simulator per request,
    with command ids counted up from 1. Talks to the pump only through the client."""

    def __init__(
        self,
        client: Client,
        emulator: EmulatorProcess | None = None,
        firmware: FirmwareProcess | None = None,
        model: Path | None = None,
    ) -> None:
        self.client = client
        self.command_id = 0
        # The processes behind it and the model file, so a test can stop and restart them.
        self.emulator = emulator
        self.firmware = firmware
        self.model = model
        self.seed: int | None = None
        self.firmware_files: dict[str, Path] = {}  # the firmware's settings and drug library, if not the defaults

    def next_id(self) -> int:
        self.command_id += 1
        return self.command_id

    def request(self, msg: Message, role: Role = Role.CLINICIAN, timeout_s: float | None = None) -> Message:
        return self.client.request(msg, role=role, timeout_s=timeout_s)

    def sim(self, msg: Message, timeout_s: float | None = None) -> Message:
        return self.client.sim(msg, timeout_s=timeout_s)

    # -- sim-control
    def advance(self, ms: int) -> int:
        return advance(self.client, ms, timeout_s=120.0)

    def advance_to(self, time_ms: int) -> int:
        now = self.truth().time_ms
        if time_ms < now:
            raise HarnessError(f"cannot go back from {now} ms to {time_ms} ms")
        return self.advance(time_ms - now) if time_ms > now else now

    def truth(self, tones_from: int = 0):
        return ground_truth(self.client, tones_from)

    def tones(self) -> list:
        """The whole tone history (page by page)."""
        out: list = []
        while True:
            gt = self.truth(len(out))
            out.extend(gt.tones)
            if not gt.tones or len(out) >= gt.tones_total:
                return out

    # -- host requests
    def status(self, role: Role = Role.CLINICIAN):
        return self.request(Status(), role)

    def prescription(self):
        return self.request(ReadPrescription())

    def log(self, from_seq: int = 0) -> list:
        return read_log(self.client, from_seq)

    def fill(self, added_nl: int, concentration_ng_per_ml: int, drug: str = "morphine", withdrawn_nl: int = 0):
        """Record a refill (REFILL_BEGIN then REFILL_COMPLETE); the physical side is the
        caller's (SimRefill), or the fresh pump's initial fill."""
        self.request(RefillBegin(command_id=self.next_id()))
        return self.request(
            RefillComplete(
                command_id=self.next_id(),
                withdrawn_nl=withdrawn_nl,
                added_nl=added_nl,
                drug=drug,
                concentration_ng_per_ml=concentration_ng_per_ml,
            )
        )

    def program(self, **fields: Any):
        return self.request(program_message(self.next_id(), **fields))

    def start(self):
        return self.request(Start(command_id=self.next_id()))

    def press(self):
        """The patient presses the PTM button."""
        return self.request(BolusRequest(command_id=self.next_id()), Role.PATIENT)

    def ack(self, alarm):
        return self.request(AlarmAck(alarm=alarm))

    def events(self, kind: type | None = None) -> list:
        """Host events received so far (read the port first)."""
        self.client.poll()
        refused = [e for e in self.client.events if isinstance(e, Unauthentic)]
        if refused:
            raise refused[0]  # SR-058: a test never counts an event the client refused
        return [e for e in self.client.events if kind is None or isinstance(e, kind)]


def program_message(command_id: int, **fields: Any):
    """A PROGRAM request: morphine 5 mg/mL, 1 mg/day flat, no patient bolus, hard limit
    5 mg, low-reservoir 2 mL, no timed bolus, with `fields` overriding. `basal` may be given
    as (start_s, rate_ng_per_day) pairs; `bolus` as (dose_ng, duration_s, lockout_s,
    max_per_24h); `timed_bolus` as (start_s, dose_ng, duration_s) triples."""
    f: dict[str, Any] = {
        "drug": "morphine",
        "concentration_ng_per_ml": 5_000_000,
        "basal": ((0, 1_000_000),),
        "bolus": (0, 0, 0, 0),
        "max_dose_24h_ng": 5_000_000,
        "low_reservoir_ul": 2_000,
        "catheter_volume_nl": 200_000,  # the default pump model's catheter
        "timed_bolus": (),
    }
    f.update(fields)
    dose, duration, lockout, most = f.pop("bolus")
    basal = tuple(
        s if isinstance(s, BasalStep) else BasalStep(start_s=s[0], rate_ng_per_day=s[1]) for s in f.pop("basal")
    )
    timed = tuple(t if isinstance(t, TimedBolus) else TimedBolus(*t) for t in f.pop("timed_bolus"))
    return Program(
        command_id=command_id,
        basal=basal,
        timed_bolus=timed,
        bolus_dose_ng=dose,
        bolus_duration_s=duration,
        bolus_lockout_s=lockout,
        bolus_max_per_24h=most,
        **f,
    )


DEFAULT_SPLIT = False  # pytest --split sets it (tests/conftest.py)


def firmware_pump(
    procs: Procs,
    split: bool | None = None,
    seed: int | None = None,
    drug_library: Path | None = None,
    firmware_config: Path | None = None,
    **model_keys: Any,
) -> PumpHost:
    """An emulator running the controller firmware (in-process, or split as `thecal
    firmware` in its own process; None follows pytest's --split), its pump model exact (no
    stroke error) unless model_keys say otherwise, and the PumpHost talking to it. The
    firmware takes the drug library and settings files given (the defaults otherwise)."""
    keys = {"stroke_error_sd_ppm": 0, **model_keys}
    model = write_model(procs.tmp, f"{procs._name('model')}.toml", **keys)
    files = {"drug-library": drug_library, "config": firmware_config}
    return _start_pump(procs, model, split, seed, files={k: Path(v) for k, v in files.items() if v is not None})


def _start_pump(
    procs: Procs,
    model: Path,
    split: bool | None,
    seed: int | None,
    state_dir: Path | None = None,
    files: dict[str, Path] | None = None,
    emulator_args: Sequence[str] = (),
) -> PumpHost:
    if split is None:
        split = DEFAULT_SPLIT
    files = files or {}
    fw = None
    if split:
        emu = procs.emulator(*emulator_args, split=True, model=model, seed=seed, state_dir=state_dir)
        fw = procs.firmware(emu, args=[a for k, f in files.items() for a in (f"--{k}", str(f))])
    else:
        # (`thecal emulator` names the in-process firmware's settings --firmware-config.)
        opts = [a for k, f in files.items() for a in ("--firmware-config" if k == "config" else f"--{k}", str(f))]
        emu = procs.emulator(
            *opts, *emulator_args, split=False, firmware=True, model=model, seed=seed, state_dir=state_dir
        )
    host = PumpHost(emu.sim, emu, fw, model)
    host.seed = seed
    host.firmware_files = files
    return host


def restart_pump(
    procs: Procs, pump: PumpHost, edit: Callable[[Path], None] | None = None, emulator_args: Sequence[str] = ()
) -> PumpHost:
    """Stop the pump's processes cleanly (the emulator saves its state, the firmware's NVM
    is committed), let `edit` change the state directory (put back an older pump.json, an
    older or a blank NVM file), then start them again on it in the same mode, the emulator
    with `emulator_args` too. Returns the PumpHost of the new processes (a new client on
    the new host port)."""
    emu = pump.emulator
    if emu is None:
        raise HarnessError("this PumpHost was not made by firmware_pump")
    split = pump.firmware is not None
    if pump.firmware is not None:
        pump.firmware.close_stdin()
        pump.firmware.wait()
    rc = emu.stop()
    if rc != 0:
        raise HarnessError(f"emulator exited with {rc}; stderr:\n{emu.stderr}")
    if edit is not None:
        edit(emu.state_dir)
    again = _start_pump(procs, pump.model, split, pump.seed, emu.state_dir, pump.firmware_files, emulator_args)
    again.command_id = pump.command_id  # a command id is never used twice
    return again
