"""A stand-in controller for the pump link: the scripted controller (kicks the watchdog,
reports idle) that also answers two host requests the way firmware could but the real
firmware never reaches: BOLUS_REQUEST denied with ALARM_ACTIVE (the firmware halts on a
high alarm, so it answers NOT_RUNNING first), and STATUS. Everything else: NAK BUSY.

    python -m tests.standin_controller --port PUMP_PTY [--exit-on-stdin-eof]
"""

from __future__ import annotations

import argparse
import os
import select
import sys

import serial

from emulator.scripted import Action, ScriptedController
from protocol import codec
from protocol.codes import BolusDecision, Role, TherapyState
from protocol.framing import Frame, parse_body
from protocol.keyfile import load_keys
from protocol.messages import BolusRequest, BolusRequestAck, ControllerStart, HostRx, Status, StatusAck
from protocol.schema import NONE_U64


class StandinController(ScriptedController):
    def _on(self, msg, out) -> None:
        if isinstance(msg, HostRx):
            f = parse_body(msg.frame)
            if isinstance(f, Frame) and f.msg_type in (BolusRequest.TYPE, Status.TYPE):
                self.now_ms = msg.time_ms
                req = codec.decode(f)
                if isinstance(req, BolusRequest):
                    reply = BolusRequestAck(
                        command_id=req.command_id,
                        decision=BolusDecision.ALARM_ACTIVE,
                        dose_ng=0,
                        duration_s=0,
                        next_available_at_s=NONE_U64,
                    )
                else:
                    reply = StatusAck(
                        state=TherapyState.RUNNING,
                        bolus_active=False,
                        time_s=msg.time_ms // 1000,
                        clock_s=0,
                        drug="",
                        concentration_ng_per_ml=0,
                        basal_rate_ng_per_day=0,
                        reservoir_nl=0,
                        low_reservoir_at_s=NONE_U64,
                        low_reservoir_worst_at_s=NONE_U64,
                        lockout_remaining_s=0,
                        boluses_24h=0,
                        max_boluses_24h=0,
                        dose_24h_ng=0,
                        max_dose_24h_ng=0,
                        alarms=(),
                        battery_mv=0,
                        last_command_id=0,
                    )
                out.append(self.host_answer(reply, f))
                return
        super()._on(msg, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.standin_controller", description=__doc__)
    p.add_argument("--port", required=True)
    p.add_argument("--keys", help="a keys.json: its pump key signs the answers (SR-058)")
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    args = p.parse_args(argv)
    ctl = StandinController([Action(0, "resume")], pump_key=load_keys(args.keys).get(Role.PUMP) if args.keys else None)
    with serial.Serial(args.port, timeout=0) as ser:
        fd = ser.fileno()
        stdin = sys.stdin.fileno()
        watch = [fd, stdin] if args.exit_on_stdin_eof else [fd]
        ser.write(codec.encode(ControllerStart(), 0))
        while True:
            ready, _, _ = select.select(watch, [], [], 1.0)
            if args.exit_on_stdin_eof and stdin in ready and not os.read(stdin, 4096):
                return 0
            if fd in ready:
                data = os.read(fd, 65536)
                if data:
                    reply = ctl.feed(data)
                    if reply:
                        os.write(fd, reply)


if __name__ == "__main__":
    sys.exit(main())
