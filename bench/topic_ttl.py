"""`python -m bench ttl|idem`: what Redis keeps of one-off topics, and what idempotency keys cost.

`ttl`: one hub on one Redis with a short `history.ttl` (10 s); 100,000 events, each to a topic of its
own, a retained event every tenth, 100 to a request (all written within the ttl); the prefix's keys
counted by kind (SCAN), `DBSIZE` and Redis' memory before, right after, once the ttl and two sweeps have
passed, and once the publish tokens' own lifetime (120 s) has too. All but the counter must be gone.

`idem`: keyed publishes per second through the hub while Redis holds 1k, 10k, 100k and 1M live
idempotency records of the hub's exact key format (`<prefix>:idem:<32 hex>`, filled by a Lua loop): the
bookkeeping is a GET and a SET per publish, so the rate must stay flat. `--cluster`: the same on a Redis
Cluster of three primaries, where a key's records are `<prefix>:{<partition tag>}:idem:<32 hex>`, one in
each partition the publish writes to and one in the key's home partition, which a GET per partition reads
before the publish (`RedisClusterBroker._check_reuse`); the fill writes each key's records just there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp

from bench.load import (
    HUB_CORE,
    LOAD_CORE,
    free_port,
    process,
    redis_cluster,
    redis_server,
    server_cmd,
    wait_for_port,
)
from bench.processes import RespConnection
from hub.brokers.cluster.partitions import Partitions
from hub.brokers.script_args import PUBLISH_TOKEN_TTL
from hub.brokers.topic_ttl import sweep_interval
from hub.config import RedisConfig

PREFIX = "hub"
CONCURRENCY = 32
IDEM_TOPIC = "keyed"
# Writes the idempotency records numbered ARGV[2] to ARGV[3], by steps of ARGV[4], in one call:
# `<ARGV[1]>:idem:<32 hex digits>`, the first eight the number modulo ARGV[5] (a cluster's partitions, 1
# on one Redis), since a cluster broker takes a key's home partition from them.
FILL = """
local partitions = tonumber(ARGV[5])
for i = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]) do
  local name = string.format('%08x%024x', i % partitions, i)
  redis.call('SET', ARGV[1] .. ':idem:' .. name, 'f|x-1', 'EX', 3600)
end
return 1
"""


@contextlib.contextmanager
def hub_on(redis_url: str, env: dict[str, str]) -> Iterator[int]:
    """A hub process pinned to its core, on `redis_url`; this process (the publishing client) on the
    other, with Redis, as `bench load` places its generator."""
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    port = free_port()
    with process(*server_cmd("hub", port, redis_url), core=HUB_CORE, env=env):
        wait_for_port(port)
        time.sleep(0.3)
        yield port


@contextlib.contextmanager
def hub_on_redis(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """(hub port, Redis port): `hub_on` a fresh Redis."""
    with redis_server() as url, hub_on(url, env) as port:
        yield port, int(url.rsplit(":", 1)[1])


def key_kinds(redis_port: int) -> Counter[str]:
    kinds: Counter[str] = Counter()
    with RespConnection(redis_port, timeout=30) as conn:
        cursor = "0"
        while True:
            cursor, keys = conn.call("SCAN", cursor, "MATCH", f"{PREFIX}:*", "COUNT", 10_000)
            for key in keys:
                rest = key[len(PREFIX) + 1 :]
                per_topic_or_request = rest.startswith(("h:", "pub:", "idem:"))
                kinds[rest.split(":", 1)[0] + ":*" if per_topic_or_request else rest] += 1
            if cursor == "0":
                break
    return kinds


def report(label: str, redis_port: int) -> None:
    with RespConnection(redis_port, timeout=30) as conn:
        dbsize = conn.call("DBSIZE")
        info = str(conn.call("INFO", "memory"))
        members = {
            name: conn.call("ZCARD", f"{PREFIX}:{name}")
            for name in ("topics", "topics:names", "topics:marks")
        }
        retained = conn.call("HLEN", f"{PREFIX}:retained")
    memory = next(line.split(":")[1] for line in info.splitlines() if line.startswith("used_memory_human"))
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(key_kinds(redis_port).items()))
    registry = ", ".join(f"{name} {n:,}" for name, n in members.items())
    print(f"{label:<34} DBSIZE {dbsize:>7,}  memory {memory.strip():>8}  keys: {kinds or '-'}")
    print(f"{'':<34} members: {registry}, retained {retained:,}")


async def publish_all(port: int, bodies: Iterator[object], headers: Iterator[dict[str, str]]) -> float:
    """Publish every body (CONCURRENCY at a time); returns the seconds it took."""
    url = f"http://127.0.0.1:{port}/publish"
    lock = asyncio.Lock()

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            async with lock:
                body = next(bodies, None)
                head = next(headers)
            if body is None:
                return
            async with session.post(url, json=body, headers=head) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"publish answered {resp.status}: {await resp.text()}")
                await resp.read()

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        return time.perf_counter() - start


def main_ttl(topics: int, ttl: float, batch: int, wait_tokens: bool) -> int:
    with hub_on_redis({"HUB_HISTORY_TTL": str(ttl)}) as (port, redis_port):
        report("before", redis_port)
        bodies = (
            [
                {"topic": f"jobs/{i}", "data": i, "retain": i % 10 == 0}
                for i in range(n, min(n + batch, topics))
            ]
            for n in range(0, topics, batch)
        )
        took = asyncio.run(publish_all(port, bodies, itertools.repeat({})))
        rate = f"{topics / took:,.0f}/s"
        print(f"published {topics:,} one-off topics, {batch} a request, in {took:.1f} s ({rate})")
        report("right after", redis_port)
        wait = ttl + sweep_interval(ttl) * 2.4 + 1.0
        time.sleep(wait)
        report(f"{wait:.1f} s later (ttl {ttl:g} s)", redis_port)
        if wait_tokens:
            time.sleep(max(0.0, PUBLISH_TOKEN_TTL - wait + 1))
            report(f"{PUBLISH_TOKEN_TTL + 1} s later (publish tokens' own lifetime)", redis_port)
    return 0


def fill(redis_port: int, prefix: str, first: int, last: int, step: int = 1, partitions: int = 1) -> None:
    with RespConnection(redis_port, timeout=120) as conn:
        conn.call("EVAL", FILL, 0, prefix, first, last, step, partitions)


@dataclass(frozen=True)
class IdemSetup:
    hub_port: int
    redis_ports: list[int]  # every node that holds records
    fill: Callable[[int, int], None]  # writes the records of keys numbered from, to (inclusive)


@contextlib.contextmanager
def idem_on_redis() -> Iterator[IdemSetup]:
    with hub_on_redis({}) as (port, redis_port):
        yield IdemSetup(port, [redis_port], lambda first, last: fill(redis_port, PREFIX, first, last))


@contextlib.contextmanager
def idem_on_cluster() -> Iterator[IdemSetup]:
    parts = Partitions(RedisConfig().partitions, PREFIX)
    topic = parts.of_topic(IDEM_TOPIC)
    with redis_cluster() as cluster, hub_on(cluster.url, {}) as port:
        owners = [cluster.node_for_slot(slot).port for slot in parts.slots]

        def fill_cluster(first: int, last: int) -> None:
            # Where the broker writes a key's records for a publish to IDEM_TOPIC: every key in the
            # topic's partition, and each also in its home partition (the number modulo the count).
            for p in parts.all:
                start, step = (first, 1) if p == topic else (first + (p - first) % parts.count, parts.count)
                fill(owners[p], parts.keys[p].prefix, start, last, step, parts.count)

        yield IdemSetup(port, [node.port for node in cluster.primaries()], fill_cluster)


def redis_int(redis_port: int, *command: str) -> int:
    with RespConnection(redis_port) as conn:
        reply = conn.call(*command)
    assert isinstance(reply, int)
    return reply


def command_times(redis_ports: list[int]) -> dict[str, tuple[int, int]]:
    """Calls of the publish script (EVALSHA) and of GET (the scripts' own and, on a cluster, the broker's
    check of a key's records), with the microseconds Redis spent in them so far, on all these nodes."""
    times = dict.fromkeys(("evalsha", "get"), (0, 0))
    for port in redis_ports:
        with RespConnection(port) as conn:
            stats = str(conn.call("INFO", "commandstats"))
        for line in stats.splitlines():
            command, _, rest = line.removeprefix("cmdstat_").partition(":")
            if command in times:
                fields = dict(item.split("=") for item in rest.split(","))
                calls, usec = times[command]
                times[command] = calls + int(fields["calls"]), usec + int(fields["usec"])
    return times


def main_idem(levels: list[int], publishes: int, rounds: int, cluster: bool = False) -> int:
    where = "a Redis Cluster of three primaries" if cluster else "one Redis"
    with idem_on_cluster() if cluster else idem_on_redis() as setup:
        filled = 0
        keys = itertools.count()
        print(
            f"keyed publishes through the hub on {where}, {publishes:,} per run, {CONCURRENCY} concurrent,"
            f" {rounds} runs"
        )
        for level in levels:
            while filled < level:
                step = min(100_000, level - filled)
                setup.fill(10**12 + filled, 10**12 + filled + step - 1)
                filled += step
            dbsize = sum(redis_int(port, "DBSIZE") for port in setup.redis_ports)
            rates = []
            before = command_times(setup.redis_ports)
            for _ in range(rounds):
                bodies = ({"topic": IDEM_TOPIC, "data": i} for i in range(publishes))
                headers = ({"Idempotency-Key": f"bench-{next(keys)}"} for _ in itertools.count())
                took = asyncio.run(publish_all(setup.hub_port, bodies, headers))
                rates.append(publishes / took)
            spent = {
                command: (calls - before[command][0], usec - before[command][1])
                for command, (calls, usec) in command_times(setup.redis_ports).items()
            }
            redis_time = ", ".join(
                f"{usec / max(1, calls):.1f} us per {name} ({calls / (publishes * rounds):.2f} a publish)"
                for name, (calls, usec) in zip(("publish script", "GET"), spent.values(), strict=True)
            )
            print(
                f"{level:>9,} live keys (DBSIZE {dbsize:>9,}): best {max(rates):,.0f}, median"
                f" {statistics.median(rates):,.0f} publishes/s; Redis {redis_time}"
                f" (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
            )
    return 0
