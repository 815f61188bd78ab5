"""A whole pump in this process: emulator rig + firmware, driven through signed frames.

For benchmarks and fast scenario runs. Every request still goes through the codec,
authentication and the relay exactly as over a pty; only the ptys are left out. HIL tests
use tools.client over real ports instead.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.journal import CHECKPOINT_FILE, Journal
from emulator.model import PumpModel
from emulator.rig import InProcessPort, PtyPort, Rig
from emulator.server import open_pty
from emulator.state import StateDir
from firmware.board import ControllerFactory
from firmware.controller import Controller
from protocol import codec
from protocol.auth import FrameSigner, new_key
from protocol.codes import BolusDecision, MessageFamily, ResetCause, Role
from protocol.messages import (
    AlarmRaised,
    BolusRequest,
    Message,
    Nak,
    RefillBegin,
    RefillComplete,
    SimGroundTruth,
    SimRefill,
    Start,
)
from protocol.schema import family_of

MS_PER_DAY = 86_400_000


class LocalPump:
    """The emulator rig in this process. The firmware runs embedded (over MemoryNvm, or
    over the real NVM file when a state_dir is given), or with split=True as `thecal
    firmware` in its own process on a pty, as `thecal emulator --split` runs it. With a
    state_dir the hardware is checkpointed as `thecal emulator` does it (pump.ckpt), so
    the benchmark pays what the emulator pays."""

    def __init__(
        self,
        model: PumpModel | None = None,
        seed: int = 0,
        state_dir: str | Path | None = None,
        split: bool = False,
        idle_timeout_s: float = 2.0,
        drug_library: str | Path | None = None,
    ) -> None:
        self.proc: subprocess.Popen | None = None
        self._out: list[bytes] = []
        self._seed = seed
        if split and state_dir is None:
            raise ValueError("split mode needs a state directory for the firmware's keys and NVM")
        self.journal: Journal | None = None
        if state_dir is not None:
            sd = StateDir(state_dir)
            self.keys = sd.keys()
            self.journal = Journal(sd.path / CHECKPOINT_FILE, fallback=sd.save_pump)
        else:
            self.keys = {r: new_key() for r in Role}
        if split:
            self._master, self._slave, path = open_pty()
            port: Any = PtyPort(self._master)
            argv = [sys.executable, "-m", "tools.cli", "firmware", "--port", path, "--state-dir", str(state_dir)]
            if drug_library is not None:
                argv += ["--drug-library", str(drug_library)]
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                [*argv, "--exit-on-stdin-eof"],
                stdin=subprocess.PIPE,
                start_new_session=True,
            )
        else:
            factory = ControllerFactory(self.keys, state_dir, drug_library=drug_library)
            self.nvm = factory.nvm
            port = InProcessPort(factory)
        self.rig = Rig(
            model or PumpModel(),
            port,
            self.keys,
            seed=seed,
            host_write=self._out.append,
            idle_timeout_s=idle_timeout_s,
            journal=self.journal,
        )
        self._signers = {r: FrameSigner(r, k) for r, k in self.keys.items()}
        self._rx = codec.MessageDecoder()
        self._seq = 0
        self.events: list[Message] = []
        if split:
            self._await_controller()
        else:
            self.rig.boot()

    def restart_from(self, state: dict[str, Any]) -> None:
        """The pump hardware restarts from an earlier physical state (a `rig.state()`
        taken before): a real pump can come back from older state, its time, boot count,
        odometer and fluid all gone back, while the controller's NVM stays as it is now.
        A fresh controller from the same factory then boots on that NVM (POWER_ON with the
        older time_ms, boot_count and odometer_strokes). Stroke taps carry over, so an
        observer sees every stroke across the restart. In-process only."""
        if self.proc is not None:
            raise ValueError("restart_from needs the firmware in-process")
        old = self.rig
        # The sim counter is the bench's replay window, not the pump's physical state:
        # keep the one in force, or frames the old rig accepted could be replayed.
        counter = old.sim_auth.last_counters[Role.SIM]
        self.rig = Rig(
            old.hw.model,
            InProcessPort(old.port.factory),
            self.keys,
            state={**state, "sim_counter": counter},
            seed=self._seed,
            host_write=self._out.append,
            idle_timeout_s=old.idle_timeout_s,
            journal=old.journal,
        )
        for tap in old.hw.stroke_taps:
            self.rig.hw.add_stroke_tap(tap)
        self.rig.boot(ResetCause.POWER_CYCLE)

    def _await_controller(self, timeout_s: float = 20.0) -> None:
        """Until the firmware process has announced itself and been powered on."""
        deadline = time.monotonic() + timeout_s
        while not self.rig.hw.controller_powered:
            if self.proc.poll() is not None:
                raise RuntimeError(f"thecal firmware exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("thecal firmware did not announce itself")
            data = self.rig.port.read(0.1)
            if data:
                self.rig.pump_bytes(data)

    def close(self) -> None:
        if self.journal is not None:
            if hasattr(self, "rig"):
                self.rig.journal = None
            self.journal.close()
            self.journal = None
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
            os.close(self._master)
            os.close(self._slave)

    def __enter__(self) -> LocalPump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def controller(self) -> Controller:
        return self.rig.port.controller

    def request(self, msg: Message, role: Role | None = None) -> Message:
        if role is None:
            role = Role.SIM if family_of(msg.TYPE) is MessageFamily.SIM_REQUEST else Role.CLINICIAN
        self._seq = (self._seq + 1) & 0xFFFF
        self.rig.host_bytes(codec.encode(msg, self._seq, self._signers[role]))
        return self._collect(self._seq)

    def send_wire(self, wire: bytes, seq: int) -> Message | None:
        """Bytes as a host wrote them (any frame, however broken); the answer with this
        seq, or None when there is none."""
        self.rig.host_bytes(wire)
        try:
            return self._collect(seq)
        except NoAnswerInProcess:
            return None

    def advance(self, ms: int) -> None:
        self.rig.advance(ms)
        self._collect(None)

    def _collect(self, seq: int | None) -> Message | None:
        data = b"".join(self._out)
        self._out.clear()
        reply = None
        for item in self._rx.feed(data):
            if isinstance(item, codec.Received):
                if family_of(item.frame.msg_type) is MessageFamily.HOST_EVENT:
                    self.events.append(item.message)
                elif item.frame.seq == seq:
                    reply = item.message
        if seq is not None and reply is None:
            raise NoAnswerInProcess("no answer from the in-process pump")
        return reply


class NoAnswerInProcess(RuntimeError):
    """A request the in-process pump did not answer."""


@dataclass
class ReferenceRun:
    granted: int = 0
    denied: dict[str, int] = field(default_factory=dict)
    refills: list[dict] = field(default_factory=list)
    alarms: dict[str, int] = field(default_factory=dict)


def run_reference(pump: LocalPump, days: int, seed: int = 1) -> ReferenceRun:
    """The reference therapy of ../shared/domain.md: program, fill 12 mL, start, 8
    seeded PTM presses a day, refill to 20 mL the day after the low-reservoir alarm
    (withdrawing the physical residual)."""
    from tools.demo import reference_program

    out = ReferenceRun()
    cmd = iter(range(1, 10**9))

    def ok(reply: Message) -> Message:
        if isinstance(reply, Nak):
            raise RuntimeError(f"pump refused: {reply.reason.name} {reply.field} {reply.detail}")
        return reply

    # The pump was filled at implant: record the fill, then program and start.
    ok(pump.request(RefillBegin(command_id=next(cmd))))
    ok(
        pump.request(
            RefillComplete(
                command_id=next(cmd),
                withdrawn_nl=0,
                added_nl=12_000_000,
                drug="morphine",
                concentration_ng_per_ml=5_000_000,
            )
        )
    )
    ok(pump.request(reference_program(next(cmd))))
    ok(pump.request(Start(command_id=next(cmd))))
    rng = random.Random(seed)
    presses = sorted(d * MS_PER_DAY + rng.randrange(MS_PER_DAY) for d in range(days) for _ in range(8))
    refill_at: int | None = None
    seen_events = 0
    for t in [*presses, days * MS_PER_DAY]:
        while refill_at is not None and refill_at <= t:
            pump.advance(refill_at - pump.rig.now_ms)
            truth = pump.request(SimGroundTruth(tones_from=0))
            ok(pump.request(RefillBegin(command_id=next(cmd))))
            pump.request(
                SimRefill(
                    withdraw_nl=truth.reservoir_nl,
                    add_nl=20_000_000,
                    concentration_ng_per_ml=5_000_000,
                    into_pocket=False,
                )
            )
            ack = ok(
                pump.request(
                    RefillComplete(
                        command_id=next(cmd),
                        withdrawn_nl=truth.reservoir_nl,
                        added_nl=20_000_000,
                        drug="morphine",
                        concentration_ng_per_ml=5_000_000,
                    )
                )
            )
            out.refills.append(
                {
                    "day": refill_at // MS_PER_DAY,
                    "withdrawn_nl": truth.reservoir_nl,
                    "discrepancy_nl": ack.discrepancy_nl,
                }
            )
            refill_at = None
        if t > pump.rig.now_ms:
            pump.advance(t - pump.rig.now_ms)
        for ev in pump.events[seen_events:]:
            if isinstance(ev, AlarmRaised):
                name = ev.alarm.name.lower()
                out.alarms[name] = out.alarms.get(name, 0) + 1
                if name == "low_reservoir" and refill_at is None:
                    refill_at = (ev.time_s * 1000 // MS_PER_DAY + 1) * MS_PER_DAY + 10 * 3_600_000
        seen_events = len(pump.events)
        if t >= days * MS_PER_DAY:
            break
        reply = ok(pump.request(BolusRequest(command_id=next(cmd)), Role.PATIENT))
        if reply.decision is BolusDecision.GRANTED:
            out.granted += 1
        else:
            key = reply.decision.name.lower()
            out.denied[key] = out.denied.get(key, 0) + 1
    return out
