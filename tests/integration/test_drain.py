"""SIGTERM on real `hub serve` processes: requests under way are answered, connections close at once,
and the process exits without waiting for `server.shutdown_timeout` (hub/http/drain.py)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest

from bench.processes import HubProcess
from tests.support.raw_stream import parse_head

SHUTDOWN_TIMEOUT = 3.0
# Well under SHUTDOWN_TIMEOUT: what a drain with nothing left to wait for takes, on a noisy machine.
PROMPT = 1.5
BODY = b'{"topic":"drain/t","data":"x"}'


def publish_head(length: int = len(BODY)) -> bytes:
    return (
        b"POST /publish HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


async def hub_serve(processes: list[HubProcess], *args: str, **env: str) -> HubProcess:
    proc = HubProcess(*args, env={"HUB_SERVER_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT), **env})
    processes.append(proc)
    await proc.ready()
    return proc


async def sigterm(proc: HubProcess) -> float:
    """Send SIGTERM, and wait until the hub says it is stopping: from then on it drains. Returns when
    the signal was sent (monotonic)."""
    assert proc.proc is not None
    sent = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(5):
        while b"hub stopping" not in proc.output:
            await asyncio.sleep(0.002)
    return sent


async def exited(proc: HubProcess) -> int:
    assert proc.proc is not None
    return await asyncio.to_thread(proc.proc.wait, SHUTDOWN_TIMEOUT + 5)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length; status 0 if the connection closed without one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0, {}, b""
    status, headers = parse_head(head)
    return status, headers, await reader.readexactly(int(headers["content-length"]))


async def publish_with_body_after_sigterm(proc: HubProcess) -> tuple[float, float]:
    """The headers of a publish, then SIGTERM, then (once the hub drains) its body: the publish must be
    answered 200, with `Connection: close`. An idle keep-alive connection must be closed meanwhile.
    Returns (seconds to the answer, seconds to the exit) from the signal."""
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", proc.port)
    idle_writer.write(publish_head() + BODY)
    assert (await read_answer(idle_reader))[0] == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    try:
        writer.write(publish_head())
        await writer.drain()
        sent = await sigterm(proc)
        writer.write(BODY)
        async with asyncio.timeout(SHUTDOWN_TIMEOUT + 5):
            status, headers, body = await read_answer(reader)
            answered = time.monotonic() - sent
            assert await idle_reader.read() == b""  # the idle connection was closed
            assert await exited(proc) == 0
    finally:
        writer.close()
        idle_writer.close()
    assert status == 200, (status, body)
    assert "id" in json.loads(body)
    assert headers.get("connection") == "close"
    return answered, time.monotonic() - sent


@pytest.fixture
async def processes() -> AsyncIterator[list[HubProcess]]:
    started: list[HubProcess] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_a_publish_whose_body_comes_after_sigterm_is_answered_and_the_hub_exits_at_once(
    processes, broker, request
):
    """It waited for `shutdown_timeout` (10 s by default) and was then cut off unanswered: aiohttp's own
    shutdown drops what arrives on a connection once it starts."""
    args = ("--redis", request.getfixturevalue("redis_server").url) if broker == "redis" else ()
    hubs = await asyncio.gather(*(hub_serve(processes, *args, HUB_REDIS_PREFIX="drain") for _ in range(3)))
    for answered, exit_after in await asyncio.gather(*map(publish_with_body_after_sigterm, hubs)):
        assert answered < PROMPT, f"answered {answered:.2f} s after SIGTERM"
        assert exit_after < PROMPT, f"exited {exit_after:.2f} s after SIGTERM"


async def test_publishes_sent_just_before_sigterm_are_all_answered(processes):
    """Publishes that reached the hub before the signal, on new connections not yet accepted and on
    kept-alive ones, while its loop was busy (SIGSTOP holds it): each is answered, never reset. The new
    connections were reset: closing the listening socket resets what the kernel accepted for it."""
    proc = await hub_serve(processes)
    assert proc.proc is not None
    kept = [await asyncio.open_connection("127.0.0.1", proc.port) for _ in range(10)]
    for reader, writer in kept:
        writer.write(publish_head() + BODY)
        assert (await read_answer(reader))[0] == 200
    proc.proc.send_signal(signal.SIGSTOP)
    try:
        new = [await asyncio.open_connection("127.0.0.1", proc.port) for _ in range(10)]
        for _, writer in kept + new:
            writer.write(publish_head() + BODY)
            await writer.drain()
        proc.proc.send_signal(signal.SIGTERM)
    finally:
        proc.proc.send_signal(signal.SIGCONT)
    answers = await asyncio.gather(*(read_answer(reader) for reader, _ in kept + new))
    assert await exited(proc) == 0
    for _, writer in kept + new:
        writer.close()
    assert [status for status, _, _ in answers] == [200] * 20


async def test_a_connection_made_before_sigterm_is_given_time_to_send_its_first_request(processes):
    """A client connected a moment before the signal and sends its request a few milliseconds later (a
    thread of it kept from the CPU): it was closed as idle 5-10 ms into the drain, and the request it
    sent then was reset, which nginx may not send again (a progress report: a 502). A kept-alive
    connection that has been answered is still closed at once."""
    proc = await hub_serve(processes)
    kept_reader, kept_writer = await asyncio.open_connection("127.0.0.1", proc.port)
    kept_writer.write(publish_head() + BODY)
    assert (await read_answer(kept_reader))[0] == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    try:
        sent = await sigterm(proc)
        async with asyncio.timeout(PROMPT):
            assert await kept_reader.read() == b""  # answered before: closed at once
        await asyncio.sleep(0.05 - (time.monotonic() - sent))
        writer.write(publish_head() + BODY)
        async with asyncio.timeout(SHUTDOWN_TIMEOUT + 5):
            status, headers, _ = await read_answer(reader)
            assert await exited(proc) == 0
    finally:
        writer.close()
        kept_writer.close()
    assert (status, headers.get("connection")) == (200, "close")


async def test_every_stream_of_a_draining_hub_gets_its_own_retry_within_the_window(processes):
    """One `retry:` was drawn per shutdown, so every client of a draining replica came back at once."""
    proc = await hub_serve(processes, HUB_SSE_SHUTDOWN_RETRY_WINDOW="2000")
    streams = []
    for n in range(24):
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        query = urlencode({"topic": f"drain/{n}"})
        writer.write(f"GET /events?{query} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
        await reader.readuntil(b": broadcast-hub\n\n")
        streams.append((reader, writer))
    await sigterm(proc)
    tails = await asyncio.gather(*(reader.read() for reader, _ in streams))
    assert await exited(proc) == 0
    retries = []
    for tail in tails:
        found = re.findall(rb"retry: (\d+)\n\n", tail)
        assert len(found) == 1, tail
        retries.append(int(found[0]))
    assert all(0 <= retry <= 2000 for retry in retries), retries
    # 24 draws from 2001 values: a few may meet, not most.
    assert len(set(retries)) >= 18, retries
    assert max(retries) - min(retries) >= 1000, retries
    for _, writer in streams:
        writer.close()


async def _streamed_publish(
    proc: HubProcess, topic: str, pieces: asyncio.Queue[bytes | None]
) -> tuple[int, dict[str, Any], float]:
    """POST /publish/stream, sending each piece the queue gives (None: stop sending, but keep the
    connection). Returns the status, the JSON answer, and when it came (monotonic)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(
        f"POST /publish/stream?topic={topic} HTTP/1.1\r\nHost: hub\r\nContent-Type: text/plain\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    answer = asyncio.ensure_future(read_answer(reader))
    while not answer.done() and (piece := await pieces.get()) is not None:
        writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
    status, _, body = await answer
    writer.close()
    return status, json.loads(body) if body else {}, time.monotonic()


async def test_streamed_publishes_at_sigterm_are_answered_and_hold_the_drain_only_while_sending(processes):
    """A streamed publish that keeps sending is relayed until shortly before `shutdown_timeout`, then
    told how far it was published (a 408: a 503 would say that nothing was); one that stalls is answered
    once it has been silent for a second, a 503 if nothing of it was published. All were cut off
    unanswered at `shutdown_timeout`."""
    proc = await hub_serve(processes)
    sending: asyncio.Queue[bytes | None] = asyncio.Queue()
    stalled: asyncio.Queue[bytes | None] = asyncio.Queue()
    silent: asyncio.Queue[bytes | None] = asyncio.Queue()
    silent.put_nowait(None)
    busy = asyncio.ensure_future(_streamed_publish(proc, "drain/busy", sending))
    quiet = asyncio.ensure_future(_streamed_publish(proc, "drain/quiet", stalled))
    empty = asyncio.ensure_future(_streamed_publish(proc, "drain/empty", silent))
    for n in range(3):
        sending.put_nowait(b"token %d" % n)
        stalled.put_nowait(b"token %d" % n)
    stalled.put_nowait(None)
    await asyncio.sleep(0.2)  # the pieces are relayed
    sent = await sigterm(proc)

    async def keep_sending() -> None:
        n = 3
        while not busy.done():
            sending.put_nowait(b"token %d" % n)
            n += 1
            await asyncio.sleep(0.05)

    feeder = asyncio.ensure_future(keep_sending())
    (
        (quiet_status, quiet_answer, quiet_at),
        (busy_status, busy_answer, busy_at),
        (empty_status, empty_answer, _),
    ) = await asyncio.gather(quiet, busy, empty)
    sending.put_nowait(None)
    await feeder
    assert await exited(proc) == 0
    exit_after = time.monotonic() - sent

    assert empty_status == 503, empty_answer
    assert empty_answer == {"error": {"code": "shutting_down", "message": empty_answer["error"]["message"]}}

    assert quiet_status == 408, quiet_answer
    assert quiet_answer["error"]["code"] == "shutting_down"
    assert quiet_answer["events"] >= 1  # pieces sent together may be read as one
    assert 0.9 < quiet_at - sent < 2.0, quiet_at - sent  # once silent for a second, not at the end

    assert busy_status == 408, busy_answer
    assert busy_answer["error"]["code"] == "shutting_down"
    assert busy_answer["events"] > 20
    assert isinstance(busy_answer["last_id"], str)
    assert SHUTDOWN_TIMEOUT - 1.5 < busy_at - sent < SHUTDOWN_TIMEOUT, busy_at - sent
    assert exit_after < SHUTDOWN_TIMEOUT + 0.5, exit_after
