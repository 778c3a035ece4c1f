"""Where an idle stream's memory goes: the hub in this process, the C load generator holding idle streams
against it, and the difference per connection in RSS, in live Python objects by type and in tracemalloc
allocations by line.

Not a benchmark (`python -m bench load --scenarios idle` is): the generator shares the hub's cores here,
so more connections are in flight at once and RSS, which keeps that peak, reads higher. What it is for
is finding what each connection keeps alive.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import tracemalloc
from pathlib import Path

import uvloop

from bench.load import build_loadgen, rss_kib
from hub import config as hub_config
from hub.http.server import start


def _live_types() -> collections.Counter[str]:
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


async def _measure(loadgen: Path, subs: int, trace: bool, frames: int, top: int) -> None:
    # Every subscriber comes from this one address: no per-address stream limit.
    overrides = {"server.port": 0, "limits.max_connections_per_ip": 0}
    running = await start(hub_config.build(overrides=overrides))
    try:
        await asyncio.sleep(0.2)
        gc.collect()
        if trace:
            tracemalloc.start(frames)
        before = tracemalloc.take_snapshot() if trace else None
        types_before = _live_types()
        rss_before = rss_kib(os.getpid())
        gen = await asyncio.create_subprocess_exec(
            str(loadgen), "--port", str(running.port), "--subs", str(subs), "--topics", "1",
            "--events", "0", "--hold", "5", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert gen.stdout is not None
        opened = json.loads(await gen.stdout.readline())["opened"]
        await asyncio.sleep(1.5)
        rss_after = rss_kib(os.getpid())
        gc.collect()
        after = tracemalloc.take_snapshot() if trace else None
        print(f"{opened} idle streams: {(rss_after - rss_before) / opened:.2f} KiB RSS per connection")
        print("\nlive objects per connection, by type:")
        for name, count in (_live_types() - types_before).most_common(top):
            if count >= opened / 2:
                print(f"  {count / opened:5.2f}  {name}")
        if before is not None and after is not None:
            stats = after.compare_to(before, "traceback")
            total = sum(s.size_diff for s in stats)
            print(f"\ntracemalloc: {total / opened:.0f} B per connection; by allocation site:")
            for stat in stats[:top]:
                if stat.size_diff / opened < 16:
                    continue
                where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(stat.traceback))
                print(f"  {stat.size_diff / opened:6.0f} B {stat.count_diff / opened:4.1f} blocks  {where}")
        await gen.wait()
    finally:
        await running.stop()


def main(subs: int, trace: bool, frames: int = 6, top: int = 40) -> int:
    uvloop.run(_measure(build_loadgen(), subs, trace, frames, top))
    return 0
