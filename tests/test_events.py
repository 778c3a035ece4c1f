"""Subscribing over real HTTP, against both brokers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.support.ids import order_key, seq_in
from tests.support.waiting import settled


async def test_stream_opens_with_headers_retry_and_comment(hub):
    async with hub.session.get(hub.url + "/events", params={"topic": "news"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert first == b"retry: 3000\n: broadcast-hub\n\n"


async def test_event_carries_id_type_and_data_lines(hub):
    async with hub.subscribe("news") as stream:
        doc = await hub.publish({"topic": "news", "event": "breaking", "data": "line 1\nline 2"})
        event = await stream.next_event()
        assert event.id == doc["id"]
        assert event.event == "breaking"
        assert event.data == "line 1\nline 2"
        assert b"data: line 1\ndata: line 2\n\n" in stream.raw


async def test_json_data_is_written_compact_and_message_type_omitted(hub):
    async with hub.subscribe("news") as stream:
        await hub.publish({"topic": "news", "data": {"a": [1, 2], "b": "é"}})
        event = await stream.next_event()
        assert event.event == "message"
        assert event.data == '{"a":[1,2],"b":"é"}'
        assert b"event:" not in stream.raw


async def test_events_of_a_topic_arrive_in_publish_order(hub):
    async with hub.subscribe("seq") as stream:
        ids = []
        for i in range(150):
            ids.append((await hub.publish({"topic": "seq", "data": str(i)}))["id"])
        batch = await hub.publish([{"topic": "seq", "data": str(i)} for i in range(150, 300)])
        ids += batch["ids"]
        got = await stream.take(300)
    assert [e.data for e in got] == [str(i) for i in range(300)]
    # One topic: the subscriber reads exactly the event's partition, so even a cluster id is the publish id.
    assert [e.id for e in got] == ids
    seqs = [seq_in(i) for i in ids]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 300


async def test_concurrent_publishers_are_delivered_in_id_order(hub):
    async with hub.subscribe("race") as stream:
        docs = await asyncio.gather(*(hub.publish({"topic": "race", "data": str(i)}) for i in range(100)))
        got = await stream.take(100)
    by_seq = sorted(docs, key=lambda d: order_key(d["id"]))
    assert [e.id for e in got] == [d["id"] for d in by_seq]


async def test_patterns_match_whole_segments(hub, broker_kind):
    async with hub.subscribe("a/*", "b/**", "c") as stream:
        for topic in ["a/1", "a/1/2", "a", "b", "b/x/y", "bb/x", "c", "c/d", "ax/1"]:
            await hub.publish({"topic": topic, "data": topic})
        await hub.publish({"topic": "c", "data": "end"})
        if broker_kind == "cluster":
            # topics of different partitions have no order between them: "end" is no last marker
            got = [e.data for e in await stream.take(5)]
            with pytest.raises(TimeoutError):
                await stream.next_event(timeout=0.3)  # and nothing else matched
            assert sorted(got) == sorted(["a/1", "b", "b/x/y", "c", "end"])
            assert [d for d in got if d in ("c", "end")] == ["c", "end"]  # one topic: in order
            return
        got = []
        while not got or got[-1] != "end":
            got.append((await stream.next_event()).data)
    assert got == ["a/1", "b", "b/x/y", "c", "end"]


async def test_redis_glob_metacharacters_in_topics_are_literal(hub):
    async with hub.subscribe("x[1]/*", "q?/**") as stream:
        for topic in ["x1/a", "x[1]/a", "qq/a", "q?/a"]:
            await hub.publish({"topic": topic, "data": topic})
        got = await stream.take(2)
        # sorted: on a cluster the two topics may be in partitions with no order between them
        assert sorted(e.data for e in got) == ["q?/a", "x[1]/a"]


async def test_event_matching_several_selectors_is_delivered_once(hub, broker_kind):
    async with hub.subscribe("x", "x/**", "*", "y") as stream:
        await hub.publish({"topic": "x", "data": "one"})
        await hub.publish({"topics": ["x", "y"], "data": "two"})
        await hub.publish({"topic": "y", "data": "three"})
        got = await stream.take(3)
        if broker_kind == "cluster":  # x and y may be in partitions with no order between them
            assert sorted(e.data for e in got) == ["one", "three", "two"]
        else:
            assert [e.data for e in got] == ["one", "two", "three"]
        with pytest.raises(TimeoutError):
            await stream.next_event(timeout=0.3)


async def test_each_subscriber_gets_every_event(hub):
    async with (
        hub.subscribe("room") as s1,
        hub.subscribe("room/**") as s2,
        hub.subscribe("other") as s3,
    ):
        await hub.publish([{"topic": "room", "data": str(i)} for i in range(20)])
        await hub.publish({"topic": "other", "data": "o"})
        assert [e.data for e in await s1.take(20)] == [str(i) for i in range(20)]
        assert [e.data for e in await s2.take(20)] == [str(i) for i in range(20)]
        assert (await s3.next_event()).data == "o"


async def test_heartbeat_comments_arrive_on_the_interval(hub_factory):
    hub = await hub_factory(sse__heartbeat_interval=0.2)
    async with hub.subscribe("quiet") as stream:
        for _ in range(3):
            await stream.until_comment(timeout=2)
        assert b"\n:\n\n" in stream.raw


async def test_heartbeat_events_on_request(hub_factory):
    hub = await hub_factory(sse__heartbeat_interval=0.2)
    async with hub.subscribe("quiet", heartbeat="event") as stream:
        event = await stream.next_event(timeout=2)
        assert event.event == "heartbeat"
        # a heartbeat carries no id of its own: it must not move the client's Last-Event-ID
        assert b"\n\nevent: heartbeat\ndata: \n\n" in stream.raw


async def test_client_leaving_frees_its_subscription_and_task(hub, broker_kind, request):
    tasks_before = len(asyncio.all_tasks())
    streams = []
    for _ in range(5):
        resp = await hub.session.get(hub.url + "/events", params=[("topic", "gone"), ("topic", "g/*")])
        await resp.content.readuntil(b"\n\n")
        streams.append(resp)
    assert hub.fanout.connections == 5
    for resp in streams:
        resp.close()
    await settled(lambda: hub.fanout.connections == 0)
    assert not hub.fanout.selectors
    await settled(lambda: len(asyncio.all_tasks()) <= tasks_before)
    if broker_kind == "redis":
        redis = request.getfixturevalue("redis_server")
        channel = hub.fanout.broker._keys.channel("gone").decode()
        await settled(lambda: redis.numsub(channel) == 0)
        await settled(lambda: redis.numpat() == 0)


async def _raw_subscriber(port: int, topic: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.readuntil(b": broadcast-hub\n\n")
    return reader, writer


async def test_stalled_client_is_cut_off_never_delays_others_and_resumes_without_loss(hub_factory):
    hub = await hub_factory(sse__max_buffer=256 * 1024)
    reader, writer = await _raw_subscriber(hub.running.port, "firehose")
    position = (await reader.readuntil(b"\n\n")).split(b"id: ")[1].split(b"\n")[0].decode()
    # ...and it never reads again
    try:
        async with hub.subscribe("firehose") as fast:
            big = "x" * 100_000
            loop = asyncio.get_running_loop()
            for i in range(120):
                sent = loop.time()
                await hub.publish({"topic": "firehose", "data": f"{i} {big}"})
                event = await fast.next_event(timeout=2)
                assert event.data.startswith(f"{i} ")
                assert loop.time() - sent < 1.0
            await settled(lambda: hub.fanout.counters["slow_consumers"] == 1)
            assert hub.fanout.connections == 1
            async with hub.session.get(hub.url + "/stats") as resp:
                stats = await resp.json()
            assert stats["slow_consumer_disconnects"] == 1
            assert stats["deliveries_dropped"] >= 1  # what it was cut off with, resumed below
    finally:
        writer.close()
    async with hub.subscribe("firehose", headers={"Last-Event-ID": position}) as resumed:
        got = await resumed.take(120)
        assert [e.data.split(" ")[0] for e in got] == [str(i) for i in range(120)]


async def test_subscribe_needs_a_valid_selector(hub):
    for params, code in [
        ([], "missing_topic"),
        ([("topic", "")], "invalid_topic"),
        ([("topic", "a b")], "invalid_topic"),
        ([("topic", "a/**/b")], "invalid_selector"),
        ([("topic", "a*")], "invalid_selector"),
        ([("topic", "x" * 257)], "invalid_topic"),
        ([("topic", "ok"), ("heartbeat", "loud")], "invalid_parameter"),
        ([("topic", "ok"), ("format", "xml")], "invalid_parameter"),
        ([("topic", str(i)) for i in range(101)], "too_many_topics"),
    ]:
        async with hub.session.get(hub.url + "/events", params=params) as resp:
            assert resp.status == 400, params
            assert (await resp.json())["error"]["code"] == code
    assert hub.fanout.connections == 0


async def test_a_subscription_at_the_topic_limit_fits_in_the_request_line(hub):
    # 100 topics of 256 bytes, each byte percent-encoded: ~77 KB of URL. aiohttp's default request line
    # (8190 bytes) refused this with a plain-text 400 before the hub could see it.
    topics = [f"{i:03d}" + "é" * 126 + "x" for i in range(101)]
    assert all(len(t.encode()) == 256 for t in topics)
    params = [("topic", t) for t in topics[:100]] + [("lastEventId", "x" * 200)]
    async with hub.session.get(hub.url + "/events", params=params) as resp:
        assert resp.status == 200, await resp.text()
        await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert hub.fanout.connections == 1
    # one over the limit is the hub's own refusal, in its JSON shape
    async with hub.session.get(hub.url + "/events", params=[("topic", t) for t in topics]) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "too_many_topics"


async def test_stream_is_ended_cleanly_on_shutdown(hub):
    async with hub.subscribe("bye") as stream:
        await hub.running.stop()
        assert await stream.ended()
        assert b"retry: " in stream.raw.split(b"broadcast-hub", 1)[1]


async def test_unknown_path_and_method_are_json_errors(hub):
    async with hub.session.get(hub.url + "/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    async with hub.session.put(hub.url + "/publish") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"
        assert "POST" in resp.headers["Allow"]


async def test_http_10_streams_are_not_chunk_framed(hub):
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.running.port)
    writer.write(b"GET /events?topic=old HTTP/1.0\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert (await reader.readuntil(b"\n\n")).startswith(b"retry: ")
    async with hub.subscribe("old") as chunked_stream:  # an HTTP/1.1 reader of the same event
        doc = await hub.publish({"topic": "old", "data": "plain"})
        block = b""
        while b"data: plain" not in block:
            block += await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
        assert b"\r\n" not in block
        event = await chunked_stream.next_event()
        assert (event.id, event.data) == (doc["id"], "plain")
    writer.close()


async def test_head_on_events_subscribes_nothing(hub):
    async with hub.session.head(hub.url + "/events", params={"topic": "h"}) as resp:
        assert resp.status == 405
    assert hub.fanout.connections == 0
