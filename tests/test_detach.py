"""Live streams handed over from aiohttp to the hub: still delivered, still cleaned up, still ended
cleanly; and nothing of aiohttp's per-request state kept for them."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

from tests.support.waiting import settled

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]


@contextlib.asynccontextmanager
async def _stream(port: int, topic: str, version: str = "1.1") -> AsyncIterator[Stream]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /events?topic={topic} HTTP/{version}\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b": broadcast-hub\n\n")
        yield reader, writer, head
    finally:
        writer.close()


async def _until_eof(reader: asyncio.StreamReader) -> bytes:
    data = b""
    async with asyncio.timeout(5):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def test_a_live_stream_keeps_no_request_handler_task_or_server_connection(hub):
    server = hub.running.runner.server
    assert server is not None
    async with contextlib.AsyncExitStack() as stack:
        # A first stream, so the broker is reading the topic before tasks are counted: a cluster broker
        # starts a task per cluster node it reads from, once, whatever the number of streams.
        streams = [await stack.enter_async_context(_stream(hub.running.port, "quiet"))]
        await settled(lambda: not server.connections)
        tasks_before = len(asyncio.all_tasks())
        streams += [await stack.enter_async_context(_stream(hub.running.port, "quiet")) for _ in range(5)]
        await settled(lambda: not server.connections and len(asyncio.all_tasks()) <= tasks_before)
        assert hub.fanout.connections == 6
        await hub.publish({"topic": "quiet", "data": "still here"})
        for reader, _, _ in streams:
            block = b""
            while b"data: still here" not in block:
                block += await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
    await settled(lambda: hub.fanout.connections == 0)
    assert not hub.fanout.selectors


async def test_a_stream_says_its_connection_closes_when_it_ends(hub):
    async with _stream(hub.running.port, "c") as (_, _, head):
        assert b"\r\nConnection: close\r\n" in head


async def test_a_client_half_closing_a_live_stream_is_unsubscribed(hub):
    async with _stream(hub.running.port, "half") as (reader, writer, _):
        assert hub.fanout.connections == 1
        writer.write_eof()
        await settled(lambda: hub.fanout.connections == 0)
        await _until_eof(reader)


async def test_shutdown_ends_a_live_stream_with_a_retry_block_and_the_last_chunk(hub):
    async with _stream(hub.running.port, "bye") as (reader, _, _):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await hub.running.stop()
        # no waiting on the shutdown timeout for streams aiohttp no longer knows of
        assert loop.time() - started < 5
        tail = await _until_eof(reader)
    assert re.search(rb"\r\n[0-9a-f]+\r\nretry: \d+\n\n\r\n0\r\n\r\n\Z", tail), tail


async def test_shutdown_ends_a_live_http_10_stream_with_a_retry_block_and_a_close(hub):
    async with _stream(hub.running.port, "old", version="1.0") as (reader, _, head):
        assert b"Transfer-Encoding" not in head
        await hub.running.stop()
        tail = await _until_eof(reader)
    assert re.search(rb"\n\nretry: \d+\n\n\Z", tail), tail
    assert b"\r\n" not in tail


async def test_a_broker_losing_events_ends_live_streams_cleanly_for_a_resync(hub):
    async with _stream(hub.running.port, "lost") as (reader, _, _):
        hub.fanout.on_lost("test")
        tail = await _until_eof(reader)
    assert tail.endswith(b"\r\nretry: 500\n\n\r\n0\r\n\r\n"), tail
    await settled(lambda: hub.fanout.connections == 0)
