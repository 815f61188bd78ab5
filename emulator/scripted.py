"""A scripted controller: drives the pump link from a timed list of actions.

It stands in for the firmware where a test needs to control exactly what the pump is
asked to do (and for the emulator benchmark). It is a well-behaved tickless controller:
it kicks the watchdog, reports idle with SLEEP_UNTIL after every input, and records what
the pump said it did. It has no therapy logic and answers every relayed host request
with NAK BUSY. Run it as its own process over a pty with `python -m emulator.scripted`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import BeepPattern, NakReason, Role, RunOutcome
from protocol.framing import Frame, parse_body
from protocol.keyfile import load_keys
from protocol.messages import (
    PUMP_LINK_TYPES,
    Beep,
    ControllerStart,
    HostRx,
    HostTx,
    HwInfo,
    HwInfoRequest,
    Message,
    MotorRun,
    MotorStop,
    PowerOn,
    RunProgress,
    Sensors,
    SleepUntil,
    Time,
    WatchdogKick,
)
from protocol.schema import NONE_U64


@dataclass(frozen=True)
class Action:
    at_ms: int
    kind: str  # run | stop | beep | silence (stop kicking the watchdog) | resume
    strokes: int = 0
    interval_ms: int = 0
    pattern: str = "single_tone"

    @staticmethod
    def from_dict(d: dict) -> Action:
        kinds = ("run", "stop", "beep", "silence", "resume")
        if d.get("kind") not in kinds:
            raise ValueError(f"action kind must be one of {kinds}, got {d.get('kind')!r}")
        return Action(**d)


@dataclass
class RunRecord:
    run_id: int
    strokes: int
    made: int = 0
    outcome: RunOutcome = RunOutcome.IN_PROGRESS


@dataclass
class ScriptedController:
    actions: list[Action]
    kick: bool = True
    now_ms: int = 0
    next_action: int = 0
    kick_every_ms: int = 20_000  # until HW_INFO says the window
    last_kick_ms: int = -1
    boots: list[int] = field(default_factory=list)  # reset causes seen
    runs: dict[int, RunRecord] = field(default_factory=dict)
    sensors: list[Sensors] = field(default_factory=list)
    hw: HwInfo | None = None
    pump_key: bytes | None = None  # signs its answers to host requests, as the firmware does (SR-058)
    _run_seq: int = 0
    _seq: int = 0

    def __post_init__(self) -> None:
        self.actions = sorted(self.actions, key=lambda a: a.at_ms)
        self._decoder = codec.MessageDecoder(PUMP_LINK_TYPES)
        self._signer = FrameSigner(Role.PUMP, self.pump_key) if self.pump_key is not None else None

    def host_answer(self, msg: Message, request: Frame) -> HostTx:
        """The answer to a host request, signed and bound to the request's tag."""
        tag = request.auth.tag if request.auth is not None else None
        signer = self._signer.bound(tag) if self._signer is not None else None
        return HostTx(frame=codec.encode_to_body(msg, request.seq, signer))

    # The controller's whole interface: bytes in, bytes out, always ending idle.
    def feed(self, data: bytes) -> bytes:
        out: list[Message] = []
        woken = False
        for item in self._decoder.feed(data):
            if isinstance(item, codec.Received):
                woken = True
                self._on(item.message, out)
        if not woken:
            return b""  # part of a frame, or bytes lost to noise: nothing to answer yet
        self._act(out)
        return b"".join(self._encode(m) for m in out)

    def _encode(self, msg: Message) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        return codec.encode(msg, self._seq)

    def _on(self, msg: Message, out: list[Message]) -> None:
        t = type(msg)
        if t is PowerOn:
            self.now_ms = msg.time_ms
            self.boots.append(int(msg.reset_cause))
            self.last_kick_ms = -1
            # A restarted controller does not resume what its predecessor was doing.
            while self.next_action < len(self.actions) and self.actions[self.next_action].at_ms < self.now_ms:
                self.next_action += 1
            out.append(HwInfoRequest())
        elif t is Time:
            self.now_ms = msg.time_ms
        elif t is RunProgress:
            self.now_ms = msg.time_ms
            rec = self.runs.get(msg.run_id)
            if rec is not None:
                rec.made = msg.strokes_made
                rec.outcome = msg.outcome
        elif t is HwInfo:
            self.hw = msg
            self.kick_every_ms = max(1, msg.watchdog_window_ms // 2)
        elif t is Sensors:
            self.now_ms = msg.time_ms
            self.sensors.append(msg)
        elif t is HostRx:
            parsed = parse_body(msg.frame)
            if isinstance(parsed, Frame):
                nak = codec.nak_for(parsed.msg_type, NakReason.BUSY, "", "scripted controller: no therapy firmware")
                out.append(self.host_answer(nak, parsed))

    def _act(self, out: list[Message]) -> None:
        if self.hw is None and not any(type(m) is HwInfoRequest for m in out):
            # HW_INFO lost (link noise) or never asked: until it comes, the watchdog
            # window is unknown and the default kick interval may be too slow.
            out.append(HwInfoRequest())
        while self.next_action < len(self.actions) and self.actions[self.next_action].at_ms <= self.now_ms:
            a = self.actions[self.next_action]
            self.next_action += 1
            if a.kind == "run":
                self._run_seq = (self._run_seq % 0xFFFE) + 1
                self.runs[self._run_seq] = RunRecord(self._run_seq, a.strokes)
                out.append(MotorRun(run_id=self._run_seq, strokes=a.strokes, interval_ms=a.interval_ms))
            elif a.kind == "stop":
                out.append(MotorStop(run_id=0xFFFF))
            elif a.kind == "beep":
                out.append(Beep(pattern=BeepPattern[a.pattern.upper()], repeat=1, repeat_interval_ms=0))
            elif a.kind == "silence":
                self.kick = False
            elif a.kind == "resume":
                self.kick = True
        if self.kick and (self.last_kick_ms < 0 or self.now_ms - self.last_kick_ms >= self.kick_every_ms // 2):
            out.append(WatchdogKick())
            self.last_kick_ms = self.now_ms
        wake = NONE_U64
        if self.next_action < len(self.actions):
            wake = self.actions[self.next_action].at_ms
        if self.kick:
            wake = min(wake, max(self.last_kick_ms, 0) + self.kick_every_ms)
        out.append(SleepUntil(wake_at_ms=wake))

    @property
    def strokes_made(self) -> int:
        return sum(r.made for r in self.runs.values())


# ---------------------------------------------------------------- the reference therapy

MS_PER_DAY = 86_400_000


def reference_actions(days: int = 30, seed: int = 1, stroke_nl: int = 500) -> list[Action]:
    """The reference therapy of domain.md as motor runs: morphine 5 mg/mL, basal
    1.0/1.5/1.0 mg/day from 00:00/07:00/22:00, 8 seeded PTM presses a day granted by a
    2 h lockout and 6 per rolling 24 h, 0.1 mg over 10 min. Basal falling due during a
    bolus is paid out after it. Integer accumulator, so the daily totals are exact."""
    conc = 5_000_000  # ng/mL
    steps = [(0, 1_000_000), (7 * 3_600_000, 1_500_000), (22 * 3_600_000, 1_000_000)]
    bolus_strokes = 100_000 * 1_000_000 // conc // stroke_nl  # 0.1 mg -> 20 uL -> 40 strokes
    bolus_interval = 600_000 // bolus_strokes
    rng = random.Random(seed)
    presses = sorted(d * MS_PER_DAY + rng.randrange(MS_PER_DAY) for d in range(days) for _ in range(8))
    granted: list[int] = []
    for p in presses:
        recent = [g for g in granted if p - g < MS_PER_DAY]
        if (not granted or p - granted[-1] >= 2 * 3_600_000) and len(recent) < 6:
            granted.append(p)
    stroke_times: list[int] = []
    acc = 0  # nL * ms accumulated toward the next stroke, times MS_PER_DAY
    end = days * MS_PER_DAY
    t = 0
    while t < end:
        tod = t % MS_PER_DAY
        rate_ng = next(r for s, r in reversed(steps) if tod >= s)
        rate_nl_per_day = rate_ng * 1_000_000 // conc
        step_end = min(end, t - tod + next((s for s, _ in steps if s > tod), MS_PER_DAY))
        need = stroke_nl * MS_PER_DAY - acc
        dt = -(-need // rate_nl_per_day)
        if t + dt <= step_end:
            t += dt
            acc = acc + dt * rate_nl_per_day - stroke_nl * MS_PER_DAY
            stroke_times.append(t)
        else:
            acc += (step_end - t) * rate_nl_per_day
            t = step_end
    actions: list[Action] = []
    bi = 0
    held = 0
    busy_until = -1
    for st in stroke_times:
        while bi < len(granted) and granted[bi] <= st:
            g = max(granted[bi], busy_until)
            if held:
                actions.append(Action(g, "run", held, 1_800))
                g += held * 1_800
                held = 0
            actions.append(Action(g, "run", bolus_strokes, bolus_interval))
            busy_until = g + bolus_strokes * bolus_interval
            bi += 1
        if st < busy_until:
            held += 1
            continue
        if held:
            actions.append(Action(st, "run", held + 1, 1_800))
            busy_until = st + (held + 1) * 1_800
            held = 0
        else:
            actions.append(Action(st, "run", 1, 1_800))
    return actions


def _serve(port: str, actions: Iterable[Action], exit_on_stdin_eof: bool, pump_key: bytes | None = None) -> int:
    """Run over a pty: read pump-link bytes, answer, until the port or stdin closes."""
    import serial

    ctl = ScriptedController(list(actions), pump_key=pump_key)
    with serial.Serial(port, timeout=0) as ser:
        fd = ser.fileno()
        watch = [fd, sys.stdin.fileno()] if exit_on_stdin_eof else [fd]
        # Announce ourselves: the pump answers with POWER_ON, and the rest follows from it.
        ser.write(codec.encode(ControllerStart(), 0))
        while True:
            ready, _, _ = select.select(watch, [], [], 1.0)
            if exit_on_stdin_eof and sys.stdin.fileno() in ready and not os.read(sys.stdin.fileno(), 4096):
                return 0
            if fd in ready:
                data = os.read(fd, 65536)
                if data:
                    out = ctl.feed(data)
                    if out:
                        os.write(fd, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emulator.scripted", description=__doc__)
    p.add_argument("--port", required=True, help="pump-link pty (second READY field of --split)")
    p.add_argument("--script", help="JSON list of actions; default: none (just kick and idle)")
    p.add_argument("--keys", help="a keys.json: its pump key signs the answers to host requests (default: unsigned)")
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    args = p.parse_args(argv)
    actions = []
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            actions = [Action.from_dict(d) for d in json.load(f)]
    pump_key = load_keys(args.keys).get(Role.PUMP) if args.keys else None
    return _serve(args.port, actions, args.exit_on_stdin_eof, pump_key)


if __name__ == "__main__":
    sys.exit(main())
