"""`python -m bench ttl|idem`: what Redis keeps of one-off topics, and what idempotency keys cost.

`ttl`: one hub on one Redis with a short `history.ttl` (10 s); 100,000 events, each to a topic of its
own, a retained event every tenth, 100 to a request (all written within the ttl); the prefix's keys
counted by kind (SCAN), `DBSIZE` and Redis' memory before, right after, once the ttl and two sweeps have
passed, and once the publish tokens' own lifetime (120 s) has too. All but the counter must be gone.

`idem`: keyed publishes per second through the hub while Redis holds 1k, 10k, 100k and 1M live
idempotency records of the hub's exact key format (`<prefix>:idem:<32 hex>`, filled by a Lua loop): the
bookkeeping is a GET and a SET per publish, so the rate must stay flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator

import aiohttp

from bench.load import HUB_CORE, LOAD_CORE, free_port, process, redis_server, server_cmd, wait_for_port
from bench.processes import RespConnection
from hub.brokers.redis import PUBLISH_TOKEN_TTL
from hub.brokers.topic_ttl import sweep_interval

PREFIX = "hub"
CONCURRENCY = 32
# Fills `count` idempotency records from `start` in one call, each `<prefix>:idem:<32 hex digits>`.
FILL = """
for i = tonumber(ARGV[2]), tonumber(ARGV[2]) + tonumber(ARGV[3]) - 1 do
  redis.call('SET', ARGV[1] .. ':idem:' .. string.format('%032x', i), 'f|x-1', 'EX', 3600)
end
return 1
"""


@contextlib.contextmanager
def hub_on_redis(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """(hub port, Redis port): a hub process pinned to its core, on a fresh Redis; this process (the
    publishing client) on the other, with Redis, as `bench load` places its generator."""
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    with redis_server() as url:
        redis_port = int(url.rsplit(":", 1)[1])
        port = free_port()
        with process(*server_cmd("hub", port, url), core=HUB_CORE, env=env):
            wait_for_port(port)
            time.sleep(0.3)
            yield port, redis_port


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


def script_time(redis_port: int) -> tuple[int, int]:
    """Calls of the publish script (EVALSHA) and the microseconds Redis spent in them, so far."""
    with RespConnection(redis_port) as conn:
        stats = str(conn.call("INFO", "commandstats"))
    for line in stats.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            fields = dict(item.split("=") for item in line.split(":", 1)[1].split(","))
            return int(fields["calls"]), int(fields["usec"])
    return 0, 0


def main_idem(levels: list[int], publishes: int, rounds: int) -> int:
    with hub_on_redis({}) as (port, redis_port):
        filled = 0
        keys = itertools.count()
        print(
            f"keyed publishes through the hub, {publishes:,} per run, {CONCURRENCY} concurrent, {rounds} runs"
        )
        for level in levels:
            with RespConnection(redis_port, timeout=120) as conn:
                while filled < level:
                    step = min(100_000, level - filled)
                    conn.call("EVAL", FILL, 0, PREFIX, 10**12 + filled, step)
                    filled += step
                dbsize = conn.call("DBSIZE")
            rates = []
            calls0, usec0 = script_time(redis_port)
            for _ in range(rounds):
                bodies = ({"topic": "keyed", "data": i} for i in range(publishes))
                headers = ({"Idempotency-Key": f"bench-{next(keys)}"} for _ in itertools.count())
                took = asyncio.run(publish_all(port, bodies, headers))
                rates.append(publishes / took)
            calls, usec = script_time(redis_port)
            per_call = (usec - usec0) / max(1, calls - calls0)
            print(
                f"{level:>9,} live keys (DBSIZE {dbsize:>9,}): best {max(rates):,.0f}, median"
                f" {statistics.median(rates):,.0f} publishes/s; Redis {per_call:.1f} us per publish script"
                f" (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
            )
    return 0
