"""Connections aiohttp holds, over real sockets: header and idle timeouts, the connection limits, and
what aiohttp answers and logs for requests it cannot parse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from hub.http.connections import SERVER_NAME, descriptor_budget
from hub.http.limits import budget_for
from hub.http.server import free_port
from tests.support.waiting import settled

HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture
def broker_kind() -> str:
    return "memory"  # the server's edge, the same on every broker


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (everything it sent is read and dropped)."""
    started = time.monotonic()
    async with asyncio.timeout(limit):
        while await reader.read(65536):
            pass
    return time.monotonic() - started


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head


async def healthz(port: int) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as resp,
    ):
        return resp.status


async def test_a_half_sent_request_is_closed_within_the_header_timeout(hub_factory):
    hub = await hub_factory(server__header_timeout=0.5)
    async with raw(hub.running.port) as (reader, writer):
        writer.write(HALF_REQUEST)
        assert await closed_after(reader, 5) < 3


async def test_a_silent_connection_is_closed_within_the_header_timeout(hub_factory):
    hub = await hub_factory(server__header_timeout=0.5)
    async with raw(hub.running.port) as (reader, _):
        assert await closed_after(reader, 5) < 3


async def test_the_next_request_on_a_kept_alive_connection_has_the_header_timeout_too(hub_factory):
    hub = await hub_factory(server__header_timeout=0.5, server__idle_timeout=30)
    async with raw(hub.running.port) as (reader, writer):
        writer.write(HALF_REQUEST + b"\r\n")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1)  # idle longer than the header timeout: the idle timeout's business, not its
        writer.write(HALF_REQUEST + b"\r\n")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        writer.write(HALF_REQUEST)
        assert await closed_after(reader, 5) < 3


async def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(hub_factory):
    hub = await hub_factory(server__header_timeout=5, server__idle_timeout=0.5)
    async with raw(hub.running.port) as (reader, writer):
        writer.write(HALF_REQUEST + b"\r\n")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        assert await closed_after(reader, 4) < 3


async def test_a_stream_outlives_the_header_and_idle_timeouts(hub_factory):
    hub = await hub_factory(server__header_timeout=0.2, server__idle_timeout=0.2)
    async with hub.subscribe("edge/long") as stream:
        await asyncio.sleep(1)
        await hub.publish({"topic": "edge/long", "data": "still here"})
        (event,) = await stream.take(1)
        assert event.data == "still here"


async def test_silent_sockets_over_the_per_address_limit_do_not_stop_a_real_request(hub_factory):
    hub = await hub_factory(limits__max_http_connections_per_ip=10)
    port = hub.running.port
    sockets = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
    try:
        for _, writer in sockets:
            writer.write(HALF_REQUEST)
        table = hub.running.runner.table
        await settled(lambda: table.held_by("127.0.0.1") <= 10 and table.evicted >= 30)
        assert await healthz(port) == 200
        assert table.held_by("127.0.0.1") <= 10
    finally:
        for _, writer in sockets:
            writer.close()


async def test_a_request_being_answered_is_never_closed_to_make_room(hub_factory):
    hub = await hub_factory(limits__max_http_connections_per_ip=3, server__header_timeout=0.5)
    async with hub.subscribe("edge/relay") as stream, raw(hub.running.port) as (reader, writer):
        writer.write(
            b"POST /publish/stream?topic=edge/relay HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        assert (await stream.next_event()).data == "first"
        silent = [await asyncio.open_connection("127.0.0.1", hub.running.port) for _ in range(10)]
        try:
            await asyncio.sleep(1)  # and longer than the header timeout: its headers were in long ago
            writer.write(b"4\r\nlast\r\n0\r\n\r\n")
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
            assert [(e.event, e.data) for e in await stream.take(2)] == [
                ("message", "last"),
                ("done", '{"events":2}'),
            ]
        finally:
            for _, w in silent:
                w.close()
    assert hub.running.runner.table.evicted >= 8


async def test_half_sent_requests_beyond_the_open_file_limit_do_not_stop_real_requests():
    # The attack as reported: 400 descriptors, 420 sockets each sending half a request and stopping.
    port = free_port()

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))

    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "hub", "serve", "--port", str(port), "--log-level", "warning"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=few_descriptors,
        env={**os.environ, "HUB_SERVER_HEADER_TIMEOUT": "60"},  # the limit must do it, not the timeout
    )
    sockets = []
    try:
        async with asyncio.timeout(15):
            while True:
                with contextlib.suppress(OSError):
                    if await healthz(port) == 200:
                        break
                await asyncio.sleep(0.1)
        for _ in range(420):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HALF_REQUEST)
            sockets.append(writer)
        await asyncio.sleep(0.5)
        statuses = [await healthz(port) for _ in range(5)]
        assert statuses == [200] * 5
    finally:
        for writer in sockets:
            writer.close()
        proc.terminate()
        async with asyncio.timeout(15):
            _, stderr = await proc.communicate()
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]


async def test_responses_name_no_server_version(hub):
    async with hub.session.get(hub.url + "/healthz") as resp:
        assert resp.headers["Server"] == SERVER_NAME
    async with hub.session.get(hub.url + "/nothing-here") as resp:
        assert resp.status == 404
        assert resp.headers["Server"] == SERVER_NAME
    async with raw(hub.running.port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400"
    assert f"Server: {SERVER_NAME}\r\n".encode() in head
    assert b"Python" not in head
    assert b"aiohttp" not in head


MALFORMED = [
    b"GET /healthz?token=eyJsecret.eyJsecret.sig HTTP/1.1\x00\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer eyJsecret.eyJsecret.sig\x01\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"eyJsecret" * 2000 + b"\r\n\r\n",
    b"\x16\x03\x01eyJsecret binary junk\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
    b"Content-Length: 9\r\n\r\neyJsecret",
    b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n5\r\neyJsecret\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_a_malformed_request_gets_a_json_400_and_one_quiet_log_line(hub, request_bytes, caplog):
    caplog.set_level(logging.DEBUG)
    async with raw(hub.running.port) as (reader, writer):
        writer.write(request_bytes)
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.read()
    assert head.split(b" ", 2)[1] == b"400"
    assert b'{"error": {"code": "' in body or b'{"error":{"code":"' in body
    assert b"eyJsecret" not in body
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "hub"))]
    assert [r for r in records if r.levelno >= logging.INFO] == []
    assert all(r.exc_info is None for r in records)
    assert all("eyJsecret" not in r.getMessage() for r in records)
    assert len([r for r in records if "malformed" in r.getMessage()]) == 1


STILL_SENDING = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # 600 KB
MALFORMED_WHILE_SENDING = {
    "a control byte in a header": b"POST /progress/job HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
    b"\r\nIdempotency-Key: a\x1bb\r\nContent-Length: %d\r\n\r\n" % len(STILL_SENDING) + STILL_SENDING,
    "a body that is not gzip": b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(STILL_SENDING) + STILL_SENDING,
}


@pytest.mark.parametrize("request_bytes", MALFORMED_WHILE_SENDING.values(), ids=MALFORMED_WHILE_SENDING)
async def test_a_malformed_request_whose_body_is_still_arriving_gets_its_whole_400(hub, request_bytes):
    # Closing at once, with the rest of the body unread, made the kernel reset the connection: the
    # client lost the 400's body, or all of it, before it could read it.
    for _ in range(5):
        async with raw(hub.running.port) as (reader, writer):
            writer.write(request_bytes)
            head = await reader.readuntil(b"\r\n\r\n")
            answer = await reader.read()
        assert head.split(b" ", 2)[1] == b"400"
        assert json.loads(answer)["error"]["code"] in ("bad_request", "bad_body_encoding"), answer


async def test_a_connection_lingering_after_its_400_is_closed_to_make_room(hub_factory):
    hub = await hub_factory(limits__max_http_connections_per_ip=1)
    async with raw(hub.running.port) as (reader, writer):
        # a 400 for a bad header, and a body that never comes: the hub waits for the client to close
        writer.write(b"POST /publish HTTP/1.1\r\nHost: x\r\nBad Header: y\r\nContent-Length: 100\r\n\r\n")
        assert (await read_response(reader)).startswith(b"HTTP/1.0 400")
        assert await healthz(hub.running.port) == 200
        assert await closed_after(reader, 5) < 3
    assert hub.running.runner.table.evicted == 1


async def test_a_partial_request_pipelined_behind_a_whole_one_is_closed_within_the_header_timeout(
    hub_factory,
):
    # Both in one packet: no byte came while the connection waited, which is what started the clock.
    hub = await hub_factory(server__header_timeout=1, server__idle_timeout=30)
    async with raw(hub.running.port) as (reader, writer):
        writer.write(HALF_REQUEST + b"\r\n" + b"GET /healthz HTTP/1.1\r\nHo")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        assert await closed_after(reader, 8) < 3


async def test_a_kept_alive_connection_is_left_to_the_idle_timeout_whatever_its_last_packet(hub_factory):
    # Bodies sent apart from their headers, and whole requests pipelined, leave the parser between
    # requests: idle longer than the header timeout, the connection still serves.
    hub = await hub_factory(server__header_timeout=0.5, server__idle_timeout=30)
    body = b'{"topic":"edge/apart","data":"x"}'
    async with raw(hub.running.port) as (reader, writer):
        writer.write(
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        await asyncio.sleep(0.1)
        writer.write(body)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1.2)
        writer.write((HALF_REQUEST + b"\r\n") * 2)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1.2)
        writer.write(HALF_REQUEST + b"\r\n")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")


async def test_a_request_just_parsed_is_never_closed_to_make_room(hub_factory, caplog):
    # On Python 3.11 a parsed request is neither queued nor in progress until its task starts: a new
    # connection accepted in that moment took its place, and the handler's read of the body failed with
    # "Connection closed." (an ERROR with a traceback).
    caplog.set_level(logging.DEBUG)
    hub = await hub_factory(limits__max_http_connections_per_ip=1)
    port = hub.running.port
    table = hub.running.runner.table
    for _ in range(10):
        async with raw(port) as (reader, writer):
            await settled(lambda: table.held_by("127.0.0.1") == 1)
            # Connected and sent in the same turn of the hub's loop: the accept is seen first.
            newcomer = socket.create_connection(("127.0.0.1", port))
            try:
                writer.write(
                    b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 32\r\n\r\n{"
                )
                await asyncio.sleep(0.1)
                writer.write(b'"topic":"edge/race","data":"x"}')
                assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
            finally:
                newcomer.close()
        await settled(lambda: table.held_by("127.0.0.1") == 0)
    assert table.evicted == 0
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "hub"))]
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


BODY_STALLS = [
    b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    b"POST /progress/job-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{",
    b"POST /publish/stream?topic=edge/stall HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
]


@pytest.mark.parametrize("stall", BODY_STALLS, ids=["publish", "progress", "stream"])
async def test_a_body_that_stops_coming_gets_a_408_and_its_connection_closed(hub_factory, stall):
    hub = await hub_factory(server__body_timeout=0.5, server__idle_timeout=30)
    async with hub.subscribe("edge/stall") as stream, raw(hub.running.port) as (reader, writer):
        started = time.monotonic()
        writer.write(stall)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        body = await reader.read()  # and the connection closes, without lingering for the rest
        assert orjson.loads(body)["error"]["code"] == "body_timeout"
        assert time.monotonic() - started < 3
        if b"stream" in stall:
            assert [(e.event, e.data) for e in await stream.take(2)] == [
                ("message", "first"),
                ("error", '{"error":"no piece of the streamed body came for 0.5 s","events":1}'),
            ]


async def test_a_streamed_publish_may_go_on_as_long_as_its_pieces_keep_coming(hub_factory):
    hub = await hub_factory(server__body_timeout=0.5)
    async with hub.subscribe("edge/slow") as stream, raw(hub.running.port) as (reader, writer):
        writer.write(
            b"POST /publish/stream?topic=edge/slow HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(5):
            writer.write(b"1\r\nx\r\n")
            await asyncio.sleep(0.3)
        writer.write(b"0\r\n\r\n")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        assert [e.event for e in await stream.take(6)] == ["message"] * 5 + ["done"]


async def test_clients_hanging_up_mid_body_leave_one_quiet_line_each(hub_factory, caplog):
    caplog.set_level(logging.DEBUG)
    hub = await hub_factory()
    for stall in BODY_STALLS:
        for abort in (False, True):
            _, writer = await asyncio.open_connection("127.0.0.1", hub.running.port)
            writer.write(stall)
            await asyncio.sleep(0.05)
            if abort:
                writer.transport.abort()
            else:
                writer.close()
    await asyncio.sleep(0.3)
    assert await healthz(hub.running.port) == 200
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "hub"))]
    assert [r.getMessage() for r in records if r.levelno >= logging.INFO] == []
    assert all(r.exc_info is None for r in records)


async def serve_with_open_files(limit: int, **env: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "hub", "serve", "--port", str(port), "--log-level", "warning"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=few_descriptors,
        env={**os.environ, **env},
    )
    async with asyncio.timeout(15):
        while True:
            with contextlib.suppress(OSError):
                if await healthz(port) == 200:
                    return proc, port
            await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process) -> bytes:
    proc.terminate()
    async with asyncio.timeout(15):
        _, stderr = await proc.communicate()
    return stderr


async def test_bodies_that_never_come_do_not_hold_the_hub_past_the_body_timeout():
    # As reported: 400 descriptors, 200 sockets each sending a publish's headers and one byte of its
    # body; /healthz answered 503 for as long as they stayed.
    proc, port = await serve_with_open_files(400, HUB_SERVER_BODY_TIMEOUT="1")
    sockets = []
    try:
        for _ in range(200):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(BODY_STALLS[0])
            sockets.append(writer)
        await asyncio.sleep(2.5)
        assert [await healthz(port) for _ in range(5)] == [200] * 5
    finally:
        for writer in sockets:
            writer.close()
        stderr = await stop(proc)
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]


async def test_a_small_open_file_limit_still_leaves_room_for_many_connections():
    # macOS starts processes with 256 descriptors: less a reserve of 256, one connection was allowed.
    proc, port = await serve_with_open_files(256)
    streams = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for i in range(20):
                resp = await session.get(f"http://127.0.0.1:{port}/events", params={"topic": f"s/{i}"})
                streams.append(resp)
                assert resp.status == 200
            assert [await healthz(port) for _ in range(5)] == [200] * 5
            for resp in streams:
                resp.close()
    finally:
        await stop(proc)


def test_the_descriptor_budget_follows_the_open_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        assert descriptor_budget() == budget_for(1024) == 768
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
