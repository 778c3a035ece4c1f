"""hub.client against a real hub on both brokers, and against raw sockets for what a hub never does."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hub.client import Event, HubClient, HubRefused, HubUnreachable, Publication, Subscription
from hub.http.auth import mint
from hub.http.server import free_port
from tests.support.ids import advances, names_event, names_events
from tests.support.waiting import settled

SECRET = "a-development-secret-of-32-bytes!"


@contextlib.asynccontextmanager
async def listening(sub: Subscription) -> AsyncIterator[asyncio.Queue[Event]]:
    """Pump the subscription into a queue; yields once its first stream is open (subscribed)."""
    queue: asyncio.Queue[Event] = asyncio.Queue()

    async def pump() -> None:
        async for event in sub:
            queue.put_nowait(event)

    task = asyncio.create_task(pump())
    try:
        await settled(lambda: sub.connections >= 1 or task.done())
        if task.done():
            await task  # raises what the subscription raised
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sub.aclose()


async def take_one(queue: asyncio.Queue[Event], timeout: float = 10.0) -> Event:
    return (await take(queue, 1, timeout))[0]


async def take(queue: asyncio.Queue[Event], n: int, timeout: float = 10.0) -> list[Event]:
    async with asyncio.timeout(timeout):
        return [await queue.get() for _ in range(n)]


async def test_publish_subscribe_round_trip(hub):
    async with HubClient(hub.url) as client, listening(client.subscribe("orders/*")) as events:
        id_ = await client.publish("orders/7", {"total": 12}, event="created")
        (event,) = await take(events, 1)
    assert (event.event, event.json()) == ("created", {"total": 12})
    assert names_event(event.id, id_), (event.id, id_)


async def test_events_arrive_in_publish_order_across_topics(hub, broker_kind):
    async with HubClient(hub.url) as client, listening(client.subscribe("a/*", "b")) as events:
        ids = [await client.publish(["a/1", "a/2", "b"][i % 3], f"n{i}") for i in range(30)]
        got = await take(events, 30)
    if broker_kind == "cluster":
        # Topics of different partitions reach the hub over different node connections: each topic in
        # order, each event once, and every id of the stream after the one before.
        for t in range(3):
            assert [e.data for e in got if int(e.data[1:]) % 3 == t] == [f"n{i}" for i in range(t, 30, 3)]
        assert sorted(e.data for e in got) == sorted(f"n{i}" for i in range(30))
        assert all(advances(a.id, b.id) for a, b in itertools.pairwise(got))
        return
    assert names_events([e.id for e in got], ids), ([e.id for e in got], ids)
    assert [e.data for e in got] == [f"n{i}" for i in range(30)]


async def test_batch_ids_come_back_in_order_and_resume_replays_after_an_id(hub):
    async with HubClient(hub.url) as client:
        ids = await client.publish_batch(
            [Publication("x", 1), {"topic": "x", "data": "two"}, Publication(["x", "y"], [3], event="e")]
        )
        assert len(set(ids)) == 3
        async with listening(client.subscribe("x", last_event_id=ids[0])) as events:
            got = await take(events, 2)
    assert [(e.event, e.data) for e in got] == [("message", "two"), ("e", "[3]")]
    assert names_events([e.id for e in got], ids[1:]), ([e.id for e in got], ids)


async def test_reset_from_an_unknown_epoch_is_surfaced(hub):
    async with HubClient(hub.url) as client:
        await client.publish("s", "kept", retain=True)
        async with listening(client.subscribe("s", last_event_id="zzzzzz-5")) as events:
            reset, state = await take(events, 2)
    assert reset.event == "reset"
    assert "reason" in reset.json()
    assert (state.event, state.data) == ("message", "kept")


async def test_refusals_raise_with_status_code_and_message(hub_factory):
    hub = await hub_factory(auth__jwt_secret=SECRET)
    reader = mint(publish=[], subscribe=["news/*"], ttl=60, secret=SECRET)
    async with HubClient(hub.url) as anonymous, HubClient(hub.url, token=reader) as client:
        with pytest.raises(HubRefused) as refused:
            await anonymous.publish("news/eu", "x")
        assert refused.value.status == 401
        with pytest.raises(HubRefused) as refused:
            await client.publish("news/eu", "x")
        assert refused.value.status == 403
        assert refused.value.code == "topic_forbidden"
        assert "news/eu" in refused.value.message
        with pytest.raises(HubRefused) as refused:
            async for _ in client.subscribe("sports"):
                pass
        assert refused.value.status == 403
        with pytest.raises(HubRefused) as refused:
            async for _ in client.subscribe("bad topic"):
                pass
        assert refused.value.status == 400
        async with listening(client.subscribe("news/*")) as events:
            writer = mint(publish=["news/**"], subscribe=[], ttl=60, secret=SECRET)
            async with HubClient(hub.url, token=writer) as publisher:
                id_ = await publisher.publish("news/eu", "hello")
            (event,) = await take(events, 1)
            assert (event.data, names_event(event.id, id_)) == ("hello", True), (event.id, id_)


async def test_client_resumes_after_the_hub_restarts_on_the_same_port(hub_factory, broker_kind):
    # A short retry: the hub tells its streams to come back within it when it shuts down.
    first = await hub_factory(sse__retry=200)
    port = first.running.port
    async with HubClient(first.url) as client, listening(client.subscribe("r/*")) as events:
        before = await client.publish("r/1", "before")
        first_got = await take(events, 1)
        assert names_events([e.id for e in first_got], [before]), ([e.id for e in first_got], before)
        await first.running.stop()
        second = await hub_factory(sse__retry=200, server__port=port)
        # Published while the client is away or reconnecting: whichever, it must arrive once.
        during = [await client.publish("r/2", f"d{i}") for i in range(5)]
        if broker_kind == "memory":
            # The memory broker lost its history with the process: the client must be told.
            reset = (await take(events, 1))[0]
            assert reset.event == "reset"
            after = await client.publish("r/3", "after")
            # The events published after it came back, if it came back while they were published,
            # then `after`: once each, in order.
            got = [await take_one(events)]
            while not names_events([got[-1].id], [after]):
                got.append(await take_one(events))
            live = [e.data for e in got[:-1]]
            assert live == [f"d{i}" for i in range(5)][5 - len(live) :], live
        else:
            got = first_got + await take(events, 5)
            assert [e.data for e in got] == ["before"] + [f"d{i}" for i in range(5)]
            after = await client.publish("r/3", "after")
            got += await take(events, 1)
            # One stream across the restart: its ids name each event once, in order.
            published = [before, *during, after]
            assert names_events([e.id for e in got], published), ([e.id for e in got], published)
        assert events.empty()
        assert second.running.port == port


async def start_raw_server(
    handle: Callable[[int, dict[str, str], asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, str]:
    """A bare HTTP/1.1 server for what a real hub does not do on demand (a silent stream, a 503)."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        try:
            await handle(connections, headers, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


async def test_a_silent_stream_is_reopened_after_the_heartbeat_timeout():
    opened: list[tuple[float, dict[str, str]]] = []

    async def handle(n: int, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        opened.append((time.monotonic(), headers))
        writer.write(SSE_HEAD + b"retry: 10\n: hi\n\nid: ep-1\n\n")
        if n > 1:
            writer.write(b"id: ep-2\ndata: live\n\n")
        await writer.drain()
        await asyncio.sleep(30)  # then silence, the connection still open: what a stalled path looks like

    server, url = await start_raw_server(handle)
    async with server, HubClient(url) as client:
        sub = client.subscribe("t", heartbeat_timeout=0.5)
        async with listening(sub) as events:
            (event,) = await take(events, 1)
        server.close()
    assert (event.id, event.data) == ("ep-2", "live")
    assert len(opened) == 2
    (first, _), (second, headers) = opened
    assert headers["last-event-id"] == "ep-1"  # the position line counts, though it carried no event
    assert second - first >= 0.5


async def test_429_waits_out_retry_after_and_503_is_retried():
    opened: list[float] = []

    async def handle(n: int, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        opened.append(time.monotonic())
        if n == 1:
            body = b'{"error": {"code": "too_many_streams", "message": "later"}}'
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n")
        elif n == 2:
            body = b'{"error": {"code": "broker_unavailable", "message": "down"}}'
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\n")
        else:
            writer.write(SSE_HEAD + b"id: ep-1\ndata: ok\n\n")
            await writer.drain()
            await asyncio.sleep(30)
            return
        writer.write(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()

    server, url = await start_raw_server(handle)
    async with server, HubClient(url) as client:
        async with listening(client.subscribe("t")) as events:
            (event,) = await take(events, 1)
        server.close()
    assert event.data == "ok"
    assert len(opened) == 3
    assert opened[1] - opened[0] >= 1.0


async def test_unreachable_hub_raises_after_the_failures_allowed():
    url = f"http://127.0.0.1:{free_port()}"
    async with HubClient(url, publish_retries=1) as client:
        with pytest.raises(HubUnreachable):
            await client.publish("t", "x")
        sub = client.subscribe("t", max_failures=2)
        sub.reconnect_delay = 0.05
        with pytest.raises(HubUnreachable):
            async for _ in sub:
                pass


async def test_retried_publish_is_delivered_once(hub):
    # The key the client sends on every attempt: the hub answers a repeat with the first id.
    async with HubClient(hub.url) as client, listening(client.subscribe("k")) as events:
        first = await client.publish("k", "once", idempotency_key="key-1")
        again = await client.publish("k", "once", idempotency_key="key-1")
        marker = await client.publish("k", "marker")
        got = await take(events, 2)
    assert first == again
    assert [e.id for e in got] == [first, marker]


UNKNOWN = b'{"error": {"code": "outcome_unknown", "message": "x"}, "outcome": "unknown"}'
UNAVAILABLE = b'{"error": {"code": "broker_unavailable", "message": "x"}}'
REUSED = b'{"error": {"code": "idempotency_key_reused", "message": "x"}}'


async def json_answer(writer: asyncio.StreamWriter, status: bytes, body: bytes) -> None:
    writer.write(
        b"HTTP/1.1 %b\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (status, len(body), body)
    )
    await writer.drain()


async def test_publish_answered_503_or_504_is_retried_with_the_same_idempotency_key():
    """The client used to retry a 503 only, and to send no key at all when told not to retry: a 504
    (outcome unknown) was the caller's to sort out, without the key that would settle it."""
    keys: list[str | None] = []
    answers = {
        1: (
            b"504 Gateway Timeout",
            b'{"error": {"code": "outcome_unknown", "message": "x"}, "outcome": "unknown"}',
        ),
        2: (b"503 Service Unavailable", b'{"error": {"code": "broker_unavailable", "message": "x"}}'),
        3: (b"200 OK", b'{"id": "ep-9"}'),
    }

    async def handle(n: int, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        keys.append(headers.get("idempotency-key"))
        await json_answer(writer, *answers.get(n, (b"503 Service Unavailable", UNAVAILABLE)))

    server, url = await start_raw_server(handle)
    async with server, HubClient(url) as client:
        assert await client.publish("t", "x") == "ep-9"
        no_retries = HubClient(url, session=client.session, publish_retries=0)
        with pytest.raises(HubRefused) as refused:
            await no_retries.publish("t", "x")
        await no_retries.close()  # leaves the session it was given open
        assert not client.session.closed
        server.close()
    assert keys[0] is not None
    assert keys[:3] == [keys[0]] * 3  # one key for one publish, through every retry
    assert keys[3] is not None  # a key of its own even when not retrying
    assert keys[3] != keys[0]
    assert (refused.value.status, refused.value.code) == (503, "broker_unavailable")


async def test_publish_retries_stop_at_the_deadline_and_a_4xx_is_not_retried():
    attempts: list[float] = []

    async def handle(n: int, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        if headers.get("idempotency-key") == "bad":
            status, body = (
                b"422 Unprocessable Entity",
                b'{"error": {"code": "idempotency_key_reused", "message": "x"}}',
            )
        else:
            status, body = (
                b"503 Service Unavailable",
                b'{"error": {"code": "broker_unavailable", "message": "x"}}',
            )
        writer.write(
            b"HTTP/1.1 %b\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (status, len(body), body)
        )
        await writer.drain()

    server, url = await start_raw_server(handle)
    async with server, HubClient(url, publish_deadline=1.0, publish_retries=100) as client:
        started = time.monotonic()
        with pytest.raises(HubRefused) as refused:
            await client.publish("t", "x")
        took = time.monotonic() - started
        assert refused.value.status == 503
        assert 0.3 < took <= 1.1, took  # several tries, none past the deadline
        assert len(attempts) >= 3
        attempts.clear()
        with pytest.raises(HubRefused) as refused:
            await client.publish("t", "x", idempotency_key="bad")
        assert (refused.value.status, len(attempts)) == (422, 1)
        server.close()


async def test_an_answer_that_is_not_an_event_stream_is_not_reconnected_to():
    async def handle(n: int, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        body = b"<html>a login page</html>"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        await writer.drain()

    server, url = await start_raw_server(handle)
    async with server, HubClient(url) as client:
        with pytest.raises(HubRefused) as refused:
            async for _ in client.subscribe("t"):
                pass
        server.close()
    assert refused.value.code == "not_an_event_stream"


async def test_presence_and_disconnects_through_the_client(hub_factory):
    hub = await hub_factory(presence__interval=0.2)
    async with HubClient(hub.url) as client:
        sub = client.subscribe("room", name="ann")
        async with listening(sub) as events:
            assert len(sub.connection_id) == 16
            assert await client.subscribers("room") == {"room": 1}
            (member,) = await client.presence("room")
            assert (member["conn"], member["name"]) == (sub.connection_id, "ann")
            first = sub.connection_id
            assert await client.disconnect(name="ann", reason="moderated") == 1
            (event,) = await take(events, 1)
            assert (event.event, event.json()) == ("disconnect", {"reason": "moderated"})
            # and it comes back, as after any end of its stream: a new stream, a new id
            await settled(lambda: sub.connections == 2 and sub.connection_id != first)
        with pytest.raises(HubRefused) as refused:
            await client.disconnect(conn="")
        assert refused.value.status == 400


@pytest.mark.parametrize("broker_kind", ["memory"])  # the client's side; the brokers' in test_binary_streams
async def test_bytes_published_and_read_back_and_a_byte_stream_resumed_where_it_broke(hub):
    data = bytes(range(256)) * 4096  # 1 MiB
    half = len(data) // 2

    async def pieces(part: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(part), 64 * 1024):
            yield part[start : start + 64 * 1024]

    async with HubClient(hub.url) as client, listening(client.subscribe("files/*")) as events:
        id_ = await client.publish("files/1", b"\x00\xff", event="frame")
        event = await take_one(events)
        assert (event.id, event.event, event.is_binary, event.data_bytes()) == (
            id_,
            "frame",
            True,
            b"\x00\xff",
        )
        # A batch carries bytes too (base64 in its JSON, marked), beside text.
        ids = await client.publish_batch([Publication("files/1", b"\x01"), Publication("files/1", "t")])
        batch = await take(events, 2)
        assert [(e.id, e.is_binary) for e in batch] == [(ids[0], True), (ids[1], False)]
        assert batch[0].data_bytes() == b"\x01"
        received = bytearray()
        async with client.subscribe_bytes("files/2") as stream:
            reading = asyncio.create_task(anext(stream))
            await settled(lambda: stream.connections == 1)
            summary = await client.publish_stream("files/2", pieces(data[:half]))
            assert summary["events"] >= 2  # each piece the hub read, cut at 256 KiB
            received += await reading
            while len(received) < half:
                received += await anext(stream)
            # Cut from the hub's side, as a proxy or a redeploy would, and the rest published meanwhile:
            # the client reopens from where its stream started, less what it has.
            assert await client.disconnect(conn=stream.connection_id) == 1
            await client.publish_stream("files/2", pieces(data[half:]))
            while len(received) < len(data):
                received += await anext(stream)
            assert stream.connections == 2
            assert stream.offset == len(data)
        # A stream started where an earlier one's start and offset say: the offsets go on from there.
        async with client.subscribe_bytes("files/2", last_event_id=f"{stream.start}:{half}") as again:
            rest = bytearray()
            while len(rest) < len(data) - half:
                rest += await anext(again)
            assert again.offset == len(data)
    assert bytes(received) == data
    assert bytes(rest) == data[half:]
