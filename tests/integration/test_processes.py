"""Real `hub serve` processes: what a user runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest

from bench.processes import HubProcess
from tests.support.sse_reader import SseStream


@pytest.fixture
def processes() -> Iterator[list[HubProcess]]:
    started: list[HubProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def test_event_published_to_one_process_reaches_subscribers_of_the_other(processes, redis_server):
    for _ in range(2):
        processes.append(HubProcess("--redis", redis_server.url, env={"HUB_REDIS_PREFIX": "procs"}))
    await asyncio.gather(*(p.ready() for p in processes))
    one, two = processes
    async with (
        aiohttp.ClientSession() as session,
        session.get(two.url + "/events", params={"topic": "orders/*"}) as r2,
        session.get(one.url + "/events", params={"topic": "orders/*"}) as r1,
    ):
        streams = [SseStream(r1), SseStream(r2)]
        for stream in streams:
            await stream.until_comment()
        ids = []
        for i in range(20):
            async with session.post(
                one.url + "/publish", json={"topic": f"orders/{i}", "data": {"n": i}}
            ) as resp:
                assert resp.status == 200
                ids.append((await resp.json())["id"])
        for stream in streams:
            got = await stream.take(20)
            assert [e.id for e in got] == ids
            assert [e.data for e in got] == [f'{{"n":{i}}}' for i in range(20)]
    for proc in processes:
        assert proc.stop() == 0


async def test_memory_broker_serves_with_no_arguments_and_stops_on_sigterm(processes):
    proc = HubProcess()
    processes.append(proc)
    await proc.ready()
    assert b"broker: memory" in proc.output
    async with aiohttp.ClientSession() as session, session.get(proc.url + "/healthz") as resp:
        assert resp.status == 200
    assert proc.stop() == 0


def test_bad_config_stops_startup_naming_the_key():
    result = subprocess.run(
        [sys.executable, "-m", "hub", "serve"],
        env={**os.environ, "HUB_SSE_MAX_BUFFER": "lots"},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"sse.max_buffer" in result.stderr


def test_hub_bench_outside_a_checkout_says_where_to_run_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hub", "bench"], cwd=tmp_path, capture_output=True, timeout=30
    )
    assert result.returncode == 2
    assert b"checkout" in result.stderr
