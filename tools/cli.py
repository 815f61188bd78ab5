"""The `thecal` command line. Exit status: 0 done, 2 usage error, 3 refused by the pump,
4 no answer or device lost (the contract of issue 6; commands arrive with their issues)."""

from __future__ import annotations

import argparse
import json
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

    bench = sub.add_parser("bench", help="benchmarks; print JSON")
    bench.add_argument("what", choices=["codec"], help="what to measure")
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

        result = run_bench(args.what, seconds=args.seconds, repeats=args.repeats)
        print(json.dumps(result, indent=None if args.json else 2))
        return EXIT_OK
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(as_json=args.json)
    if args.command == "spec":
        from protocol.spec import main as spec_main

        return spec_main(write=args.write, check=args.check)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces choices


if __name__ == "__main__":
    sys.exit(main())
