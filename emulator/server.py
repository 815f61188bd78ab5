"""The emulator process: ptys, the select loop, signals, the state directory.

Everything that touches the operating system lives here; emulator/rig.py decides what
the bytes mean. The first line on stdout is `READY <host-port> [<pump-link-port>]`.

A state directory that cannot be written at start (read-only, full) ends the emulator at
once with one line saying so. Once running, a write the filesystem refuses (pump.json,
the capture) never ends it: the condition is reported on stderr when it starts and when
it clears, the rig refuses host requests and new motor runs while it holds, the
checkpoint (preallocated) goes on recording the hardware, and pump.json is retried at
each periodic save.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import select
import signal
import sys
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocol.codes import ResetCause, Role

from .capture import Capture
from .clock import RealtimeClock
from .hostlink import SOCKET_NAME, HostEndpoints
from .journal import CHECKPOINT_FILE, Journal, load_state
from .model import load_model
from .pump import DEFAULT_RTC_EPOCH_S
from .rig import Controller, InProcessPort, PtyPort, Rig
from .scripted import Action, ScriptedController
from .state import StateDir, StateError, advice, cannot_write

DEFAULT_START = "2026-01-01T00:00:00"
SAVE_EVERY_S = 1.0


@dataclass(frozen=True)
class EmulatorOptions:
    state_dir: str = ".thecal"
    link: str | None = None
    clock: str = "lockstep"  # lockstep | realtime
    speed: float = 1.0
    split: bool = False
    pump_model: str | None = None
    seed: int = 0
    start: str = DEFAULT_START
    exit_on_stdin_eof: bool = False
    # Factory-new pump hardware: pump.json and pump.ckpt set aside, and the controller told
    # by POWER_ON's reset cause HARDWARE_REPLACED (the user's way past a damaged or lost
    # pump.json beside a firmware that has run).
    new_hardware: bool = False
    capture: str | None = None
    capture_wall_time: bool = True
    idle_timeout_s: float = 2.0
    script: tuple[Action, ...] = ()
    controller: str = "firmware"  # in-process controller: firmware | scripted
    # Builds the in-process firmware: (state directory, keys) -> a fresh controller per
    # (re)start. The emulator is handed it; it does not assemble the firmware.
    firmware: Callable[[Path, dict[Role, bytes]], Callable[[], Controller]] | None = None


def parse_start(text: str) -> int:
    """`--start` as local seconds since 1970 (naive: the pump's clock has no zone)."""
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--start {text!r} is not an ISO date-time such as {DEFAULT_START}") from None
    if t.tzinfo is not None:
        raise ValueError("--start is local time: give it without a zone")
    return int((t - dt.datetime(1970, 1, 1)).total_seconds())


def open_pty() -> tuple[int, int, str]:
    """A raw pty. We keep the slave fd open ourselves: with no slave open, reads on the
    master fail with EIO in a tight loop, and clients come and go."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def make_link(link: str, target: str) -> None:
    p = Path(link)
    if p.is_symlink() or p.exists():
        if not p.is_symlink():
            raise ValueError(f"--link {link} exists and is not a symlink; refusing to replace it")
        p.unlink()
    p.symlink_to(target)


class Emulator:
    def __init__(self, opts: EmulatorOptions, out: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.out = out or (lambda line: (sys.stdout.write(line + "\n"), sys.stdout.flush()))
        self.state_dir = StateDir(opts.state_dir)
        self.state_dir.lock()
        self.model = load_model(opts.pump_model)
        self.keys = self.state_dir.keys()
        self._stop = False
        self.faults: dict[Path, str] = {}  # files that cannot be written now -> why
        self._running = False  # a fault before therapy starts ends the emulator instead

    def _fault(self, path: Path, e: OSError | None) -> None:
        """Record whether `path` could be written (e None: it could). Said on stderr once
        when it starts and once when it clears; the rig refuses requests and new motor runs
        while any file cannot be written."""
        if e is None:
            if self.faults.pop(path, None) is not None:
                self._report(
                    f"storage fault cleared: {path} written again; host requests and motor runs accepted again"
                )
        elif path not in self.faults:
            self.faults[path] = f"cannot write {path.name} ({e.strerror or e}): {advice(e)}"
            if self._running:
                self._report(
                    f"storage fault: {cannot_write(path, e)}. Until it can be written, the pump refuses host "
                    "requests (BUSY) and new motor runs; what the hardware does is still checkpointed, and the write "
                    "is retried"
                )
        if hasattr(self, "rig"):
            self.rig.storage_fault = next(iter(self.faults.values()), None)

    def _controller_factory(self) -> Callable[[], Controller]:
        """A fresh in-process controller per (re)start: the scripted one, or the firmware
        from the factory the emulator was handed (over the NVM file in the state
        directory, so a power cycle or a restarted emulator recovers from it alone)."""
        o = self.opts
        if o.controller == "scripted" or o.script:
            return lambda: ScriptedController(list(o.script), pump_key=self.keys.get(Role.PUMP))
        if o.firmware is None:
            raise ValueError("no firmware to run in-process: give one, use --split, or a scripted controller")
        return o.firmware(self.state_dir.path, self.keys)

    def _report(self, line: str) -> None:
        print(f"thecal emulator: {line}", file=sys.stderr, flush=True)

    def _signal(self, signum, frame) -> None:
        self._stop = True

    def run(self) -> int:
        host_path, pump_path = self.start()
        signal.signal(signal.SIGINT, self._signal)
        signal.signal(signal.SIGTERM, self._signal)
        self.out(f"READY {host_path}" + (f" {pump_path}" if pump_path else ""))
        if not self.opts.split:
            self.rig.boot()
        try:
            self._loop()
        finally:
            self.stop()
        return 0

    def start(self) -> tuple[str, str | None]:
        """Everything up to READY: the state loaded, the ports open, the rig built and
        its state saved once. StateError (one line) when the state directory cannot be
        written. Returns the host port's path and the pump link's (split mode)."""
        o = self.opts
        sd = self.state_dir
        if o.new_hardware:  # before the checkpoint is opened: its slots are the old hardware's
            sd.set_aside(sd.pump_file.name, CHECKPOINT_FILE)
        self.journal = Journal(sd.path / CHECKPOINT_FILE, fallback=sd.save_pump)
        state = None if o.new_hardware else load_state(sd, self.journal)
        rtc_epoch = parse_start(o.start) if o.start != DEFAULT_START else DEFAULT_RTC_EPOCH_S
        self.host_master, self.host_slave, host_path = open_pty()
        self.host = HostEndpoints(self.host_master, self.state_dir.path / SOCKET_NAME, self._report)
        pump_path = None
        if o.split:
            self.pump_master, self.pump_slave, pump_path = open_pty()
            port = PtyPort(self.pump_master)
        else:
            self.pump_master = None
            port = InProcessPort(self._controller_factory())
        advertised = host_path
        if o.link:
            make_link(o.link, host_path)
            advertised = os.path.abspath(o.link)
        state = dict(state or {})
        state.setdefault("rtc_epoch_s", rtc_epoch)
        try:
            self.capture = Capture(o.capture, wall_time=o.capture_wall_time)
        except OSError as e:
            raise StateError(f"--capture: {cannot_write(Path(o.capture).absolute(), e)}") from None
        self.rig = Rig(
            self.model,
            port,
            self.keys,
            state=state,
            seed=o.seed,
            capture=self.capture,
            host_send=self.host.send,
            idle_timeout_s=o.idle_timeout_s,
            wall_ms=lambda: time.monotonic_ns() // 1_000_000,
            journal=self.journal,
        )
        self.rig.hw.rtc_epoch_s = state["rtc_epoch_s"]
        if o.new_hardware:
            self.rig.hw.pending_cause = ResetCause.HARDWARE_REPLACED
        if o.clock == "realtime":
            self.rig.speed_milli = max(1, round(o.speed * 1000))
        self._advertised = advertised
        self.state_dir.write_ports(advertised, pump_path)
        self.save()
        if self.faults:  # a directory that cannot be written at start: no therapy on it
            self.host.close()
            self.state_dir.clear_ports(advertised)
            path, why = next(iter(self.faults.items()))
            if path.parent == sd.path:
                raise StateError(f"state directory {sd.path}: {why}, or give another --state-dir")
            raise StateError(f"--capture {path}: {why}")
        self._running = True
        return host_path, pump_path

    def stop(self) -> None:
        """The clean end: pump.json saved (then the checkpoint blanked, pump.json holding
        all it did), the capture closed, the port files removed; never raises."""
        self.save()
        if self.state_dir.pump_file not in self.faults:
            self.journal.clear()
        else:
            self._report(f"exiting with pump.json out of date: {self.journal.path} holds the state for the next start")
        self._close_capture()
        self.host.close()
        left = self.state_dir.clear_ports(self._advertised)
        if left is not None:
            self._report(left)

    def save(self) -> None:
        """pump.json as new as the checkpoint committed with it (and the capture's
        buffered frames). A write refused is a storage fault, retried at the next save."""
        self._saved_at = time.monotonic()
        rig = self.rig
        error: OSError | None = None
        try:
            self.state_dir.save_pump(rig.state(), self.journal.seq + 1)
        except OSError as e:
            error = e
        rig.checkpoint(force=True)  # the number pump.json was given (a tie goes to pump.json)
        self._fault(self.state_dir.pump_file, error or self.journal.error)
        if self.capture.path is not None:
            self._fault(self.capture.path, self.capture.flush())

    def _close_capture(self) -> None:
        error = self.capture.close()
        if error is not None and self.capture.path is not None:
            self._report(f"{cannot_write(self.capture.path, error)}: the capture lacks its last frames")

    def _loop(self) -> None:
        rig = self.rig
        stdin = sys.stdin.fileno() if self.opts.exit_on_stdin_eof else None
        clock: RealtimeClock | None = None  # realtime: simulated time follows the wall clock
        host = self.host
        while not self._stop:
            fds = host.read_fds()
            if self.pump_master is not None:
                fds.append(self.pump_master)
            if stdin is not None:
                fds.append(stdin)
            timeout = 0.5
            clock = self._realtime(clock)
            if clock is not None:
                due = rig.next_due_ms()
                if due is not None:
                    timeout = min(timeout, max(0.0, clock.wall_at(due) - time.monotonic()))
            host_due = rig.next_host_release_wall_ms()
            if host_due is not None:
                timeout = min(timeout, max(0.0, (host_due - time.monotonic_ns() // 1_000_000) / 1000))
            try:
                ready, writable, _ = select.select(fds, host.write_fds(), [], timeout)
            except InterruptedError:
                continue
            if stdin is not None and stdin in ready and not os.read(stdin, 4096):
                return
            for fd in writable:
                host.writable(fd)
            for fd in ready:
                got = host.readable(fd) if fd != self.pump_master and fd != stdin else None
                if got:
                    # (An accepted sim-control frame's counter, and what it changed, are
                    # checkpointed before its answer goes out: a frame captured before a
                    # crash cannot be replayed after it.)
                    client, data = got
                    rig.host_bytes(data, client)
            for client in host.take_gone():
                rig.forget_client(client)
            if self.pump_master is not None and self.pump_master in ready:
                data = self._read(self.pump_master)
                if data:
                    rig.pump_bytes(data)
            rig.release_host_noise()
            clock = self._realtime(clock)
            if clock is not None:
                rig.run_until(clock.sim_at(time.monotonic()))
            if time.monotonic() - self._saved_at > SAVE_EVERY_S:
                self.save()

    def _realtime(self, clock: RealtimeClock | None) -> RealtimeClock | None:
        """The realtime clock for the rig's speed now: None in lockstep, re-anchored at the
        current simulated time whenever sim-control changes the speed."""
        speed = self.rig.speed_milli
        if not speed:
            return None
        if clock is None or clock.speed_milli != speed:
            return RealtimeClock(self.rig.now_ms, time.monotonic(), speed)
        return clock

    @staticmethod
    def _read(fd: int) -> bytes:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # cannot happen while we hold the slave; be safe
                time.sleep(0.01)
                return b""
            raise


def run_emulator(opts: EmulatorOptions) -> int:
    return Emulator(opts).run()
