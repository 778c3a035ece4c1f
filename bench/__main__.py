"""`python -m bench faults [--size small|large]`: the fault run, with its figures."""

from __future__ import annotations

import argparse
import sys

from bench import faults


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("faults", help="kill Redis and a hub under load; check nothing is lost")
    run.add_argument("--size", choices=["small", "large"], default="large")
    run.add_argument("--no-aof", action="store_true", help="Redis without persistence: expect resets")
    args = parser.parse_args()
    if args.command == "faults":
        return faults.main(args.size, aof=not args.no_aof)
    return 2


if __name__ == "__main__":
    sys.exit(main())
