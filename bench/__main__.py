"""`python -m bench faults|load|memory|parse`: the fault run, the load benchmark, an idle stream's memory,
what parsing a publish costs."""

from __future__ import annotations

import argparse
import sys

from bench import faults, load, memory, parse


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("faults", help="kill Redis and a hub under load; check nothing is lost")
    run.add_argument("--size", choices=["small", "large"], default="large")
    run.add_argument("--no-aof", action="store_true", help="Redis without persistence: expect resets")
    run.add_argument(
        "--cluster", action="store_true", help="a Redis Cluster: primaries failed over, slots moved"
    )
    bench = commands.add_parser("load", help="the load benchmark: hub, ceiling and baseline servers")
    bench.add_argument("--scenarios", default="fanout,fanout-10k,latency,topics,idle,redis")
    bench.add_argument("--servers", default=",".join(load.SERVERS))
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    mem = commands.add_parser("memory", help="what each idle stream keeps alive in the hub")
    mem.add_argument("--subs", type=int, default=2000)
    mem.add_argument("--no-trace", action="store_true", help="RSS and objects only, without tracemalloc")
    commands.add_parser("parse", help="what parsing a publish and encoding its envelopes costs (no server)")
    args = parser.parse_args()
    if args.command == "load":
        unknown = set(args.scenarios.split(",")) - set(load.SCENARIOS)
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        return load.main(args.scenarios.split(","), args.servers.split(","), args.runs, args.write)
    if args.command == "memory":
        return memory.main(args.subs, trace=not args.no_trace)
    if args.command == "parse":
        return parse.main()
    if args.command == "faults":
        return faults.main(args.size, aof=not args.no_aof, cluster=args.cluster)
    return 2


if __name__ == "__main__":
    sys.exit(main())
