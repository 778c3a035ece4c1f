"""`python -m bench idem-memory|churn-memory`: what the memory broker's bookkeeping costs as it fills up
(`idem` and `ttl` in bench/topic_ttl.py are the same questions on Redis).

- `idem-memory`: keyed publishes per second with 1k, 10k, 100k and 1M Idempotency-Keys live (a window
  long enough that none expires). Flat means the bookkeeping costs the same whatever it holds.
- `churn-memory`: rounds of one-off topics (300,000 a round, one event each, as `jobs/<n>` would be), with a
  small `history.ttl` and `history.max_total_bytes`: the process's RSS after each round. Flat means what
  a topic used once leaves behind is given back.

Both drive a `MemoryBroker` in this process, no HTTP: they measure the broker, not the server.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time

from bench.load import rss_kib
from hub.brokers.memory import MemoryBroker
from hub.config import HistoryConfig
from hub.wire.event import Draft
from hub.wire.idempotency import Idempotency

LEVELS = (1_000, 10_000, 100_000, 1_000_000)


async def _idempotency(levels: tuple[int, ...], runs: int, sample: int) -> None:
    broker = MemoryBroker(HistoryConfig(), idempotency_window=3600)
    live = 0

    async def keyed(count: int) -> float:
        nonlocal live
        started = time.perf_counter()
        for _ in range(count):
            live += 1
            await broker.publish([Draft(("bench/idem",), live)], Idempotency(f"key {live}", "f"))
        return count / (time.perf_counter() - started)

    print(f"{runs} runs of {sample} keyed publishes at each level, each with a new key")
    print(f"{'live keys':>10s} {'best/s':>9s} {'median/s':>9s}")
    for level in levels:
        await keyed(level - live)
        rates = [await keyed(sample) for _ in range(runs)]
        print(f"{level:>10,d} {max(rates):>9,.0f} {statistics.median(rates):>9,.0f}", flush=True)


async def _churn(rounds: int, topics: int, ttl: float, max_total_bytes: int) -> None:
    history = HistoryConfig(max_age=1, ttl=ttl, max_total_bytes=max_total_bytes)
    broker = MemoryBroker(history, idempotency_window=60)
    n = 0
    print(f"{topics:,d} one-off topics a round, ttl {ttl:g} s, max_total_bytes {max_total_bytes:,d}")
    print(f"{'round':>5s} {'seconds':>8s} {'topics held':>12s} {'RSS MiB':>8s}")
    gc.collect()
    print(f"{'start':>5s} {'':>8s} {0:>12,d} {rss_kib(os.getpid()) / 1024:>8.0f}")
    for round_ in range(1, rounds + 1):
        started = time.perf_counter()
        for _ in range(0, topics, 1000):
            await broker.publish(
                [Draft((f"jobs/{n + i}",), {"job": n + i, "state": "done"}) for i in range(1000)]
            )
            n += 1000
        await asyncio.sleep(ttl)  # what the round left is past its ttl: the next sweep drops it
        await broker.tick()
        gc.collect()
        took, rss = time.perf_counter() - started, rss_kib(os.getpid()) / 1024
        print(f"{round_:>5d} {took:>8.1f} {broker.topic_count:>12,d} {rss:>8.0f}", flush=True)


def idempotency(levels: tuple[int, ...] = LEVELS, runs: int = 5, sample: int = 1000) -> int:
    asyncio.run(_idempotency(levels, runs, sample))
    return 0


def churn(rounds: int = 3, topics: int = 300_000, ttl: float = 1.0, max_total_bytes: int = 64 << 20) -> int:
    asyncio.run(_churn(rounds, topics, ttl, max_total_bytes))
    return 0
