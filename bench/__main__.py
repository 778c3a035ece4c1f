"""`python -m bench faults [--size small|large]`: the fault run, with its figures."""

from __future__ import annotations

import argparse
import sys

from bench import faults, load


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("faults", help="kill Redis and a hub under load; check nothing is lost")
    run.add_argument("--size", choices=["small", "large"], default="large")
    run.add_argument("--no-aof", action="store_true", help="Redis without persistence: expect resets")
    bench = commands.add_parser("load", help="the load benchmark: hub, ceiling and baseline servers")
    bench.add_argument("--scenarios", default="fanout,fanout-10k,latency,topics,idle,redis")
    bench.add_argument("--servers", default=",".join(load.SERVERS))
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    args = parser.parse_args()
    if args.command == "load":
        unknown = set(args.scenarios.split(",")) - set(load.SCENARIOS)
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        return load.main(args.scenarios.split(","), args.servers.split(","), args.runs, args.write)
    if args.command == "faults":
        return faults.main(args.size, aof=not args.no_aof)
    return 2


if __name__ == "__main__":
    sys.exit(main())
