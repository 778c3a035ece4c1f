"""A rolling restart of two replicas behind nginx (Debian's, with the project's own config) while events
flow: each replica drains on SIGTERM (a short jittered `retry:`, streams closed, in-flight publishes
finished) and comes back; every subscriber must end with every acknowledged event, in order, none twice."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.processes import HubProcess
from hub.client import ClientError, HubClient
from hub.server import free_port

ROOT = Path(__file__).parent.parent.parent
SHUTDOWN_TIMEOUT = 5.0


@contextlib.contextmanager
def nginx_in_front(tmp_path: Path, upstream_ports: list[int]) -> Iterator[str]:
    """deploy/nginx/nginx.conf as it is, but for the port it listens on; our replicas as its upstream."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = (ROOT / "deploy/nginx/nginx.conf").read_text()
    assert conf.count("listen 80;") == 1
    (tmp_path / "nginx.conf").write_text(conf.replace("listen 80;", f"listen 127.0.0.1:{port};"))
    # deploy/nginx/hub-upstream.conf too, its servers' parameters kept: our replicas for compose's.
    upstream = (ROOT / "deploy/nginx/hub-upstream.conf").read_text()
    servers = re.findall(r"^\s*server\s+[\w.-]+:\d+", upstream, re.M)
    assert len(servers) == len(upstream_ports)
    for server, p in zip(servers, upstream_ports, strict=True):
        upstream = upstream.replace(server, server.split("server")[0] + f"server 127.0.0.1:{p}", 1)
    (tmp_path / "hub-upstream.conf").write_text(upstream)
    (tmp_path / "logs").mkdir()
    directives = f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/logs/error.log;"
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", directives],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
async def replicas(redis_server) -> AsyncIterator[list[HubProcess]]:
    # Async, so that the replicas stop before the event loop closes: the threads reading their output
    # end with them, and the loop's shutdown waits on those threads.
    env = {
        "HUB_REDIS_PREFIX": "roll" + uuid.uuid4().hex[:8],
        "HUB_SSE_RETRY": "400",  # clients come back within 100-400 ms of a drain
        "HUB_SSE_HEARTBEAT_INTERVAL": "1",
        "HUB_SERVER_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    procs = [HubProcess("--redis", redis_server.url, env=env) for _ in range(2)]
    yield procs
    for proc in procs:
        proc.stop()


async def test_rolling_restart_behind_nginx_loses_nothing_and_doubles_nothing(replicas, tmp_path):
    await asyncio.gather(*(r.ready() for r in replicas))
    with nginx_in_front(tmp_path, [r.port for r in replicas]) as url:
        async with HubClient(url, publish_retries=0) as client:
            received: list[list[str]] = [[] for _ in range(6)]
            subscriptions = [client.subscribe("roll/*", heartbeat_timeout=3) for _ in received]

            async def collect(subscription, into: list[str]) -> None:
                async for event in subscription:
                    assert event.event != "reset", "continuity was lost"
                    into.append(event.data)
                    if event.data == "end":
                        return

            # Open, and seen open, before the first publish: from then on nothing may be missed.
            readers = [
                asyncio.create_task(collect(s, r)) for s, r in zip(subscriptions, received, strict=True)
            ]
            await _wait_connected(subscriptions)
            acknowledged: list[str] = []
            stop = asyncio.Event()

            async def publish_until_stopped() -> None:
                n = 0
                while not stop.is_set():
                    data, key = f"e{n}", f"roll-{n}"
                    while True:  # through the restart: the same key until acknowledged
                        try:
                            await client.publish(f"roll/{n % 3}", data, idempotency_key=key)
                            break
                        except ClientError:
                            await asyncio.sleep(0.05)
                    acknowledged.append(data)
                    n += 1
                    await asyncio.sleep(0.01)

            publisher = asyncio.create_task(publish_until_stopped())
            await asyncio.sleep(0.5)
            for replica in replicas:
                started = time.monotonic()
                assert replica.stop() == 0  # SIGTERM: drains, exits 0...
                assert time.monotonic() - started < SHUTDOWN_TIMEOUT + 2  # ...within its timeout
                replica.start()
                await replica.ready()
                await asyncio.sleep(1.0)  # events flow through the restarted replica too
            stop.set()
            await publisher
            while True:
                try:
                    await client.publish("roll/end", "end", idempotency_key="roll-end")
                    break
                except ClientError:
                    await asyncio.sleep(0.05)
            _done, late = await asyncio.wait(readers, timeout=30)
            missing = [
                f"#{i}: {len(got)} events, last {got[-3:]}, {s.connections} connections, "
                f"{s.failures} failures in a row, {s.stalls} stalls"
                for i, (got, s, r) in enumerate(zip(received, subscriptions, readers, strict=True))
                if r in late
            ]
            for reader in late:
                reader.cancel()
            assert not missing, f"streams without the last event: {'; '.join(missing)}"
            for subscription in subscriptions:
                await subscription.aclose()
    assert len(acknowledged) > 100
    reconnected = sum(s.connections for s in subscriptions)
    assert reconnected > len(subscriptions)  # the restarts did move streams
    for got in received:
        assert got == [*acknowledged, "end"]


async def _wait_connected(subscriptions) -> None:
    async with asyncio.timeout(10):
        while not all(s.connections for s in subscriptions):
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the stream's first bytes, after which nothing it should get is missed


async def test_a_replica_back_from_its_restart_takes_requests_when_the_next_one_drains(replicas, tmp_path):
    """nginx counted a replica it could not reach as down for its default fail_timeout of 10 s, long
    after it was back: when the other replica drained next, every request was a 502 (no live
    upstreams) for seconds, and a subscriber backing off from them came back too late."""
    await asyncio.gather(*(r.ready() for r in replicas))
    first, second = replicas
    with nginx_in_front(tmp_path, [r.port for r in replicas]) as url:
        # A connection per request, so that every nginx worker finds the first replica gone.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def statuses(count: int) -> list[int]:
                got = []
                for n in range(count):
                    body = {"topic": "restart/x", "data": n}
                    async with session.post(url + "/publish", json=body) as resp:
                        got.append(resp.status)
                return got

            assert first.stop() == 0
            assert await statuses(8) == [200] * 8  # the other replica answers
            first.start()
            await first.ready()
            await asyncio.sleep(1.5)
            assert second.stop() == 0
            assert await statuses(8) == [200] * 8  # the first one, back, answers
