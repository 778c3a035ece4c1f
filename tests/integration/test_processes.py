"""Real `hub serve` processes: what a user runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys

import aiohttp
import pytest

from bench.processes import HubProcess
from tests.support.sse_reader import SseStream


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


SECRET = "a-development-secret-of-32-bytes!"


def run_hub(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env={**os.environ, **env}, capture_output=True, timeout=30
    )


async def test_hub_token_mints_what_a_secured_hub_accepts(processes):
    minted = run_hub(
        "token", "--publish", "news/**", "--subscribe", "news/*", "--ttl", "60", HUB_AUTH_JWT_SECRET=SECRET
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.decode().strip()
    proc = HubProcess(env={"HUB_AUTH_JWT_SECRET": SECRET})
    processes.append(proc)
    await proc.ready()
    async with aiohttp.ClientSession() as session:
        async with session.get(proc.url + "/events", params={"topic": "news/eu", "token": token}) as resp:
            assert resp.status == 200
            stream = SseStream(resp)
            await stream.until_comment()
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(proc.url + "/publish", json={"topic": "news/eu"}, headers=headers) as pub:
                assert pub.status == 200
                doc = await pub.json()
            assert (await stream.next_event()).id == doc["id"]
        async with session.get(proc.url + "/events", params={"topic": "sports"}, headers=headers) as resp:
            assert resp.status == 403
    assert proc.stop() == 0  # here, not in the fixture: the output reader thread ends with the process
    assert token not in proc.output.decode()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["token", "--publish", "a b"], {"HUB_AUTH_JWT_SECRET": SECRET}, b"whitespace"),
        (["token", "--publish", "a"], {}, b"auth.jwt_secret"),
        (["token", "--secret", "short"], {}, b"32 bytes"),
        (["serve"], {"HUB_AUTH_JWT_PUBLIC_KEY": "/nonexistent.pem"}, b"auth.jwt_public_key"),
        (["serve"], {"HUB_AUTH_JWT_SECRET": "short"}, b"auth.jwt_secret"),
        (
            ["serve"],
            {"HUB_CORS_ORIGINS": "*", "HUB_CORS_ALLOW_CREDENTIALS": "true"},
            b"cors.allow_credentials",
        ),
    ],
)
def test_bad_security_settings_are_refused_naming_the_key(args, env, message):
    result = run_hub(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr


async def test_logs_are_json_lines_off_a_terminal_with_one_line_per_stream_not_per_event(processes):
    proc = HubProcess("--log-level", "debug")
    processes.append(proc)
    await proc.ready()
    async with (
        aiohttp.ClientSession() as session,
        session.get(proc.url + "/events", params={"topic": "logs", "token": "s3cr3t"}) as resp,
    ):
        stream = SseStream(resp)
        await stream.until_comment()
        for i in range(20):
            async with session.post(proc.url + "/publish", json={"topic": "logs", "data": i}) as pub:
                assert pub.status == 200
        await stream.take(20)
    assert proc.stop() == 0
    lines = [line for line in proc.output.decode().splitlines() if line and not line.startswith("---")]
    docs = [json.loads(line) for line in lines]  # every line: one JSON object
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    messages = [d["message"] for d in docs]
    assert any(m.startswith("hub ready on") for m in messages)
    assert len([m for m in messages if m.startswith("stream open")]) == 1
    assert len([m for m in messages if m.startswith("stream closed")]) == 1
    assert "s3cr3t" not in proc.output.decode()
    assert len(lines) < 20  # nothing per event


async def test_workers_share_one_port_and_every_worker_delivers(processes, redis_server):
    proc = HubProcess("--workers", "2", "--redis", redis_server.url, env={"HUB_REDIS_PREFIX": "workers"})
    processes.append(proc)
    await proc.ready()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as stats_session:

        async def per_worker() -> dict[str, int]:
            """Open streams per worker: each request on a new connection, which the kernel hands
            to either worker."""
            seen: dict[str, int] = {}
            for _ in range(40):
                async with stats_session.get(proc.url + "/stats") as resp:
                    doc = await resp.json()
                    seen[doc["instance"]] = doc["connections"]
            return seen

        async with asyncio.timeout(15):
            while len(await per_worker()) < 2:  # the second worker may still be starting
                await asyncio.sleep(0.2)
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            streams = []
            for _ in range(20):
                resp = await stack.enter_async_context(
                    session.get(proc.url + "/events", params={"topic": "w"})
                )
                stream = SseStream(resp)
                await stream.until_comment()
                streams.append(stream)
            counts = await per_worker()
            assert len(counts) == 2
            assert all(n > 0 for n in counts.values()), counts  # both workers hold streams...
            assert sum(counts.values()) == 20
            async with session.post(proc.url + "/publish", json={"topic": "w", "data": "to all"}) as pub:
                doc = await pub.json()
            for stream in streams:  # ...and an event published to one reaches those of the other
                assert (await stream.next_event()).id == doc["id"]
    assert proc.stop() == 0


async def test_a_hub_sharing_its_core_with_a_busy_process_notices_it_is_starved(processes):
    proc = HubProcess(env={"HUB_LIMITS_MAX_CONNECTIONS_PER_IP": "0"})  # 1,500 streams from one address
    processes.append(proc)
    await proc.ready()
    assert proc.proc is not None
    hog = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    cores = os.sched_getaffinity(0)
    try:
        for pid in (proc.proc.pid, hog.pid):
            os.sched_setaffinity(pid, {0})
        if cores - {0}:
            os.sched_setaffinity(0, cores - {0})  # this test's own client stays off the hub's core
        # Streams left unread: what the hub writes waits in the kernel's buffers, a few kB each. Enough
        # of them that a round of writes outlasts the scheduler's slice: with 300 (rounds of about 3 ms),
        # the hub got through whole rounds unpreempted in a quarter of the runs, and read about 0.
        conns += [await asyncio.open_connection("127.0.0.1", proc.port) for _ in range(1500)]
        for _, writer in conns:
            writer.write(b"GET /events?topic=cpu HTTP/1.1\r\nHost: hub\r\n\r\n")
        async with aiohttp.ClientSession() as session:

            async def stats() -> dict:
                async with session.get(proc.url + "/stats") as resp:
                    return await resp.json()

            async with asyncio.timeout(20):
                while (await stats())["connections"] < len(conns):
                    await asyncio.sleep(0.05)
            for i in range(300):
                async with session.post(proc.url + "/publish", json={"topic": "cpu", "data": i}) as resp:
                    assert resp.status == 200
            starved = (await stats())["cpu_starved"]
        # The hog holds the core about half of the time; alone there, the hub reads about 0.
        assert starved > 0.15, starved
    finally:
        os.sched_setaffinity(0, cores)
        hog.kill()
        await hog.wait()
        for _, writer in conns:
            writer.close()
    assert proc.stop() == 0
