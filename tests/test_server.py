"""The serving process itself, as `hub serve` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import subprocess
import sys

from hub.config import load
from hub.http.server import GC_THRESHOLDS, free_port, serve
from tests.support.waiting import settled


async def test_a_serving_process_keeps_its_start_up_out_of_the_collectors_passes():
    thresholds = gc.get_threshold()
    gc.unfreeze()
    config = load(None, {}, {"server.port": free_port()})
    server = asyncio.create_task(serve(config))
    try:
        await settled(lambda: gc.get_freeze_count() > 0)
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def read_until(stream: asyncio.StreamReader, wanted: bytes, seconds: float) -> bytes:
    """What a process wrote until a line holding `wanted`, or everything it wrote within `seconds`."""
    seen = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while wanted not in seen:
                line = await stream.readline()
                if not line:
                    break
                seen += line
    return seen


async def test_a_hub_without_its_redis_warns_at_each_retry_and_says_ready_only_once_it_is(redis_factory):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "hub", "serve", "--port", str(free_port())),
        *("--redis", f"redis://alice:hunter2@127.0.0.1:{port}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        before = await read_until(proc.stdout, b"broker not reachable yet", 20)
        before += await read_until(proc.stdout, b"\n", 1)  # a retry after it
        redis_factory("--user", "alice", "on", ">hunter2", "~*", "&*", "+@all", port=port)
        after = await read_until(proc.stdout, b"hub ready on", 20)
    finally:
        proc.terminate()
        await proc.wait()
    assert b"hub ready" not in before
    retries = [line for line in before.splitlines() if b"not reachable: " in line]
    assert len(retries) >= 2
    assert all(b"retrying in " in line and b"redis://***@127.0.0.1" in line for line in retries)
    assert b"hub ready on" in after
    assert b"hunter2" not in before + after


def test_a_busy_port_stops_start_up_with_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hub", "serve", "--port", str(port)], capture_output=True, timeout=30
        )
    assert result.returncode == 2
    assert result.stdout == b""
    line = f"hub: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert result.stderr.decode().splitlines() == [line]
