"""`hub publish`, `hub subscribe` and hub.client against real `hub serve` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import pytest

from bench.processes import HubProcess
from hub.client import HubClient
from hub.http.auth import mint
from hub.http.server import free_port
from tests.test_client import listening, take

SECRET = "a-development-secret-of-32-bytes!"


async def hub_cli(*args: str, stdin: bytes = b"", **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def cli_subscriber(*args: str, **env: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        "subscribe",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def next_line(proc: asyncio.subprocess.Process, timeout: float = 15) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "hub subscribe ended"
    return line.decode().rstrip("\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_subscribe_prints_events_live_resumes_with_since_and_stops_cleanly(processes, sig):
    proc = HubProcess()
    processes.append(proc)
    await proc.ready()
    env = {"HUB_URL": proc.url}
    code, first, err = await hub_cli("publish", "news/eu", "first", **env)
    assert code == 0, err
    first = first.strip()
    async with cli_subscriber("news/*", "--since", first, **env) as sub:
        # Published after the subscriber started: it gets it live or, if not connected yet, replayed.
        code, second, _ = await hub_cli(
            "publish", "news/eu", "-", "--event", "note", stdin=b"two\nlines", **env
        )
        assert code == 0
        assert await next_line(sub) == f"{second.strip()} note two\\nlines"
        # Connected by now: this one can only come live.
        code, third, _ = await hub_cli("publish", "news/us", '{"n": 3}', "--json", **env)
        assert code == 0
        assert await next_line(sub) == f'{third.strip()} message {{"n":3}}'
        # Bytes from stdin, as they are: printed base64, marked.
        code, fourth, _ = await hub_cli("publish", "news/eu", "-", "--binary", stdin=b"\x00\xffz", **env)
        assert code == 0
        assert await next_line(sub) == f"{fourth.strip()} binary \\base64:AP96"
        sub.send_signal(sig)
        assert await asyncio.wait_for(sub.wait(), 15) == 0
    async with cli_subscriber("news/*", "--since", "earliest", "--json", **env) as sub:
        lines = [await next_line(sub) for _ in range(4)]
        sub.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(sub.wait(), 15) == 0
    assert lines[0] == f'{{"id":"{first}","event":"message","data":"first"}}'
    assert lines[3] == f'{{"id":"{fourth.strip()}","event":"binary","data":"AP96","encoding":"base64"}}'
    assert proc.stop() == 0


async def test_cli_refusals_exit_2_with_the_hubs_message_and_trouble_exits_1(processes):
    proc = HubProcess(env={"HUB_AUTH_JWT_SECRET": SECRET})
    processes.append(proc)
    await proc.ready()
    token = mint(publish=["a/*"], subscribe=["a/*"], ttl=60, secret=SECRET)
    env = {"HUB_URL": proc.url, "HUB_TOKEN": token}
    code, out, err = await hub_cli("publish", "b/1", "x", **env)
    assert (code, out) == (2, "")
    assert "does not allow publishing to 'b/1'" in err
    code, _, err = await hub_cli("subscribe", "b/*", "--url", proc.url, "--token", token)
    assert code == 2
    assert "403" in err
    code, _, err = await hub_cli("publish", "a/1", "{not json", "--json", **env)
    assert code == 2
    assert "JSON" in err
    code, out, _ = await hub_cli("publish", "a/1", "ok", "--retain", **env)
    assert code == 0
    assert out.strip()
    code, _, err = await hub_cli(
        "publish", "a/1", "x", "--url", f"http://127.0.0.1:{free_port()}", "--retry-for", "0.5"
    )
    assert code == 1
    assert "cannot publish" in err
    assert "--idempotency-key " in err  # its own key: a second run with it publishes the event once
    assert proc.stop() == 0


async def test_client_resume_is_gapless_across_a_hub_process_restart_on_redis(processes, redis_server):
    proc = HubProcess(
        "--redis", redis_server.url, env={"HUB_REDIS_PREFIX": "restart", "HUB_SSE_RETRY": "300"}
    )
    processes.append(proc)
    await proc.ready()
    async with HubClient(proc.url) as client, listening(client.subscribe("r/*")) as events:
        before = await client.publish("r/1", "before")
        assert [e.id for e in await take(events, 1)] == [before]
        proc.stop()
        # Published through another process while the client's hub is down: it must miss none of them.
        other = HubProcess("--redis", redis_server.url, env={"HUB_REDIS_PREFIX": "restart"})
        processes.append(other)
        await other.ready()
        async with HubClient(other.url) as publisher:
            away = [await publisher.publish(f"r/{i}", i) for i in range(10)]
        proc.start()
        await proc.ready()
        got = await take(events, 10, timeout=30)
        assert [e.id for e in got] == away
        after = await client.publish("r/x", "after")
        assert [e.id for e in await take(events, 1)] == [after]
        assert events.empty()
    assert proc.stop() == 0
    assert other.stop() == 0


async def test_client_notices_a_stalled_broker_path_by_the_missing_heartbeat(processes, redis_factory):
    redis = redis_factory()
    interval = 0.5
    proc = HubProcess(
        "--redis",
        redis.url,
        env={"HUB_SSE_HEARTBEAT_INTERVAL": str(interval), "HUB_SSE_RETRY": "100"},
    )
    processes.append(proc)
    await proc.ready()
    assert redis.proc is not None
    async with HubClient(proc.url) as client:
        sub = client.subscribe("h", heartbeat_timeout=2 * interval)
        async with listening(sub) as events:
            await asyncio.sleep(4 * interval)
            assert sub.connections == 1  # heartbeats keep a healthy stream alive
            os.kill(redis.proc.pid, signal.SIGSTOP)  # the broker hangs: ticks stop, the socket stays open
            try:
                stalled = time.monotonic()
                async with asyncio.timeout(10):
                    while sub.stalls == 0:
                        await asyncio.sleep(0.02)
                noticed = time.monotonic() - stalled
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)
            # Recovered: a fresh stream, and events flow again.
            async with asyncio.timeout(30):
                while sub.connections < 2:
                    await asyncio.sleep(0.05)
            id_ = await client.publish("h", "back")
            assert [e.id for e in await take(events, 1, timeout=15)] == [id_]
    # Within two intervals of the last heartbeat, so within three of the stall; slack for a busy machine.
    assert noticed < 3 * interval + 1.0
    assert sub.stalls >= 1
    assert proc.stop() == 0
