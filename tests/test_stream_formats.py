"""`GET /events` in NDJSON and plain text, read by a curl-like client on a bare socket; SSE beside them read
by the SSE parser. Against both brokers."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.ids import names_event
from tests.support.raw_stream import RawStream, open_stream
from tests.support.waiting import settled


def stream(hub, *topics: str, headers: dict[str, str] | None = None, http10: bool = False, **params: str):
    query = [("topic", t) for t in topics] + list(params.items())
    return open_stream(hub.url, "/events", query, headers, http10=http10)


async def opened(hub, raw: RawStream, topics: int = 1) -> RawStream:
    assert raw.status == 200, await raw.end()
    # The headers go out once the subscription is in place; for Redis, wait until it is confirmed live.
    await settled(lambda: hub.fanout.connections >= 1)
    return raw


async def test_ndjson_stream_has_one_object_per_event(hub):
    async with stream(hub, "news", format="ndjson") as raw:
        await opened(hub, raw)
        assert raw.headers["content-type"] == "application/x-ndjson"
        assert raw.headers["cache-control"] == "no-cache"
        assert raw.chunked
        first = await hub.publish({"topic": "news", "data": "line 1\nline 2\r\nid: 666"})
        second = await hub.publish({"topic": "news", "event": "score", "data": {"a": [1, 2], "é": None}})
        lines = await raw.lines(2)
    assert [json.loads(line) for line in lines] == [
        {"id": first["id"], "topic": "news", "event": "message", "data": "line 1\nline 2\r\nid: 666"},
        {"id": second["id"], "topic": "news", "event": "score", "data": {"a": [1, 2], "é": None}},
    ]


async def test_text_stream_concatenates_to_exactly_the_published_data(hub):
    tokens = ["Hel", "lo", "", " wo\nrld", "\r\n", "🎉", " ok"]
    async with stream(hub, "llm", format="text") as raw:
        await opened(hub, raw)
        assert raw.headers["content-type"] == "text/plain; charset=utf-8"
        assert raw.headers["x-content-type-options"] == "nosniff"
        for token in tokens:
            await hub.publish({"topic": "llm", "data": token})
        await hub.publish({"topic": "llm", "data": {"done": True}})
        expected = ("".join(tokens) + '{"done":true}').encode()
        body = await raw.until(lambda body: len(body) >= len(expected))
    assert body == expected


async def test_text_over_http_1_0_is_not_chunked_and_still_exact(hub):
    async with stream(hub, "llm", format="text", http10=True) as raw:
        await opened(hub, raw)
        assert not raw.chunked
        for token in ["a", "", "b\n", "c"]:
            await hub.publish({"topic": "llm", "data": token})
        body = await raw.until(lambda body: len(body) >= 4)
    assert body == b"ab\nc"


async def test_heartbeats_are_empty_ndjson_lines_visible_on_request_and_nothing_in_text(hub_factory):
    hub = await hub_factory(sse__heartbeat_interval=0.2)
    async with (
        stream(hub, "quiet", format="ndjson") as plain,
        stream(hub, "quiet", format="ndjson", heartbeat="event") as visible,
        stream(hub, "quiet", format="text", heartbeat="event") as text,
    ):
        await settled(lambda: hub.fanout.connections == 3)
        await plain.until(b"\n\n")
        await visible.until(b'{"event":"heartbeat"}\n{"event":"heartbeat"}\n')
        assert set(plain.body) == {ord("\n")}
        # The text stream got the same ticks and wrote nothing for them: the next bytes are the event's.
        await hub.publish({"topic": "quiet", "data": "only this"})
        assert await text.until(b"only this") == b"only this"


async def test_ndjson_resumes_after_last_event_id(hub):
    ids = [(await hub.publish({"topic": "r", "data": i}))["id"] for i in range(4)]
    async with stream(hub, "r", format="ndjson", headers={"Last-Event-ID": ids[1]}) as raw:
        await opened(hub, raw)
        live = await hub.publish({"topic": "r", "data": 4})
        lines = await raw.lines(3)
    got = [json.loads(line) for line in lines]
    assert [(o["id"], o["data"]) for o in got] == [(ids[2], 2), (ids[3], 3), (live["id"], 4)]


async def test_ndjson_resume_from_an_unknown_id_starts_with_a_reset_line(hub):
    await hub.publish({"topic": "r", "data": "kept", "retain": True})
    async with stream(hub, "r", format="ndjson", lastEventId="zzzzzz-99") as raw:
        await opened(hub, raw)
        lines = await raw.lines(2)
    reset, retained = (json.loads(line) for line in lines)
    assert reset["event"] == "reset"
    assert isinstance(reset["data"]["reason"], str)
    assert retained["data"] == "kept"


async def test_text_replays_retained_data_and_keeps_resets_out_of_the_text(hub):
    await hub.publish({"topic": "r", "data": "state;", "retain": True})
    async with stream(hub, "r", format="text", headers={"Last-Event-ID": "zzzzzz-1"}) as raw:
        await opened(hub, raw)
        await hub.publish({"topic": "r", "data": "live"})
        assert await raw.until(b"live") == b"state;live"


@pytest.mark.parametrize(
    ("accept", "query", "content_type"),
    [
        ("application/x-ndjson", {}, "application/x-ndjson"),
        ("text/plain", {}, "text/plain; charset=utf-8"),
        ("text/event-stream", {}, "text/event-stream; charset=utf-8"),
        ("*/*", {}, "text/event-stream; charset=utf-8"),
        ("application/x-ndjson", {"format": "sse"}, "text/event-stream; charset=utf-8"),
        ("text/event-stream", {"format": "text"}, "text/plain; charset=utf-8"),
    ],
)
async def test_accept_header_chooses_the_format_and_the_query_wins(hub, accept, query, content_type):
    async with stream(hub, "neg", headers={"Accept": accept}, **query) as raw:
        await opened(hub, raw)
        assert raw.headers["content-type"] == content_type
        await hub.publish({"topic": "neg", "data": "x"})
        body = await raw.until(b"x")
    if content_type.startswith("text/event-stream"):
        assert body.startswith(b"retry: ")
    elif content_type == "text/plain; charset=utf-8":
        assert body == b"x"
    else:
        assert json.loads(body)["data"] == "x"


async def test_unknown_format_is_a_json_400(hub):
    async with hub.session.get(
        hub.url + "/events", params={"topic": "a", "format": "xml"}, headers={"Accept": "text/plain"}
    ) as resp:
        assert resp.status == 400
        doc = await resp.json()
    assert doc["error"]["code"] == "invalid_parameter"


async def test_every_format_at_once_each_gets_its_own_encoding(hub):
    async with (
        stream(hub, "a/1", format="ndjson") as exact,
        stream(hub, "b/*", format="ndjson") as pattern,
        stream(hub, "a/1", format="text") as text,
        hub.subscribe("a/1") as sse,
    ):
        await settled(lambda: hub.fanout.connections == 4)
        doc = await hub.publish({"topics": ["a/1", "b/1"], "event": "both", "data": "hi\nthere"})
        await hub.publish({"topic": "b/2", "data": "pattern only"})
        exact_line = json.loads((await exact.lines(1))[0])
        pattern_lines = [json.loads(line) for line in await pattern.lines(2)]
        event = await sse.next_event()
        assert await text.until(b"there") == b"hi\nthere"
    # The topic an NDJSON reader sees is the first of the event's topics its subscription matched.
    assert exact_line["topic"] == "a/1"
    assert names_event(exact_line["id"], doc["id"]), (exact_line["id"], doc["id"])
    # b/1 and b/2 may lie in two partitions of a cluster, between which no order holds (docs/redis-cluster.md)
    assert sorted((o["topic"], o["data"]) for o in pattern_lines) == [
        ("b/1", "hi\nthere"),
        ("b/2", "pattern only"),
    ]
    assert (event.event, event.data) == ("both", "hi\nthere")
    # On a cluster a/1 and b/1 may be in two partitions: the a/1 reader's id names only a/1's.
    assert names_event(event.id, doc["id"]), (event.id, doc["id"])


async def test_events_published_during_an_ndjson_replay_are_neither_lost_nor_doubled(hub):
    for i in range(200):
        await hub.publish({"topic": "busy", "data": i})

    async def publish_more() -> None:
        for i in range(200, 300):
            await hub.publish({"topic": "busy", "data": i})

    async with stream(hub, "busy", format="ndjson", lastEventId="earliest") as raw:
        assert raw.status == 200
        await asyncio.gather(publish_more(), raw.lines(150))
        lines = await raw.lines(300)
    assert [json.loads(line)["data"] for line in lines] == list(range(300))


async def test_shutdown_ends_ndjson_and_text_streams_cleanly_without_sse_bytes(hub):
    async with (
        stream(hub, "s", format="ndjson") as ndjson,
        stream(hub, "s", format="text") as text,
    ):
        await settled(lambda: hub.fanout.connections == 2)
        await hub.publish({"topic": "s", "data": "last"})
        await text.until(b"last")
        await ndjson.lines(1)
        await hub.running.stop()
        assert await text.end() == b"last"
        assert json.loads(await ndjson.end())["data"] == "last"


async def test_text_resumes_after_last_event_id_though_it_shows_no_ids(hub):
    ids = (await hub.publish([{"topic": "t", "data": token} for token in ["one ", "two ", "three "]]))["ids"]
    async with stream(hub, "t", format="text", headers={"Last-Event-ID": ids[0]}) as raw:
        await opened(hub, raw)
        await hub.publish({"topic": "t", "data": "four"})
        assert await raw.until(b"four") == b"two three four"
