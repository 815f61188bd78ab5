"""The `thecal` command line (the contract of issue 6; README "The CLI contract").

Exit status: 0 done, 2 usage error, 3 refused by the pump (or a bolus denied), 4 no
answer or device lost. Connection options (`--state-dir`, `--port`, `--keys`, `--role`,
`--timeout`) and `--json` may stand before or after the command name. With `--json`
exactly one JSON object goes to stdout (errors included); without it the output is for
people. Error messages go to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from . import units

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_NO_ANSWER = 4

DEFAULT_STATE_DIR = ".thecal"
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_CLINICIAN_BOLUS_DURATION = "10min"
ALL_OF_IT_NL = 0xFFFF_FFFF  # SIM_REFILL withdraws at most what is there

FAULT_NAMES = ("occlusion", "motor_stall", "battery_mv", "stroke_error_pct", "link_noise")


class UsageError(Exception):
    """A usage error found after parsing (exit 2)."""


class _ParserExit(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # raised to main(), which prints it and exits 2
        raise _ParserExit(self, message)


def _argtype(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name
    return convert


DURATION_S = _argtype(units.parse_duration_s, "duration")
DURATION_MS = _argtype(units.parse_duration_ms, "duration")
DOSE_NG = _argtype(units.parse_dose_ng, "dose")
VOLUME_NL = _argtype(units.parse_volume_nl, "volume")
CONCENTRATION = _argtype(units.parse_concentration_ng_per_ml, "concentration")


def _connection_parent() -> argparse.ArgumentParser:
    """Options every pump command takes, before or after its name. Defaults are
    SUPPRESSed so a subparser does not overwrite what the main parser read; main()
    fills them in afterwards."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS,
        help=f"the emulator's state directory: port and keys (default $THECAL_STATE_DIR or {DEFAULT_STATE_DIR})",
    )
    g.add_argument("--port", default=argparse.SUPPRESS, help="host port path (overrides the state directory's)")
    g.add_argument("--keys", default=argparse.SUPPRESS, help="keys JSON file (overrides the state directory's)")
    g.add_argument(
        "--role",
        choices=["clinician", "patient"],
        default=argparse.SUPPRESS,
        help="key to sign with (default clinician; bolus: patient)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        help=f"wall seconds to wait for an answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print exactly one JSON object")
    return p


def _json_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print exactly one JSON object")
    return p


def build_parser() -> argparse.ArgumentParser:
    conn = _connection_parent()
    jp = _json_parent()
    p = _Parser(prog="thecal", description="Thecal: a test rig for implanted intrathecal drug pumps.", parents=[conn])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def pump_cmd(parent_sub, name: str, help_: str, **kw) -> argparse.ArgumentParser:
        return parent_sub.add_parser(name, help=help_, parents=[conn], **kw)

    # ---------------------------------------------------------------- the pump
    pump_cmd(sub, "info", "device information")
    pump_cmd(sub, "status", "therapy status")
    prog = pump_cmd(sub, "program", "program a therapy file (TOML)")
    prog.add_argument("file", metavar="FILE.toml")
    pump_cmd(sub, "start", "start (or resume) therapy")
    pump_cmd(sub, "stop", "stop therapy")
    pump_cmd(sub, "bolus", "the patient presses the bolus button (signed as patient)")
    cb = pump_cmd(sub, "clinician-bolus", "a clinician-ordered bolus")
    cb.add_argument("dose", type=DOSE_NG, metavar="DOSE", help="e.g. '0.1 mg', '50 mcg'")
    cb.add_argument(
        "--duration",
        type=DURATION_S,
        default=units.parse_duration_s(DEFAULT_CLINICIAN_BOLUS_DURATION),
        help=f"delivery duration (default {DEFAULT_CLINICIAN_BOLUS_DURATION})",
    )
    pr = pump_cmd(sub, "prime", "a priming bolus, therapy stopped: push VOLUME into the catheter")
    pr.add_argument("volume", type=VOLUME_NL, metavar="VOLUME", help="e.g. '0.2 mL' (at most twice the catheter's)")
    pump_cmd(sub, "catheter-replaced", "declare the catheter new and empty (implant or revision), therapy stopped")
    key = pump_cmd(sub, "key", "replace or revoke a role's key (a lost handset); signed as the clinician")
    key.add_argument("action", choices=["replace", "revoke"])
    key.add_argument("key_role", choices=["clinician", "patient"], metavar="ROLE", help="clinician or patient")

    refill = pump_cmd(sub, "refill", "refill: begin, complete, or --fill for the whole procedure")
    refill.add_argument("--fill", type=VOLUME_NL, help="volume put in: begin, sim refill and complete in order")
    refill.add_argument("--concentration", type=CONCENTRATION, help="of the new drug (default: as programmed)")
    refill.add_argument("--drug", help="drug put in (default: as programmed)")
    rsub = refill.add_subparsers(dest="refill_action", parser_class=_Parser, metavar="ACTION")
    pump_cmd(rsub, "begin", "enter the refill state; prints the volume expected to be withdrawn")
    rc = pump_cmd(rsub, "complete", "record the refill: what was withdrawn and put in")
    rc.add_argument("--withdrawn", type=VOLUME_NL, required=True, help="volume withdrawn, e.g. '1.9 mL'")
    rc.add_argument("--filled", type=VOLUME_NL, required=True, help="volume put in, e.g. '18 mL'")
    rc.add_argument("--concentration", type=CONCENTRATION, help="of the new drug (default: as programmed)")
    rc.add_argument("--drug", help="drug put in (default: as programmed)")

    from protocol.codes import AlarmId

    ack = pump_cmd(sub, "ack", "acknowledge (silence) an alarm, or every unacknowledged one")
    ack.add_argument("alarm", nargs="?", choices=[a.name.lower() for a in AlarmId], metavar="ALARM_ID")
    log = pump_cmd(sub, "log", "the pump's event log")
    log.add_argument("--since", type=int, default=0, metavar="SEQ", help="first sequence number wanted")
    log.add_argument("--limit", type=int, metavar="N", help="at most N entries")

    evs = pump_cmd(sub, "events", "print the pump's events as they come (alarms, state changes, boluses)")
    evs.add_argument("--follow", action="store_true", help="keep printing until interrupted or the emulator exits")
    evs.add_argument("--count", type=int, metavar="N", help="stop after N events")
    evs.add_argument(
        "--wait",
        type=DURATION_S,
        default=10,
        metavar="DURATION",
        help="without --follow: stop after this long with no event (default 10s)",
    )

    # ---------------------------------------------------------------- the simulator
    sim = pump_cmd(sub, "sim", "simulation control (signed with the sim key)")
    ssub = sim.add_subparsers(dest="sim_action", required=True, parser_class=_Parser, metavar="ACTION")
    adv = pump_cmd(ssub, "advance", "lockstep: move simulated time on")
    adv.add_argument("duration", type=DURATION_MS, metavar="DURATION", help="e.g. 90s, 10min, 6h, 30d")
    flt = pump_cmd(ssub, "fault", "switch an injected fault on or off")
    flt.add_argument("name", choices=FAULT_NAMES, metavar="NAME", help=", ".join(FAULT_NAMES))
    flt.add_argument("switch", choices=["on", "off"])
    flt.add_argument(
        "--value",
        help="battery_mv: mV; stroke_error_pct: percent (may be negative, e.g. -2.5); "
        "link_noise: percent of bytes corrupted (default 1)",
    )
    flt.add_argument(
        "--link", choices=["host", "pump", "both"], default="host", help="link_noise: which link (default host)"
    )
    flt.add_argument("--seed", type=int, default=0, help="link_noise: seed of the noise")
    pump_cmd(ssub, "truth", "ground truth: what the pump hardware really did")
    pc = pump_cmd(ssub, "power-cycle", "remove the controller's power, then restore it")
    pc.add_argument("--off", type=DURATION_MS, default=1_000, help="how long power stays off (default 1s)")
    sr = pump_cmd(ssub, "refill", "the physical refill: empty the reservoir, then fill it (or miss it)")
    sr.add_argument("--fill", type=VOLUME_NL, required=True, help="volume injected, e.g. '18 mL'")
    sr.add_argument("--pocket-fill", action="store_true", help="the injection misses the reservoir")
    sr.add_argument("--concentration", type=CONCENTRATION, help="of what is injected (default: as programmed)")
    rcat = pump_cmd(ssub, "replace-catheter", "revision surgery: an empty catheter replaces the old one")
    rcat.add_argument("--volume", type=VOLUME_NL, default=0, help="its volume (default: the pump model's)")
    sp = pump_cmd(ssub, "speed", "0: lockstep; else realtime at this factor")
    sp.add_argument("factor", type=float)

    # ---------------------------------------------------------------- tools
    demo = sub.add_parser("demo", help="the reference therapy on the emulator, with a plot", parents=[jp])
    demo.add_argument("--days", type=int, default=30, help="simulated days (default 30)")
    demo.add_argument("--out", help="directory for the plot and timeline")

    plot = pump_cmd(sub, "plot", "a therapy timeline as a PNG")
    plot.add_argument("-o", "--output", default=argparse.SUPPRESS, help="PNG file to write")
    plot.add_argument("--from", dest="from_file", help="a timeline JSON saved by the demo")

    dec = sub.add_parser("decode", help="decode a capture (pcap) frame by frame", parents=[jp])
    dec.add_argument("capture", metavar="CAPTURE")

    emu = sub.add_parser("emulator", help="run the emulated pump; first stdout line: READY <host-port> [<pump-port>]")
    emu.add_argument("--state-dir", default=argparse.SUPPRESS, help="state directory (default ./.thecal)")
    emu.add_argument("--link", help="also make a stable symlink to the host port here")
    emu.add_argument("--clock", choices=["lockstep", "realtime"], default="lockstep")
    emu.add_argument("--speed", type=float, default=1.0, help="realtime speed factor")
    emu.add_argument("--split", action="store_true", help="serve the pump link on a second pty")
    emu.add_argument("--pump-model", help="pump-model TOML file overriding the defaults")
    emu.add_argument("--seed", type=int, default=0)
    emu.add_argument("--start", default="2026-01-01T00:00:00", help="local clock at simulated time 0")
    emu.add_argument("--exit-on-stdin-eof", action="store_true", help="for test harnesses")
    emu.add_argument(
        "--new-hardware",
        action="store_true",
        help="start on factory-new pump hardware (pump.json and pump.ckpt set aside), the firmware told so",
    )
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
    emu.add_argument("--firmware-config", help="in-process firmware: a TOML file of settings (firmware/config.py)")
    emu.add_argument("--drug-library", help="in-process firmware: the drug library (default firmware/drugs.toml)")

    fw = sub.add_parser("firmware", help="run the controller firmware against a pump-link port (split mode)")
    fw.add_argument("--port", required=True, help="the pump-link pty (second READY field of --split)")
    fw.add_argument("--state-dir", default=argparse.SUPPRESS, help="state directory (default ./.thecal)")
    fw.add_argument("--exit-on-stdin-eof", action="store_true", help="for test harnesses")
    fw.add_argument("--config", help="a TOML file of firmware settings (firmware/config.py)")
    fw.add_argument("--drug-library", help="the drug library (default firmware/drugs.toml)")

    diag = sub.add_parser("diagram", help="write the therapy state machine as mermaid to docs/therapy-states.md")
    diag.add_argument("--check", action="store_true", help="exit 1 if the committed diagram differs")
    diag.add_argument("--out", default="docs/therapy-states.md")

    bench = sub.add_parser("bench", help="benchmarks; print JSON", parents=[jp])
    bench.add_argument(
        "what",
        choices=["codec", "emulator", "firmware", "latency", "flood", "all"],
        help="what to measure (all: everything but flood)",
    )
    bench.add_argument("--frames", type=int, default=600_000, help="flood: frames on each of two non-reading clients")
    bench.add_argument("--days", type=int, default=30, help="simulated days (emulator)")
    bench.add_argument("--seconds", type=float, default=1.0, help="approximate time per measurement")
    bench.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported")
    bench.add_argument("--split", action="store_true", help="firmware: run it in its own process over a pty")
    bench.add_argument(
        "--nvm", choices=["file", "memory"], default="file", help="firmware embedded: its NVM in a file or in memory"
    )

    trace = sub.add_parser(
        "trace", help="traceability matrix: safety requirement -> tests -> result (from pytest --trace-report)"
    )
    trace.add_argument("--results", nargs="+", required=True, metavar="FILE", help="pytest --trace-report files")
    trace.add_argument("--requirements", default="docs/safety-requirements.md", help="the requirements document")
    trace.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    from .campaign import add_campaign_parser  # thecal campaign link|fuzz|merge (tools/campaign.py)

    add_campaign_parser(sub, jp)

    spec = sub.add_parser("spec", help="generate protocol/SPEC.md and protocol/vectors.json")
    mode = spec.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the committed files")
    mode.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    return p


def _fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    if not hasattr(args, "state_dir"):
        args.state_dir = os.environ.get("THECAL_STATE_DIR") or DEFAULT_STATE_DIR
    for name, default in (("port", None), ("keys", None), ("role", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if not hasattr(args, "timeout"):
        args.timeout = DEFAULT_TIMEOUT_S
    if args.role is None:
        args.role = "patient" if args.command == "bolus" else "clinician"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except _ParserExit as e:
        e.parser.print_usage(sys.stderr)
        print(f"{e.parser.prog}: error: {e.message}", file=sys.stderr)
        if "--json" in argv:
            print(json.dumps({"error": e.message, "usage_error": True}))
        return EXIT_USAGE
    args = _fill_defaults(args)
    cmd = args.command
    if cmd == "bench":
        from .bench import run_bench

        result = run_bench(
            args.what,
            seconds=args.seconds,
            repeats=args.repeats,
            days=args.days,
            split=args.split,
            nvm=args.nvm,
            frames=args.frames,
        )
        print(json.dumps(result, indent=None if args.json else 2))
        return EXIT_OK
    if cmd == "emulator":
        return _emulator(args)
    if cmd == "firmware":
        from firmware.board.runner import run_firmware

        return run_firmware(args.port, args.state_dir, args.exit_on_stdin_eof, args.config, args.drug_library)
    if cmd == "diagram":
        from firmware.therapy import write_diagram

        return write_diagram(args.out, check=args.check)
    if cmd == "demo":
        from .demo import run_demo

        return run_demo(days=args.days, out=args.out, as_json=args.json)
    if cmd == "plot":
        from .plot import run_plot

        return run_plot(args)
    if cmd == "decode":
        from .decode import run_decode

        return run_decode(args.capture, args.json)
    if cmd == "trace":
        from .trace import run_trace

        return run_trace(args.requirements, args.results, args.json)
    if cmd == "campaign":
        from .campaign import run_campaign_cli

        return run_campaign_cli(args)
    if cmd == "spec":
        from .spec import main as spec_main

        return spec_main(write=args.write, check=args.check)
    if cmd == "events":
        return _events(args)
    return _pump_command(args)


def _events(args: argparse.Namespace) -> int:
    """JSON lines with --json (one event a line), not one object: a stream has no end."""
    from tools.client import ClientError, PortLost
    from tools.events import follow

    if args.count is not None and args.count < 1:
        return _fail(args, "events", f"--count must be at least 1, not {args.count}", EXIT_USAGE, {"usage_error": True})
    try:
        with _connect(args) as client:
            follow(
                client,
                lambda line: print(line, flush=True),
                args.json,
                args.follow,
                args.count,
                args.wait,
            )
    except KeyboardInterrupt:
        return EXIT_OK
    except PortLost as e:
        if args.follow:
            print(f"thecal events: the emulator went away ({e})", file=sys.stderr)
            return EXIT_OK
        return _fail(args, "events", str(e), EXIT_NO_ANSWER, {})
    except ClientError as e:
        return _fail(args, "events", str(e), EXIT_NO_ANSWER, {})
    return EXIT_OK


def _emulator(args: argparse.Namespace) -> int:
    from emulator.model import ModelError
    from emulator.scripted import Action
    from emulator.server import EmulatorOptions, parse_start, run_emulator
    from emulator.state import StateError
    from firmware.board import controller_factory

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
            new_hardware=args.new_hardware,
            capture=args.capture,
            capture_wall_time=args.capture_wall_time,
            idle_timeout_s=args.idle_timeout,
            script=script,
            controller=args.controller,
            firmware=controller_factory(args.firmware_config, args.drug_library),
        )
        return run_emulator(opts)
    except (ValueError, ModelError, StateError, OSError) as e:
        print(f"thecal emulator: {e}", file=sys.stderr)
        return EXIT_USAGE


# ==================================================================== pump commands


@dataclass
class Output:
    """What a command prints: one JSON object, or lines for people; and its exit status."""

    data: dict[str, Any]
    text: str
    code: int = EXIT_OK
    errors: list[str] = field(default_factory=list)


def _num(value: Fraction | int) -> int | float:
    """An exact quantity for JSON: an int when whole, else a float (to 3 places it is
    exact for nL -> uL and ng -> ug)."""
    v = Fraction(value)
    return int(v) if v.denominator == 1 else round(float(v), 6)


def _ul(nl: int) -> int | float | None:
    """nL as uL for JSON; None for the pump's "not known" (0xFFFFFFFF) and "none" (-2**31)."""
    from protocol.schema import NONE_I32, NONE_U32

    if nl in (NONE_U32, NONE_I32):
        return None
    return _num(Fraction(nl, 1000))


def _volume_text(nl: int) -> str:
    from protocol.schema import NONE_U32

    return "not known (no fill recorded)" if nl == NONE_U32 else units.format_volume(nl)


def _lower(enum_value: Any) -> str | int:
    return enum_value.name.lower() if hasattr(enum_value, "name") else enum_value


def _clock_iso(clock_s: int) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=clock_s)).isoformat()


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _when(time_s: int) -> str:
    """Pump time for people: 'day 1 07:00:00' (day 0 is the first day)."""
    d, rest = divmod(time_s, 86_400)
    return f"day {d} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d} (t={time_s} s)"


def _connect(args: argparse.Namespace, role=None):
    from protocol.codes import Role
    from tools.client import Client, NoAnswer, load_keys, port_of

    role = role or {"clinician": Role.CLINICIAN, "patient": Role.PATIENT}[args.role]
    from pathlib import Path

    port = args.port or port_of(args.state_dir)
    keys_path = Path(args.keys) if args.keys else Path(args.state_dir) / "keys.json"
    try:
        keys = load_keys(keys_path)
    except FileNotFoundError:
        raise NoAnswer(f"no keys at {keys_path} (start `thecal emulator --state-dir DIR` or give --keys)") from None
    except (ValueError, KeyError, OSError) as e:
        raise UsageError(f"cannot read keys from {keys_path}: {e}") from None
    return Client(port, keys, role, timeout_s=args.timeout, flush=True)


def _pump_command(args: argparse.Namespace) -> int:
    from tools.client import ClientError, NoAnswer, Refused, Unauthentic

    name = _command_name(args)
    try:
        handler, prepared = _prepare(args)
        with _connect(args) as client:
            out = handler(client, args, prepared)
    except UsageError as e:
        return _fail(args, name, str(e), EXIT_USAGE, {"usage_error": True})
    except Refused as e:
        data = {
            "refused": True,
            "reason": e.reason.name.lower(),
            "field": e.field or None,
            "error": e.nak.detail,
        }
        message = f"refused: {e}"
        if args.command == "program":
            from tools.programfile import file_field

            data = {**data, "accepted": False, "field": file_field(e.field) if e.field else None}
            data["wire_field"] = e.field or None
            message = f"refused ({e.reason.name.lower()}): " + (
                f"{data['field']}: {e.nak.detail}" if data["field"] else e.nak.detail
            )
        return _fail(args, name, message, EXIT_REFUSED, data)
    except NoAnswer as e:
        return _fail(args, name, str(e), EXIT_NO_ANSWER, {"no_answer": True, "kind": type(e).__name__})
    except Unauthentic as e:  # SR-058: a forged or damaged answer is no answer
        return _fail(
            args, name, str(e), EXIT_NO_ANSWER, {"no_answer": True, "unauthentic": True, "kind": "Unauthentic"}
        )
    except ClientError as e:
        return _fail(args, name, str(e), EXIT_USAGE, {"usage_error": True})
    for line in out.errors:
        print(f"{name}: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(out.data))
    elif out.text:
        print(out.text)
    return out.code


def _command_name(args: argparse.Namespace) -> str:
    parts = ["thecal", args.command]
    for sub in ("refill_action", "sim_action"):
        if getattr(args, sub, None):
            parts.append(getattr(args, sub))
    return " ".join(parts)


def _fail(args: argparse.Namespace, name: str, message: str, code: int, data: dict[str, Any]) -> int:
    print(f"{name}: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"error": message, **data}))
    return code


def _prepare(args: argparse.Namespace) -> tuple[Callable, Any]:
    """The handler for the command, and whatever could be checked before connecting
    (a therapy file, a fault value): usage errors come before any traffic."""
    cmd = args.command
    if cmd == "program":
        from tools.programfile import ProgramFileError, load_program

        try:
            return _program, load_program(args.file, 1)
        except ProgramFileError as e:
            raise UsageError(f"{args.file}: {e}") from None
    if cmd == "refill":
        if args.refill_action is None and args.fill is None:
            raise UsageError("say `refill begin`, `refill complete --withdrawn V --filled V`, or `refill --fill V`")
        if args.refill_action is not None and args.fill is not None:
            raise UsageError("--fill is the whole procedure: leave out begin/complete")
    if cmd == "sim" and args.sim_action == "fault":
        return _sim_fault, _fault_plan(args)
    if cmd == "log":
        if args.limit is not None and args.limit < 1:
            raise UsageError(f"--limit must be at least 1, not {args.limit}")
        if args.since < 0:
            raise UsageError(f"--since must be a sequence number >= 0, not {args.since}")
    if cmd == "sim" and args.sim_action == "speed" and not args.factor >= 0:
        raise UsageError(f"the speed factor must be >= 0 (0 = lockstep), not {args.factor:g}")
    handlers = {
        "info": _info,
        "status": _status,
        "start": _start,
        "stop": _stop,
        "bolus": _bolus,
        "clinician-bolus": _clinician_bolus,
        "prime": _prime,
        "catheter-replaced": _catheter_replaced,
        "key": _key,
        "ack": _ack,
        "log": _log,
    }
    if cmd in handlers:
        return handlers[cmd], None
    if cmd == "refill":
        return {None: _refill_all, "begin": _refill_begin, "complete": _refill_complete}[args.refill_action], None
    if cmd == "sim":
        return {
            "advance": _sim_advance,
            "truth": _sim_truth,
            "power-cycle": _sim_power_cycle,
            "refill": _sim_refill,
            "replace-catheter": _sim_replace_catheter,
            "speed": _sim_speed,
        }[args.sim_action], None
    raise AssertionError(cmd)  # pragma: no cover - argparse enforces choices


# ---------------------------------------------------------------- information


def _info(c, args, _) -> Output:
    h = c.hello()
    data = {
        "serial": h.serial,
        "firmware_version": h.firmware_version,
        "protocol_version": h.protocol_version,
        "reservoir_capacity_ul": h.reservoir_capacity_ul,
        "stroke_nl": h.stroke_nl,
    }
    text = _table(
        [
            ("serial", h.serial),
            ("firmware", h.firmware_version),
            ("protocol", h.protocol_version),
            ("reservoir", units.format_volume(h.reservoir_capacity_ul * 1000)),
            ("stroke", units.format_volume(h.stroke_nl)),
        ]
    )
    return Output(data, text)


def status_dict(st) -> dict[str, Any]:
    """STATUS_ACK as the contract's JSON object."""
    from protocol.schema import NONE_U64

    return {
        "state": st.state.name.lower(),
        "time_s": st.time_s,
        "clock": _clock_iso(st.clock_s),
        "drug": st.drug or None,
        "concentration_ug_per_ml": _num(Fraction(st.concentration_ng_per_ml, 1000)),
        "basal_rate_ng_per_day": st.basal_rate_ng_per_day,
        "reservoir_ul": _ul(st.reservoir_nl),
        "low_reservoir_at_s": None if st.low_reservoir_at_s == NONE_U64 else st.low_reservoir_at_s,
        "low_reservoir_worst_at_s": None if st.low_reservoir_worst_at_s == NONE_U64 else st.low_reservoir_worst_at_s,
        "bolus_active": st.bolus_active,
        "lockout_remaining_s": st.lockout_remaining_s,
        "boluses_24h": st.boluses_24h,
        "max_boluses_24h": st.max_boluses_24h,
        "dose_24h_ng": st.dose_24h_ng,
        "max_dose_24h_ng": st.max_dose_24h_ng,
        "alarms": [
            {
                "id": a.alarm.name.lower(),
                "priority": a.priority.name.lower(),
                "acknowledged": a.acknowledged,
                "condition_present": a.condition_present,
                "silenced": a.silenced,
                "needs_reset": a.needs_reset,
            }
            for a in st.alarms
        ],
        "battery_mv": st.battery_mv,
        "last_command_id": st.last_command_id,
        "catheter_state": st.catheter_state.name.lower(),
        "catheter_volume_ul": _ul(st.catheter_volume_nl) if st.catheter_volume_nl else None,
    }


def _alarm_text(a: dict[str, Any]) -> str:
    """One alarm of `thecal status`: acknowledge versus reset, made visible (SR-052)."""
    parts = [
        a["priority"],
        "condition present" if a["condition_present"] else "condition gone",
        "silenced" if a["silenced"] else ("acknowledged" if a["acknowledged"] else "not acknowledged"),
    ]
    if a["needs_reset"]:
        parts.append("halts therapy until acknowledged with its condition gone")
    return f"{a['id']} ({', '.join(parts)})"


def _status(c, args, _) -> Output:
    st = c.status()
    d = status_dict(st)
    alarms = "; ".join(_alarm_text(a) for a in d["alarms"]) or "none"
    low = "-" if d["low_reservoir_at_s"] is None else _when(d["low_reservoir_at_s"])
    worst = "-" if d["low_reservoir_worst_at_s"] is None else _when(d["low_reservoir_worst_at_s"])
    rows = [
        ("state", d["state"]),
        ("pump time", _when(st.time_s)),
        ("clock", d["clock"]),
        ("drug", f"{st.drug} {units.format_concentration(st.concentration_ng_per_ml)}" if st.drug else "none"),
        ("basal rate", units.format_rate(st.basal_rate_ng_per_day)),
        ("reservoir", _volume_text(st.reservoir_nl)),
        ("low reservoir at", low),
        ("low reservoir at, every bolus taken", worst),
        ("bolus", "in progress" if st.bolus_active else "none"),
        ("lockout left", units.format_duration(st.lockout_remaining_s)),
        ("boluses in 24 h", f"{st.boluses_24h} of {st.max_boluses_24h}"),
        ("dose in 24 h", f"{units.format_dose(st.dose_24h_ng)} of {units.format_dose(st.max_dose_24h_ng)}"),
        ("alarms", alarms),
        ("battery", f"{st.battery_mv} mV"),
        ("last command id", st.last_command_id),
        (
            "catheter",
            f"{d['catheter_state']}, "
            + (units.format_volume(st.catheter_volume_nl) if st.catheter_volume_nl else "volume not entered"),
        ),
    ]
    return Output(d, _table(rows))


def _log_fields(entry) -> dict[str, Any]:
    from protocol.codes import (
        AlarmId,
        BolusKind,
        BolusOutcome,
        CatheterState,
        LogEvent,
        MemoryProof,
        NakReason,
        Priority,
        ResetCause,
        Role,
        TherapyState,
        TimedBolusOutcome,
    )
    from protocol.messages import REGISTRY

    def enum(cls):
        def conv(v: int):
            try:
                return cls(v).name.lower()
            except ValueError:
                return v

        return conv

    def msg_name(v: int):
        cls = REGISTRY.get(v)
        return cls.NAME.lower() if cls else v

    def decision(v: int):
        from protocol.codes import BolusDecision

        try:
            return BOLUS_REASONS[BolusDecision(v)] or "granted"
        except (ValueError, KeyError):
            return v

    def plain(v: int) -> int:
        return v

    e = LogEvent
    spec: dict[LogEvent, tuple] = {
        e.BOOT: (("reset_cause", enum(ResetCause)), ("boot_count", plain)),
        e.PROGRAM_ACCEPTED: (("command_id", plain),),
        e.PROGRAM_REFUSED: (("command_id", plain), ("reason", enum(NakReason))),
        e.THERAPY_STATE: (("old_state", enum(TherapyState)), ("new_state", enum(TherapyState))),
        e.BOLUS_REQUEST: (("command_id", plain), ("decision", decision)),
        e.BOLUS_STARTED: (("command_id", plain), ("kind", enum(BolusKind))),
        e.BOLUS_FINISHED: (("command_id", plain), ("outcome", enum(BolusOutcome))),
        e.ALARM_RAISED: (("alarm", enum(AlarmId)), ("priority", enum(Priority))),
        e.ALARM_CLEARED: (("alarm", enum(AlarmId)),),
        e.ALARM_ACKNOWLEDGED: (("alarm", enum(AlarmId)),),
        e.REFILL_BEGIN: (("command_id", plain),),
        e.REFILL_COMPLETE: (("withdrawn_nl", plain), ("added_nl", plain)),
        e.CLOCK_SET: (("clock_s_low32", plain),),
        e.AUTH_FAILED: (("role", enum(Role)), ("message", msg_name)),
        e.REPLAY_REJECTED: (("role", enum(Role)), ("message", msg_name)),
        e.KEY_LOCKED_OUT: (("role", enum(Role)), ("lockout_s", plain)),
        e.NOT_PERMITTED: (("role", enum(Role)), ("message", msg_name)),
        e.NVM_ERROR: (("record_id", plain), ("slot_mask", plain)),
        e.DELIVERY_SHORTFALL: (("strokes_commanded", plain), ("strokes_made", plain)),
        e.COMMAND_REFUSED: (("message", msg_name), ("reason", enum(NakReason))),
        e.DELIVERY_MILESTONE: (("delivered_ml", plain),),
        e.CLOCK_WENT_BACK: (("pump_s_back", plain), ("rtc_s_back", plain)),
        e.NVM_OUTDATED: (("proof", enum(MemoryProof)), ("by", plain)),
        e.BASAL_FORFEITED: (("strokes", plain), ("ng", plain)),
        e.ODOMETER_WENT_BACK: (("counted_strokes", plain), ("odometer_strokes", plain)),
        e.CATHETER_REPLACED: (("command_id", plain), ("volume_nl", plain)),
        e.CATHETER_STATE: (("old_catheter_state", enum(CatheterState)), ("catheter_state", enum(CatheterState))),
        e.THERAPY_RECOVERED: (("alarm", enum(AlarmId)), ("new_state", enum(TherapyState))),
        e.TIMED_BOLUS: (("timed_bolus", plain), ("result", enum(TimedBolusOutcome))),
        # Failures and refusals beyond their kind's log budget, as a count (SR-056).
        e.AUTH_FAILURES_SUMMARY: (("role", enum(Role)), ("count", plain)),
        e.REFUSALS_SUMMARY: (("refused", enum(LogEvent)), ("count", plain)),
        e.HARDWARE_REPLACED: (("boot_count", plain), ("counted_strokes", plain)),
        e.KEY_UPDATED: (("role", enum(Role)), ("revoked", plain)),
    }
    ev = entry.event
    out: dict[str, Any] = {
        "seq": entry.seq,
        "time_s": entry.time_s,
        "type": _lower(ev),
        "arg0": entry.arg0,
        "arg1": entry.arg1,
    }
    for (name, conv), value in zip(spec.get(ev, ()), (entry.arg0, entry.arg1), strict=False):
        out[name] = conv(value)
    return out


def _log(c, args, _) -> Output:
    entries = c.read_log(args.since, args.limit)
    events = [_log_fields(e) for e in entries]
    lines = []
    for ev in events:
        extra = ", ".join(f"{k}={v}" for k, v in ev.items() if k not in ("seq", "time_s", "type", "arg0", "arg1"))
        lines.append(f"{ev['seq']:>6}  {_when(ev['time_s'])}  {ev['type']}" + (f"  {extra}" if extra else ""))
    return Output({"events": events}, "\n".join(lines) if lines else "(no entries)")


# ---------------------------------------------------------------- therapy commands


def _confirmed_note(result) -> tuple[bool, list[str]]:
    from tools.client import Confirmed

    if isinstance(result, Confirmed):
        return True, [
            f"the answer was lost; STATUS shows command {result.command_id} accepted (not sent again)",
        ]
    return False, []


def _program(c, args, prescription) -> Output:
    rx = replace(prescription, command_id=c.next_command_id())
    result = c.program(rx)
    lost, notes = _confirmed_note(result)
    data = {"accepted": True, "command_id": rx.command_id}
    if lost:
        data["answer_lost"] = True
    return Output(data, f"accepted: {rx.drug} {units.format_concentration(rx.concentration_ng_per_ml)}", errors=notes)


def _state_result(c, result) -> tuple[dict[str, Any], list[str]]:
    lost, notes = _confirmed_note(result)
    state = result.status.state if lost else result.state
    data = {"state": state.name.lower(), "command_id": result.command_id}
    if lost:
        data["answer_lost"] = True
    return data, notes


def _start(c, args, _) -> Output:
    data, notes = _state_result(c, c.start())
    return Output(data, f"therapy {data['state']}", errors=notes)


def _stop(c, args, _) -> Output:
    data, notes = _state_result(c, c.stop())
    return Output(data, f"therapy {data['state']}", errors=notes)


def _bolus_reasons() -> dict:
    from protocol.codes import BolusDecision as D

    return {
        D.GRANTED: None,
        D.LOCKOUT: "lockout",
        D.COUNT_LIMIT: "max_boluses",
        D.DOSE_LIMIT: "daily_limit",
        D.NOT_RUNNING: "not_running",
        D.BOLUS_IN_PROGRESS: "bolus_in_progress",
        D.RESERVOIR: "reservoir",
        D.ALARM_ACTIVE: "alarm",
        D.NO_PATIENT_BOLUS: "disabled",
    }


BOLUS_REASONS = _bolus_reasons()

_REASON_TEXT = {
    "lockout": "the lockout since the last bolus has not passed",
    "max_boluses": "the boluses allowed per 24 h are used up",
    "daily_limit": "it would exceed the 24 h dose limit",
    "not_running": "therapy is not running",
    "bolus_in_progress": "a bolus is being delivered",
    "reservoir": "the reservoir does not hold the dose",
    "alarm": "a high-priority alarm is active",
    "disabled": "the prescription has no patient bolus",
}


def _bolus(c, args, _) -> Output:
    from protocol.codes import Role
    from protocol.schema import NONE_U64
    from tools.client import Confirmed, NoAnswer

    role = Role.PATIENT if args.role == "patient" else Role.CLINICIAN
    ack = c.bolus(role)
    if isinstance(ack, Confirmed):
        raise NoAnswer(
            f"the answer was lost after the pump accepted the request (command id {ack.command_id}): "
            "do not press again; see `thecal status`"
        )
    reason = BOLUS_REASONS[ack.decision]
    granted = reason is None
    available_in = None
    if not granted and ack.next_available_at_s != NONE_U64:
        now = c.status(role).time_s
        available_in = max(0, ack.next_available_at_s - now)
    data = {
        "granted": granted,
        "reason": reason,
        "dose_ng": ack.dose_ng,
        "duration_s": ack.duration_s,
        "available_in_s": available_in,
        "command_id": ack.command_id,
    }
    if granted:
        text = f"granted: {units.format_dose(ack.dose_ng)} over {units.format_duration(ack.duration_s)}"
    else:
        text = f"denied ({reason}): {_REASON_TEXT[reason]}"
        if available_in is not None:
            text += f"; next possible in {units.format_duration(available_in)}"
    return Output(data, text, EXIT_OK if granted else EXIT_REFUSED)


def _clinician_bolus(c, args, _) -> Output:
    result = c.clinician_bolus(args.dose, args.duration)
    lost, notes = _confirmed_note(result)
    volume = None if lost else result.volume_nl
    data = {
        "dose_ng": args.dose,
        "duration_s": args.duration,
        "volume_ul": None if volume is None else _ul(volume),
        "command_id": result.command_id,
    }
    if lost:
        data["answer_lost"] = True
    text = f"clinician bolus started: {units.format_dose(args.dose)} over {units.format_duration(args.duration)}"
    if volume is not None:
        text += f" ({units.format_volume(volume)})"
    return Output(data, text, errors=notes)


def _prime(c, args, _) -> Output:
    result = c.prime(args.volume)
    lost, notes = _confirmed_note(result)
    data = {"volume_ul": _ul(args.volume), "command_id": result.command_id}
    if lost:
        data["answer_lost"] = True
    return Output(data, f"priming started: {units.format_volume(args.volume)}", errors=notes)


def _catheter_replaced(c, args, _) -> Output:
    result = c.catheter_replaced()
    lost, notes = _confirmed_note(result)
    data: dict[str, Any] = {"command_id": result.command_id}
    if lost:
        data["answer_lost"] = True
        return Output(data, "catheter recorded as replaced", errors=notes)
    data["catheter_state"] = result.catheter_state.name.lower()
    data["catheter_volume_ul"] = _ul(result.catheter_volume_nl)
    text = f"catheter recorded as new and empty ({units.format_volume(result.catheter_volume_nl)}): prime it"
    return Output(data, text, errors=notes)


def _key(c, args, _) -> Output:
    """SR-059. replace: a new key is made, sent wrapped, and written to the keys file once
    the pump has it (the old key in the file would be refused from now on). revoke: the
    pump refuses the role's key from now on; the keys file keeps it, refused."""
    from pathlib import Path

    from protocol.auth import new_key
    from protocol.codes import Role
    from protocol.keyfile import dumps_keys, load_keys

    role = {"clinician": Role.CLINICIAN, "patient": Role.PATIENT}[args.key_role]
    keys_path = Path(args.keys) if args.keys else Path(args.state_dir) / "keys.json"
    key = None if args.action == "revoke" else new_key()
    result = c.update_key(role, key)
    lost, notes = _confirmed_note(result)
    data: dict[str, Any] = {"command_id": result.command_id, "role": args.key_role, "revoked": key is None}
    if key is not None:
        keys = load_keys(keys_path)
        keys[role] = key
        tmp = keys_path.with_name(f".{keys_path.name}.tmp")
        tmp.write_bytes(dumps_keys(keys))
        tmp.chmod(0o600)
        tmp.replace(keys_path)
        data["keys_file"] = str(keys_path)
    if lost:
        data["answer_lost"] = True
    text = (
        f"{args.key_role} key revoked: the pump refuses it from now on"
        if key is None
        else f"{args.key_role} key replaced; the new one is in {keys_path}"
    )
    return Output(data, text, errors=notes)


# ---------------------------------------------------------------- refill


def _drug_and_conc(c, args) -> tuple[str, int]:
    st = c.status()
    drug = args.drug or st.drug
    conc = args.concentration if args.concentration is not None else st.concentration_ng_per_ml
    if not drug:
        raise UsageError("no drug is programmed: give --drug (and --concentration)")
    if not conc:
        raise UsageError("no concentration is programmed: give --concentration")
    return drug, conc


def _begin(c) -> tuple[dict[str, Any], list[str]]:
    result = c.refill_begin()
    lost, notes = _confirmed_note(result)
    expected = result.status.reservoir_nl if lost else result.expected_reservoir_nl
    return {"expected_ul": _ul(expected), "command_id": result.command_id}, notes


def _complete(c, withdrawn_nl: int, filled_nl: int, drug: str, conc: int) -> tuple[dict[str, Any], list[str]]:
    result = c.refill_complete(withdrawn_nl, filled_nl, drug, conc)
    lost, notes = _confirmed_note(result)
    data = {
        "reservoir_ul": _ul(result.status.reservoir_nl if lost else result.reservoir_nl),
        "discrepancy_ul": None if lost else _ul(result.discrepancy_nl),
        "command_id": result.command_id,
    }
    return data, notes


def _refill_begin(c, args, _) -> Output:
    data, notes = _begin(c)
    if data["expected_ul"] is None:
        text = "refill begun: the pump was never filled (this is its initial fill)"
    else:
        text = f"refill begun: expect to withdraw {units.format_volume(round(data['expected_ul'] * 1000))}"
    return Output(data, text, errors=notes)


def _refill_complete(c, args, _) -> Output:
    drug, conc = _drug_and_conc(c, args)
    data, notes = _complete(c, args.withdrawn, args.filled, drug, conc)
    return Output(data, _refill_text(data), errors=notes)


def _refill_text(data: dict[str, Any]) -> str:
    rows = [("reservoir", units.format_volume(round(data["reservoir_ul"] * 1000)))]
    if data.get("discrepancy_ul") is not None:
        rows.append(("discrepancy", units.format_volume(round(data["discrepancy_ul"] * 1000))))
    if "withdrawn_ul" in data:
        rows.insert(0, ("withdrawn", units.format_volume(round(data["withdrawn_ul"] * 1000))))
    return _table(rows)


def _refill_all(c, args, _) -> Output:
    drug, conc = _drug_and_conc(c, args)
    begin, notes = _begin(c)
    phys = c.sim_refill(ALL_OF_IT_NL, args.fill, conc, into_pocket=False)
    done, more = _complete(c, phys.withdrawn_nl, args.fill, drug, conc)
    data = {"expected_ul": begin["expected_ul"], "withdrawn_ul": _ul(phys.withdrawn_nl), **done}
    return Output(data, _refill_text(data), errors=notes + more)


# ---------------------------------------------------------------- alarms


def _ack(c, args, _) -> Output:
    from protocol.codes import AlarmId

    if args.alarm is not None:
        targets = [AlarmId[args.alarm.upper()]]
    else:
        targets = [a.alarm for a in c.status().alarms if not a.acknowledged]
    done = []
    for alarm in targets:
        r = c.ack_alarm(alarm)
        done.append(
            {
                "id": r.alarm.name.lower(),
                "still_active": r.still_active,
                "condition_present": r.still_active,  # (acknowledged, it stays latched only while it holds)
                "priority": r.priority.name.lower(),
                "needs_reset": r.needs_reset,
                "state": r.state.name.lower(),
            }
        )
    text = "\n".join(f"acknowledged {d['id']}: {_ack_text(d)}" for d in done) or "no unacknowledged alarms"
    return Output({"acknowledged": done}, text)


def _ack_text(d: dict[str, Any]) -> str:
    """What an acknowledgement did (SR-052): a reset, or a silence that needs another."""
    if not d["still_active"]:
        return f"cleared; therapy {d['state']}"
    if d["needs_reset"]:
        return "silenced; the condition is still present; acknowledge again once it clears to resume"
    if d["priority"] == "high" and d["state"] == "halted":
        return "silenced; the condition is still present; therapy resumes by itself once it clears"
    return "silenced; the condition is still present"


# ---------------------------------------------------------------- sim-control


def _sim_advance(c, args, _) -> Output:
    ms = c.advance(args.duration)
    return Output({"time_s": ms // 1000, "time_ms": ms}, f"pump time {_when(ms // 1000)}")


def _sim_speed(c, args, _) -> Output:
    milli = c.set_speed(args.factor)
    return Output({"speed": _num(Fraction(milli, 1000))}, "lockstep" if milli == 0 else f"realtime x{milli / 1000:g}")


@dataclass(frozen=True)
class _FaultPlan:
    on: list[tuple[Any, int, Any, int]]  # (fault, value, link, rate_ppm)
    off: list[Any]


def _percent_ppm(text: str, what: str) -> int:
    try:
        v = Fraction(text.strip().removesuffix("%").strip())
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--value {text!r}: {what} is a percentage, e.g. 2.5") from None
    ppm = v * 10_000
    if ppm.denominator != 1:
        raise UsageError(f"--value {text!r}: {what} resolves to whole ppm (0.0001 %)")
    return int(ppm)


def _fault_plan(args: argparse.Namespace) -> _FaultPlan:
    from protocol.codes import Fault, Link

    name, on, value = args.name, args.switch == "on", args.value
    if name in ("occlusion", "motor_stall"):
        if value is not None:
            raise UsageError(f"{name} takes no --value")
        f = Fault.OCCLUSION if name == "occlusion" else Fault.MOTOR_STALL
        return _FaultPlan([(f, 0, Link.NONE, 0)], []) if on else _FaultPlan([], [f])
    if name == "battery_mv":
        if not on:
            return _FaultPlan([], [Fault.BATTERY_MV])
        if value is None:
            raise UsageError("battery_mv on needs --value MV (e.g. --value 2700)")
        text = value.strip().removesuffix("mV").removesuffix("mv").strip()
        if not text.isdigit():
            raise UsageError(f"--value {value!r}: battery_mv is whole millivolts, e.g. 2700")
        return _FaultPlan([(Fault.BATTERY_MV, int(text), Link.NONE, 0)], [])
    if name == "stroke_error_pct":
        if not on:
            return _FaultPlan([], [Fault.STROKE_ERROR])
        if value is None:
            raise UsageError("stroke_error_pct on needs --value PERCENT (e.g. --value -2.5)")
        return _FaultPlan([(Fault.STROKE_ERROR, _percent_ppm(value, "stroke_error_pct"), Link.NONE, 0)], [])
    # link_noise: bytes corrupted (a bit flipped) at the rate, on the chosen link.
    if not on:
        return _FaultPlan([], [Fault.LINK_CORRUPT, Fault.LINK_DROP])
    rate = _percent_ppm(value if value is not None else "1", "link_noise")
    if not 0 < rate <= 1_000_000:
        raise UsageError(f"--value {value!r}: link_noise is a percentage in (0, 100]")
    link = {"host": Link.HOST, "pump": Link.PUMP, "both": Link.BOTH}[args.link]
    return _FaultPlan([(Fault.LINK_CORRUPT, 0, link, rate)], [])


def _sim_fault(c, args, plan: _FaultPlan) -> Output:
    for fault, value, link, rate in plan.on:
        c.inject_fault(fault, value=value, link=link, rate_ppm=rate, seed=args.seed)
    for fault in plan.off:
        c.clear_fault(fault)
    data: dict[str, Any] = {"fault": args.name, "on": args.switch == "on"}
    if plan.on:
        data["value"] = plan.on[0][1] if args.name != "link_noise" else None
        if args.name == "link_noise":
            data["rate_ppm"] = plan.on[0][3]
            data["link"] = args.link
    return Output(data, f"{args.name} {args.switch}")


def _sim_truth(c, args, _) -> Output:
    from protocol.codes import MotorState

    gt = c.ground_truth()
    tones = c.tones() if gt.tones_total else []
    data = {
        "time_s": gt.time_ms // 1000,
        "time_ms": gt.time_ms,
        "delivered_nl": gt.delivered_nl,
        "delivered_ng": gt.delivered_ng,
        "reservoir_nl": gt.reservoir_nl,
        "motor_running": gt.motor is MotorState.RUNNING,
        "motor": gt.motor.name.lower(),
        "outlet_pressure_pa": gt.outlet_pressure_pa,
        "strokes_total": gt.strokes_total,
        "battery_mv": gt.battery_mv,
        "controller_alive": gt.controller_alive,
        "tones": [{"time_s": _num(Fraction(t.time_ms, 1000)), "pattern": t.pattern.name.lower()} for t in tones],
    }
    recent = ", ".join(f"{t['pattern']} at {t['time_s']} s" for t in data["tones"][-5:]) or "none"
    text = _table(
        [
            ("pump time", _when(data["time_s"])),
            ("delivered", f"{units.format_volume(gt.delivered_nl)} ({units.format_dose(gt.delivered_ng)})"),
            ("reservoir", units.format_volume(gt.reservoir_nl)),
            ("motor", data["motor"]),
            ("outlet pressure", f"{gt.outlet_pressure_pa} Pa"),
            ("strokes", gt.strokes_total),
            ("battery", f"{gt.battery_mv} mV"),
            ("controller", "alive" if gt.controller_alive else "silent"),
            ("tones", f"{len(tones)} (last: {recent})"),
        ]
    )
    return Output(data, text)


def _sim_power_cycle(c, args, _) -> Output:
    boots = c.power_cycle(args.off)
    return Output({"boot_count": boots}, f"power restored (boot {boots})")


def _sim_refill(c, args, _) -> Output:
    conc = args.concentration
    if conc is None:
        conc = c.status().concentration_ng_per_ml
        if not conc:
            raise UsageError("no concentration is programmed: give --concentration")
    r = c.sim_refill(ALL_OF_IT_NL, args.fill, conc, into_pocket=args.pocket_fill)
    data = {"withdrawn_ul": _ul(r.withdrawn_nl), "reservoir_ul": _ul(r.reservoir_nl), "pocket_fill": args.pocket_fill}
    text = _table(
        [("withdrawn", units.format_volume(r.withdrawn_nl)), ("reservoir now", units.format_volume(r.reservoir_nl))]
    )
    return Output(data, text + ("\n(injected into the pocket, not the reservoir)" if args.pocket_fill else ""))


def _sim_replace_catheter(c, args, _) -> Output:
    vol = c.replace_catheter(args.volume)
    return Output({"volume_ul": _ul(vol)}, f"catheter replaced with an empty one of {units.format_volume(vol)}")


if __name__ == "__main__":
    sys.exit(main())
