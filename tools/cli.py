"""The `thecal` command line. Exit status: 0 done, 2 usage error, 3 refused by the pump,
4 no answer or device lost (the contract of issue 6; commands arrive with their issues)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_NO_ANSWER = 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep the message short
        self.print_usage(sys.stderr)
        print(f"thecal: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="thecal", description="Thecal: a test rig for implanted intrathecal drug pumps.")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="show the protocol at work (the emulator arrives with issue 3)")
    demo.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    emu = sub.add_parser("emulator", help="run the emulated pump; first stdout line: READY <host-port> [<pump-port>]")
    emu.add_argument("--state-dir", default=os.environ.get("THECAL_STATE_DIR", ".thecal"))
    emu.add_argument("--link", help="also make a stable symlink to the host port here")
    emu.add_argument("--clock", choices=["lockstep", "realtime"], default="lockstep")
    emu.add_argument("--speed", type=float, default=1.0, help="realtime speed factor")
    emu.add_argument("--split", action="store_true", help="serve the pump link on a second pty")
    emu.add_argument("--pump-model", help="pump-model TOML file overriding the defaults")
    emu.add_argument("--seed", type=int, default=0)
    emu.add_argument("--start", default="2026-01-01T00:00:00", help="local clock at simulated time 0")
    emu.add_argument("--exit-on-stdin-eof", action="store_true", help="for test harnesses")
    emu.add_argument("--capture", help="write every frame on both links to this pcap file")
    emu.add_argument(
        "--no-capture-wall-time",
        dest="capture_wall_time",
        action="store_false",
        help="leave wall time out of the capture so a lockstep run is reproducible to the byte",
    )
    emu.add_argument("--idle-timeout", type=float, default=2.0, help="wall seconds a controller has to report idle")
    emu.add_argument("--script", help="JSON actions for the in-process scripted controller")
    emu.add_argument(
        "--controller",
        choices=["firmware", "scripted"],
        default="firmware",
        help="what runs in-process on the pump link (ignored with --split)",
    )

    fw = sub.add_parser("firmware", help="run the controller firmware against a pump-link port (split mode)")
    fw.add_argument("--port", required=True, help="the pump-link pty (second READY field of --split)")
    fw.add_argument("--state-dir", default=os.environ.get("THECAL_STATE_DIR", ".thecal"))
    fw.add_argument("--exit-on-stdin-eof", action="store_true", help="for test harnesses")

    diag = sub.add_parser("diagram", help="write the therapy state machine as mermaid to docs/therapy-states.md")
    diag.add_argument("--check", action="store_true", help="exit 1 if the committed diagram differs")
    diag.add_argument("--out", default="docs/therapy-states.md")

    bench = sub.add_parser("bench", help="benchmarks; print JSON")
    bench.add_argument("what", choices=["codec", "emulator", "firmware"], help="what to measure")
    bench.add_argument("--days", type=int, default=30, help="simulated days (emulator)")
    bench.add_argument("--seconds", type=float, default=1.0, help="approximate time per measurement")
    bench.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported")
    bench.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    spec = sub.add_parser("spec", help="generate protocol/SPEC.md and protocol/vectors.json")
    mode = spec.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the committed files")
    mode.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from .bench import run_bench

        result = run_bench(args.what, seconds=args.seconds, repeats=args.repeats, days=args.days)
        print(json.dumps(result, indent=None if args.json else 2))
        return EXIT_OK
    if args.command == "emulator":
        return _emulator(args)
    if args.command == "firmware":
        from firmware.runner import run_firmware

        return run_firmware(args.port, args.state_dir, args.exit_on_stdin_eof)
    if args.command == "diagram":
        from firmware.therapy import write_diagram

        return write_diagram(args.out, check=args.check)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(as_json=args.json)
    if args.command == "spec":
        from protocol.spec import main as spec_main

        return spec_main(write=args.write, check=args.check)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces choices


def _emulator(args: argparse.Namespace) -> int:
    from emulator.model import ModelError
    from emulator.scripted import Action
    from emulator.server import EmulatorOptions, parse_start, run_emulator
    from emulator.state import StateError

    try:
        parse_start(args.start)
        if args.clock == "realtime" and not args.speed > 0:
            raise ValueError(f"--speed must be > 0, got {args.speed}")
        script: tuple = ()
        if args.script:
            with open(args.script, encoding="utf-8") as f:
                script = tuple(Action.from_dict(d) for d in json.load(f))
        opts = EmulatorOptions(
            state_dir=args.state_dir,
            link=args.link,
            clock=args.clock,
            speed=args.speed,
            split=args.split,
            pump_model=args.pump_model,
            seed=args.seed,
            start=args.start,
            exit_on_stdin_eof=args.exit_on_stdin_eof,
            capture=args.capture,
            capture_wall_time=args.capture_wall_time,
            idle_timeout_s=args.idle_timeout,
            script=script,
            controller=args.controller,
        )
        return run_emulator(opts)
    except (ValueError, ModelError, StateError, OSError) as e:
        print(f"thecal emulator: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
