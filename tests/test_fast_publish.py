"""POST /publish answered off aiohttp's request path (hub/http/fast_publish.py) answers exactly as the
route does, keeps its connection's order, keep-alive and header clock, and takes only what it can.

A request sent in one write reaches the hub whole and takes the fast path; the same request with its body
sent a moment after its headers is not whole when it is parsed and goes the general way. Each hostile
publish is sent both ways and the answers compared."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Sequence

import pytest
from hypothesis import strategies as st

from hub.http.fast_publish import FastPublish
from tests.integration.test_hostile import ALLOWED_ORIGIN, SECRET, credentials, token
from tests.support import hostile
from tests.support.hostile_run import generate
from tests.support.hub_client import HubUnderTest
from tests.support.raw_http import RawRequest
from tests.support.raw_stream import parse_head
from tests.support.waiting import settled

Answer = tuple[int, dict[str, str], bytes]
EXAMPLES = int(os.environ.get("HUB_FAST_EXAMPLES", "16"))  # batches of hostile publishes sent both ways


class Connection:
    """One keep-alive connection, requests written as the test says and answers read by their length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, hub: HubUnderTest) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", hub.running.port))

    async def send(self, request: RawRequest, *, whole: bool = True) -> None:
        lines = [request.method + b" " + request.target + b" HTTP/1.1", b"Host: hub"]
        lines += [name + b": " + value for name, value in request.headers]
        lines.append(b"Content-Length: %d" % len(request.body))
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        if whole or not request.body:
            self.writer.write(head + request.body)
        else:
            self.writer.write(head)
            await self.writer.drain()
            await asyncio.sleep(0.02)  # parsed before its body comes: not whole
            self.writer.write(request.body)
        await self.writer.drain()

    async def answer(self) -> Answer:
        async with asyncio.timeout(10):
            status = 100
            while status < 200:  # an interim answer (100 Continue) comes before the answer
                status, headers = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
            if "content-length" in headers:
                return status, headers, await self.reader.readexactly(int(headers["content-length"]))
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                body += (await self.reader.readexactly(size + 2))[:-2]
            await self.reader.readuntil(b"\r\n")
        return status, headers, body

    async def closed(self) -> bool:
        try:
            async with asyncio.timeout(5):
                return await self.reader.read(1) == b""
        except (TimeoutError, ConnectionError):
            return False

    def close(self) -> None:
        self.writer.close()


def fast(hub: HubUnderTest) -> FastPublish:
    fast_path = hub.running.runner.fast
    assert fast_path is not None
    return fast_path


def comparable(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = answer
    kept = {name: value for name, value in headers.items() if name not in ("date", "content-length")}
    try:
        doc = json.loads(body)
    except ValueError:
        return status, kept, body
    if isinstance(doc, dict):
        # The ids differ from one publish to the next: their number and shape are compared.
        doc |= {key: re.sub(r"[0-9a-z]", "x", json.dumps(doc[key])) for key in ("id", "ids") if key in doc}
    return status, kept, json.dumps(doc, sort_keys=True).encode()


async def exchange(hub: HubUnderTest, request: RawRequest, *, whole: bool) -> tuple[Answer, bool, bool]:
    """The answer, whether the fast path took the request, and whether the hub closed the connection."""
    taken = fast(hub).taken
    conn = await Connection.open(hub)
    try:
        await conn.send(request, whole=whole)
        answer = await conn.answer()
        closing = answer[1].get("connection", "").lower() == "close"
        return answer, fast(hub).taken > taken, closing and await conn.closed()
    finally:
        conn.close()


def publish(body: bytes, *headers: tuple[bytes, bytes]) -> RawRequest:
    return RawRequest(b"POST", b"/publish", ((b"Content-Type", b"application/json"), *headers), body)


def binary(target: bytes, body: bytes, *headers: tuple[bytes, bytes]) -> RawRequest:
    return RawRequest(b"POST", target, ((b"Content-Type", b"application/octet-stream"), *headers), body)


@pytest.mark.parametrize("auth", ["off", "jwt"])
async def test_hostile_publishes_get_the_same_answer_either_way(hub_factory, auth):
    settings: dict[str, object] = {"cors__origins": (ALLOWED_ORIGIN,), "cors__allow_credentials": True}
    if auth == "jwt":
        settings |= {"auth__jwt_secret": SECRET, "auth__public_topics": ("public/**",)}
    drawn = generate(st.lists(hostile.publish_requests(credentials()), min_size=2, max_size=4), EXAMPLES)
    hub = await hub_factory(**settings)
    await settled(lambda: hub.fanout.broker.ready)
    seeds = [
        publish(
            b'{"topic": "public/min", "data": "x"}',
            (b"Authorization", b"Bearer " + token(["**"], []).encode()),
        ),
        publish(b'[{"topic": "public/min", "data": 1}, {"topic": "public/probe", "data": 2}]'),
        publish(b'{"topic": "public/min", "data": "x"}', (b"Idempotency-Key", b"k1")),
        publish(b'{"topic": "public/min", "data": "y"}', (b"Idempotency-Key", b"k1")),
        publish(b"{", (b"Authorization", b"Bearer " + token(["**"], []).encode())),
        publish(b'{"topic": "public/min", "data": "' + b"x" * 2_000_000 + b'"}'),
        publish(b"[" + b",".join([b'{"topic": "public/min", "data": 1}'] * 1001) + b"]"),  # 413, closes
        publish(b'{"topic": "public/min", "data": "' + b"x" * 300_000 + b'"}'),
        binary(b"/publish?topic=public/min&event=frame&retain=true", b"\x00\xff"),
        binary(b"/publish?topic=public/min&topic=public/probe", b"\x00" * 300_000),  # 413
        binary(b"/publish?topic=public%2Fmin&event=reset", b"x"),  # 400
        binary(b"/publish", b"x"),  # no topic: 400
    ]
    requests = seeds + [
        r for batch in drawn for r in batch if r.target == b"/publish" or r.target.startswith(b"/publish?")
    ]
    assert len(requests) > 15
    took = 0
    for request in requests:
        whole, taken, whole_closed = await exchange(hub, request, whole=True)
        parts, taken_in_parts, parts_closed = await exchange(hub, request, whole=False)
        assert not taken_in_parts or not request.body, request
        assert comparable(whole) == comparable(parts), request
        assert whole_closed == parts_closed, request
        took += taken
    # Not all of them: a request with an Origin, a cookie or an oversized body goes the general way.
    assert 0 < took < len(requests)


async def test_pipelined_requests_are_answered_in_order_behind_a_publish(hub):
    await settled(lambda: hub.fanout.broker.ready)
    conn = await Connection.open(hub)
    try:
        first = publish(b'{"topic": "a", "data": 0}')
        later = [publish(b'{"topic": "a", "data": %d}' % n) for n in range(1, 6)]
        later.insert(2, RawRequest(b"GET", b"/healthz"))
        await conn.send(first)
        # Behind a publish that waits for Redis, these arrive while it is answered: held, then read.
        for request in later:
            await conn.send(request)
        answers = [await conn.answer() for _ in range(1 + len(later))]
    finally:
        conn.close()
    assert [status for status, _, _ in answers] == [200] * 7
    assert json.loads(answers[3][2]) == {"status": "ok"}
    ids = [json.loads(body)["id"] for i, (_, _, body) in enumerate(answers) if i != 3]
    async with hub.session.get(hub.url + "/topics/a/history") as resp:
        history = await resp.json()
    assert [e["data"] for e in history] == [0, 1, 2, 3, 4, 5]
    assert ids == [e["id"] for e in history]


async def test_a_connection_kept_busy_by_fast_publishes_stays_open_and_idle_ones_close(hub_factory):
    hub = await hub_factory(server__idle_timeout=0.6, server__header_timeout=0.6)
    await settled(lambda: hub.fanout.broker.ready)
    conn = await Connection.open(hub)
    try:
        before = fast(hub).taken
        for n in range(8):  # 1.6 s of publishes, 0.2 s apart: past the idle timeout in all
            await conn.send(publish(b'{"topic": "a", "data": %d}' % n))
            assert (await conn.answer())[0] == 200
            await asyncio.sleep(0.2)
        assert fast(hub).taken == before + 8
        # Then the half of a request's headers, and nothing more: the header clock closes it.
        conn.writer.write(b"POST /publish HTTP/1.1\r\nHost: hub\r\n")
        started = asyncio.get_running_loop().time()
        assert await conn.closed()
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        conn.close()
    conn = await Connection.open(hub)
    try:
        await conn.send(publish(b'{"topic": "a", "data": "x"}'))
        assert (await conn.answer())[0] == 200
        assert await conn.closed()  # idle past its timeout after a fast answer
    finally:
        conn.close()


async def test_only_what_the_fast_path_answers_as_the_route_would_is_taken(hub):
    body = b'{"topic": "a", "data": 1}'
    cases: Sequence[tuple[RawRequest, bool]] = [
        (publish(body), True),
        (RawRequest(b"POST", b"/publish?x=1", ((b"Content-Type", b"application/json"),), body), False),
        # A binary publish's fields are its query: taken with them, but not with a token among them.
        (binary(b"/publish?topic=a&event=frame", b"\x00"), True),
        (binary(b"/publish?topic=a&token=t", b"\x00"), False),
        (binary(b"/publish?topic=a", b"\x00", (b"Connection", b"close")), False),
        (publish(body, (b"Connection", b"close")), False),
        (publish(body, (b"Expect", b"100-continue")), False),
        (publish(body, (b"Content-Encoding", b"gzip")), False),
        (RawRequest(b"POST", b"/publish/stream?topic=a", ((b"Content-Type", b"text/plain"),), b"x\n"), False),
    ]
    for request, expected in cases:
        _, taken, _ = await exchange(hub, request, whole=True)
        assert taken == expected, request
