"""`python -m bench faults|load|connections|memory|parse|ttl|idem|idem-memory|churn-memory`: the fault run,
the load benchmark, 50,000 streams over hub workers and generator processes, an idle stream's memory, what
parsing a publish costs, what Redis keeps of one-off topics, what idempotency keys cost, and the same two
on the memory broker."""

from __future__ import annotations

import argparse
import sys

from bench import bounds, connections, drain_faults, faults, load, memory, parse, stall, topic_ttl


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("faults", help="kill Redis and a hub under load; check nothing is lost")
    run.add_argument("--size", choices=["small", "large"], default="large")
    run.add_argument("--no-aof", action="store_true", help="Redis without persistence: expect resets")
    run.add_argument(
        "--cluster", action="store_true", help="a Redis Cluster: primaries failed over, slots moved"
    )
    run.add_argument("--partitions", type=int, default=16, help="with --cluster: the hubs' redis.partitions")
    run.add_argument(
        "--one-node",
        action="store_true",
        help="with --cluster: one primary, no replica, killed and restarted",
    )
    run.add_argument(
        "--stall", action="store_true", help="the stall case: Redis SIGSTOPped past connect_timeout"
    )
    run.add_argument(
        "--drain", action="store_true", help="the drain case: a hub SIGTERMed in rounds, publishes in flight"
    )
    bench = commands.add_parser("load", help="the load benchmark: hub, ceiling, baseline and Nchan servers")
    bench.add_argument("--scenarios", default="fanout,fanout-10k,latency,topics,idle,redis")
    bench.add_argument("--servers", default=",".join(load.SERVERS))
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    bench.add_argument(
        "--before",
        metavar="PYTHON",
        help="also run the hub of another checkout, with this Python of its venv, as the server `before`",
    )
    conns = commands.add_parser(
        "connections", help="SSE streams over `hub serve --workers` on Redis; one event reaches them all"
    )
    conns.add_argument("--subs", type=int, default=50_000)
    conns.add_argument("--workers", type=int, default=4, help="hub processes sharing the port")
    conns.add_argument("--generators", type=int, default=4, help="load generator processes")
    conns.add_argument("--runs", type=int, default=1)
    conns.add_argument("--timeout", type=float, default=120.0, help="seconds to open, and to receive")
    mem = commands.add_parser("memory", help="what each idle stream keeps alive in the hub")
    mem.add_argument("--subs", type=int, default=2000)
    mem.add_argument("--no-trace", action="store_true", help="RSS and objects only, without tracemalloc")
    commands.add_parser("parse", help="what parsing a publish and encoding its envelopes costs (no server)")
    ttl = commands.add_parser(
        "ttl", help="one-off topics on Redis: the keys left before and after history.ttl"
    )
    ttl.add_argument("--topics", type=int, default=100_000)
    ttl.add_argument("--ttl", type=float, default=10.0)
    ttl.add_argument("--batch", type=int, default=100, help="events (each its own topic) per publish")
    ttl.add_argument("--no-tokens", action="store_true", help="do not wait for the publish tokens to expire")
    idem = commands.add_parser("idem", help="keyed publishes/s on Redis with 1k to 1M live idempotency keys")
    idem.add_argument("--levels", default="1000,10000,100000,1000000")
    idem.add_argument("--publishes", type=int, default=5000)
    idem.add_argument("--runs", type=int, default=5)
    idem.add_argument(
        "--cluster", action="store_true", help="a Redis Cluster: records in the broker's partitions"
    )
    idem_memory = commands.add_parser("idem-memory", help="memory broker: keyed publishes/s by live keys")
    idem_memory.add_argument("--levels", default=",".join(str(n) for n in bounds.LEVELS))
    churn = commands.add_parser("churn-memory", help="memory broker: RSS over rounds of one-off topics")
    churn.add_argument("--rounds", type=int, default=3)
    churn.add_argument("--topics", type=int, default=300_000)
    churn.add_argument("--ttl", type=float, default=1.0)
    churn.add_argument("--max-total-bytes", type=int, default=64 << 20)
    args = parser.parse_args()
    if args.command == "load":
        unknown = set(args.scenarios.split(",")) - set(load.SCENARIOS)
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        return load.main(
            args.scenarios.split(","), args.servers.split(","), args.runs, args.write, args.before
        )
    if args.command == "connections":
        return connections.main(args.subs, args.workers, args.generators, args.runs, args.timeout)
    if args.command == "memory":
        return memory.main(args.subs, trace=not args.no_trace)
    if args.command == "parse":
        return parse.main()
    if args.command == "ttl":
        return topic_ttl.main_ttl(args.topics, args.ttl, args.batch, wait_tokens=not args.no_tokens)
    if args.command == "idem":
        levels = [int(n) for n in args.levels.split(",")]
        return topic_ttl.main_idem(levels, args.publishes, args.runs, cluster=args.cluster)
    if args.command == "idem-memory":
        return bounds.idempotency(tuple(int(n) for n in args.levels.split(",")))
    if args.command == "churn-memory":
        return bounds.churn(args.rounds, args.topics, args.ttl, args.max_total_bytes)
    if args.command == "faults" and args.stall:
        return stall.main(args.size, cluster=args.cluster)
    if args.command == "faults" and args.drain:
        return drain_faults.main(args.size)
    if args.command == "faults":
        return faults.main(
            args.size,
            aof=not args.no_aof,
            cluster=args.cluster,
            partitions=args.partitions,
            one_node=args.one_node,
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
