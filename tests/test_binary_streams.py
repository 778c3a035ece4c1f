"""Binary events end to end, on the memory broker, one Redis and a Redis Cluster: published as
`application/octet-stream` (whole, or a streamed body a chunk an event), read in every format by clients
on bare sockets, and a raw byte stream resumed to the byte."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator

import pytest

from hub.wire.sse_parser import SseParser
from tests.support.hub_client import kill_subscriber_connection
from tests.support.raw_stream import RawStream, open_stream
from tests.support.waiting import settled

OCTETS = {"Content-Type": "application/octet-stream"}
EVERY_BYTE = bytes(range(256))


def stream(hub, *topics: str, headers: dict[str, str] | None = None, **params: str):
    query = [("topic", t) for t in topics] + list(params.items())
    return open_stream(hub.url, "/events", query, headers)


async def publish_bytes(hub, data: bytes, expect: int = 200, headers=None, **query: str) -> dict:
    params = [("topic", query.pop("topic", "files/1")), *query.items()]
    status, doc = await hub.post("/publish", params=params, data=data, headers={**OCTETS, **(headers or {})})
    assert status == expect, doc
    return doc


async def test_a_binary_event_reaches_every_format_unambiguously(hub):
    async with (
        stream(hub, "files/1") as sse,
        stream(hub, "files/1", format="ndjson") as ndjson,
        stream(hub, "files/1", format="text") as text,
        stream(hub, "files/1", headers={"Accept": "application/octet-stream"}) as raw,
    ):
        await settled(lambda: hub.fanout.connections == 4)
        assert raw.headers["content-type"] == "application/octet-stream"
        assert raw.headers["x-content-type-options"] == "nosniff"
        first = await publish_bytes(hub, EVERY_BYTE)
        # Text that reads as base64, and a JSON value: neither may pass for bytes.
        looks = await hub.publish({"topic": "files/1", "data": "AAEC"})
        named = await publish_bytes(hub, b"\n\r\n{}", event="frame")
        done = await hub.publish({"topic": "files/1", "data": {"done": True}})
        sse_body = await sse.until(lambda b: done["id"].encode() in b)
        lines = await ndjson.lines(4)
        assert await raw.until(lambda b: len(b) >= 261) == EVERY_BYTE + b"\n\r\n{}"
        assert await text.until(b"}") == b'AAEC{"done":true}'
    events = [e for e in SseParser().feed(sse_body.split(b"\n\n", 1)[1]) if e.id != ""]
    assert [(e.id, e.event, e.encoding) for e in events] == [
        (first["id"], "binary", "base64"),
        (looks["id"], "message", ""),
        (named["id"], "frame", "base64"),
        (done["id"], "message", ""),
    ]
    assert events[0].data_bytes() == EVERY_BYTE
    assert events[2].data_bytes() == b"\n\r\n{}"
    assert b"encoding: base64\ndata: " + base64.b64encode(EVERY_BYTE) + b"\n" in sse_body
    docs = [json.loads(line) for line in lines]
    assert [d.get("encoding") for d in docs] == ["base64", None, "base64", None]
    assert base64.b64decode(docs[0]["data"]) == EVERY_BYTE
    assert docs[1]["data"] == "AAEC"
    async with hub.session.get(f"{hub.url}/topics/files/1/history") as resp:
        history = await resp.json()
    assert history == [{**d, "topic": "files/1"} for d in docs]
    # Nothing on the text stream but the text: the bytes were left out, not mangled into it.
    assert raw.body == bytearray(EVERY_BYTE + b"\n\r\n{}")


async def test_a_binary_publish_has_the_ids_idempotency_retention_and_limits_of_any(hub_factory):
    hub = await hub_factory(limits__max_data_bytes=1000, limits__max_body_bytes=2000)
    key = {"Idempotency-Key": "file-1"}
    first = await publish_bytes(hub, b"\x00abc", headers=key, retain="true")
    assert await publish_bytes(hub, b"\x00abc", headers=key, retain="true") == first
    again = await publish_bytes(hub, b"\x00abd", 422, headers=key, retain="true")
    assert again["error"]["code"] == "idempotency_key_reused"
    for data, query, status, code in [
        (b"x" * 1001, {}, 413, "data_too_large"),
        (b"x" * 2001, {}, 413, "payload_too_large"),
        (b"x", {"topic": "$presence/files"}, 403, "reserved_topic"),
        (b"x", {"event": "reset"}, 400, "reserved_event_name"),
        (b"x", {"retain": "sometimes"}, 400, "invalid_field"),
    ]:
        doc = await publish_bytes(hub, data, status, **query)
        assert doc["error"]["code"] == code, doc
    status, doc = await hub.post("/publish", data=b"x", headers=OCTETS)  # no topic, and the fast path
    assert (status, doc["error"]["code"]) == (400, "missing_topic")
    # Retained: a new subscriber gets it first, and it is still the only event of the topic.
    async with hub.subscribe("files/1") as sub:
        [event] = await sub.take(1)
    assert (event.id, event.event, base64.b64decode(event.data)) == (first["id"], "binary", b"\x00abc")
    async with hub.session.get(f"{hub.url}/topics/files/1/history") as resp:
        assert [e["id"] for e in await resp.json()] == [first["id"]]


async def test_binary_publishes_are_authorized_as_any(hub_factory):
    hub = await hub_factory(auth__jwt_secret="s" * 32)
    status, doc = await hub.post("/publish", params={"topic": "files/1"}, data=b"x", headers=OCTETS)
    assert (status, doc["error"]["code"]) == (401, "token_required")
    status, doc = await hub.post("/publish/stream", params={"topic": "files/1"}, data=b"x", headers=OCTETS)
    assert status == 401


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def refusal(raw: RawStream) -> dict:
    """A refused stream's JSON error (the connection stays open: read its length, not to its end)."""
    length = int(raw.headers["content-length"])
    return json.loads(await raw.until(lambda body: len(body) >= length))


async def read_bytes(raw: RawStream, at_least: int) -> bytes:
    return await raw.until(lambda body: len(body) >= at_least, timeout=30)


async def read_some(raw: RawStream, wanted: int) -> bytes:
    """Up to `wanted` bytes and more, or what came before the hub cut the stream (a slow consumer: the
    reader shares its process, and its cores, with the hub)."""
    with contextlib.suppress(asyncio.IncompleteReadError, EOFError, ConnectionError):
        await read_bytes(raw, wanted)
    return bytes(raw.body)


async def test_a_file_streamed_through_publish_stream_arrives_byte_identical_across_a_resume(hub):
    data = os.urandom(4 * 1024 * 1024 + 123)
    async with stream(hub, "files/big", format="bytes") as first:
        await settled(lambda: hub.fanout.connections == 1)
        start = first.headers["hub-stream-start"]
        status, summary = await hub.post(
            "/publish/stream", params={"topic": "files/big"}, data=chunks(data, 64 * 1024), headers=OCTETS
        )
        assert status == 200, summary
        assert summary["events"] >= 17  # at most 256 KiB an event: the data limit
        received = bytearray(await read_some(first, len(data) // 2))
    # The connection broke part-way: the resume names where the stream started and what came of it.
    await resume_to_the_end(hub, "files/big", start, received, len(data))
    assert bytes(received) == data  # nothing lost, nothing twice, and the stream's `done` not inside it
    # From the start of the topic, the same file: `earliest` is pinned to the place before its first
    # event, so that a resume from it counts from the same byte.
    async with stream(hub, "files/big", format="bytes", lastEventId="earliest") as whole:
        pinned = whole.headers["hub-stream-start"]
        received = bytearray(await read_some(whole, len(data)))
    assert pinned not in ("", "earliest")
    await resume_to_the_end(hub, "files/big", pinned, received, len(data))
    assert bytes(received) == data


async def resume_to_the_end(hub, topic: str, start: str, received: bytearray, total: int) -> None:
    """Resume a byte stream from `start` less what `received` holds, again each time it is cut."""
    for _ in range(20):
        if len(received) >= total:
            return
        async with stream(hub, topic, format="bytes", lastEventId=f"{start}:{len(received)}") as more:
            assert more.status == 200, await refusal(more)
            assert more.headers["hub-stream-start"] == start
            received += await read_some(more, total - len(received))


async def test_a_byte_stream_refuses_what_it_cannot_continue_exactly(hub):
    first = await publish_bytes(hub, b"0123456789", topic="files/2")
    async with stream(hub, "files/2", format="bytes", lastEventId="earliest") as raw:
        pinned = raw.headers["hub-stream-start"]
        assert await raw.until(b"9") == b"0123456789"
    async with stream(hub, "files/2", format="bytes", lastEventId=f"{pinned}:4") as raw:
        assert raw.status == 200
        assert await raw.until(b"9") == b"456789"
    for last_event_id, status, code in [
        (f"{first['id']}:1", 400, "invalid_last_event_id"),  # nothing came after it
        (f"{pinned}:11", 400, "invalid_last_event_id"),
        ("earliest:4", 400, "invalid_last_event_id"),  # an offset counts from the start it was given
        (":3", 400, "invalid_last_event_id"),  # an offset with nothing to count from
        ("earliest:-1", 400, "invalid_last_event_id"),
        ("earliest:1e3", 400, "invalid_last_event_id"),
        ("someone-elses-id:3", 409, "history_lost"),
        ("zzzzzz-1", 409, "history_lost"),
    ]:
        async with stream(hub, "files/2", format="bytes", lastEventId=last_event_id) as raw:
            doc = await refusal(raw)
            assert (raw.status, doc["error"]["code"]) == (status, code), last_event_id
    # Live from now: nothing retained or past, and the live position to resume from.
    async with stream(hub, "files/2", format="bytes") as raw:
        await settled(lambda: hub.fanout.connections == 1)
        start = raw.headers["hub-stream-start"]
        second = await publish_bytes(hub, b"ab", topic="files/2")
        assert await raw.until(b"b") == b"ab"
    async with stream(hub, "files/2", format="bytes", lastEventId=f"{start}:1") as raw:
        assert await raw.until(b"b") == b"b"
    assert second["id"] != start
    # A binary event may not take text's default type: written without an `event:` line, it would pass
    # for text in a browser.
    doc = await publish_bytes(hub, b"x", 400, topic="files/2", event="message")
    assert doc["error"]["code"] == "reserved_event_name"


@pytest.mark.parametrize("broker_kind", ["memory"])
async def test_a_byte_stream_ends_only_broken_so_that_no_client_takes_it_for_a_whole_download(hub):
    async with stream(hub, "files/5", format="bytes") as raw, stream(hub, "files/5") as sse:
        await settled(lambda: hub.fanout.connections == 2)
        await publish_bytes(hub, b"abc", topic="files/5")
        await raw.until(b"c")
        for conn in (raw.headers["hub-connection-id"], sse.headers["hub-connection-id"]):
            status, _ = await hub.post("/disconnect", json={"conn": conn})
            assert status == 202
        # The SSE stream ends cleanly, after its `disconnect` event; the byte stream without the last
        # chunk, as a broken download does (curl exits 18), so that its client resumes.
        assert (await sse.end()).endswith(b"\n\n")
        with pytest.raises((asyncio.IncompleteReadError, EOFError, ConnectionError)):
            await raw.end()


async def test_a_byte_stream_no_position_could_resume_names_none(hub, broker_kind):
    await publish_bytes(hub, b"a", topic="many/a")
    await publish_bytes(hub, b"b", topic="many/b")
    # `earliest` over several topics: a topic trimmed before the read would refuse any pinned position.
    async with stream(hub, "many/a", "many/b", format="bytes", lastEventId="earliest") as raw:
        assert await raw.until(lambda body: len(body) >= 2) in (b"ab", b"ba")
        assert "hub-stream-start" not in raw.headers
    async with stream(hub, "many/*", format="bytes") as raw:
        # Live over a pattern: one Redis or the memory broker orders it all by one counter; a cluster
        # spreads it over partitions, whose replay would not give the live order back.
        assert ("hub-stream-start" in raw.headers) == (broker_kind != "cluster")


async def test_a_resume_from_a_trimmed_history_is_refused_rather_than_shifted(hub_factory):
    hub = await hub_factory(history__max_events=3)
    await publish_bytes(hub, b"abc", topic="files/3")
    async with stream(hub, "files/3", format="bytes", lastEventId="earliest") as raw:
        start = raw.headers["hub-stream-start"]
        assert await raw.until(b"c") == b"abc"
    for piece in (b"d", b"e", b"f"):
        await publish_bytes(hub, piece, topic="files/3")
    # `abc` is gone: counting 2 bytes from the topic's new oldest event would skip `d` and `e`.
    async with stream(hub, "files/3", format="bytes", lastEventId=f"{start}:2") as raw:
        doc = await refusal(raw)
    assert (raw.status, doc["error"]["code"]) == (409, "history_lost")


@pytest.mark.parametrize("broker_kind", ["memory"])
async def test_a_hubs_own_stream_relayed_through_publish_stream_keeps_its_bytes(hub):
    await publish_bytes(hub, EVERY_BYTE, topic="in/1", event="frame")
    await hub.publish({"topic": "in/1", "data": "and text"})
    async with stream(hub, "in/1", lastEventId="earliest") as sse:
        body = await sse.until(b"and text\n\n")
    status, summary = await hub.post(
        "/publish/stream", params={"topic": "out/1"}, data=body, headers={"Content-Type": "text/event-stream"}
    )
    assert (status, summary["events"]) == (200, 2)
    async with hub.session.get(f"{hub.url}/topics/out/1/history") as resp:
        relayed = await resp.json()
    assert [(e["event"], e.get("encoding"), e["data"]) for e in relayed[:2]] == [
        ("frame", "base64", base64.b64encode(EVERY_BYTE).decode()),
        ("message", None, "and text"),
    ]


@pytest.mark.parametrize("broker_kind", ["redis"])
async def test_bytes_missed_while_the_fanout_was_down_are_caught_up_to_the_byte(
    hub_factory, redis_factory, monkeypatch
):
    import hub.brokers.transport.supervisor as supervisor

    monkeypatch.setattr(supervisor, "BACKOFF_MIN", 1.0)  # a wide window to publish into
    redis = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    hub = await hub_factory(redis.url, redis__connect_timeout=0.5)
    pieces = [bytes([n]) * 1000 + b"\n\x00" for n in range(6)]
    async with stream(hub, "files/4", format="bytes") as raw, hub.subscribe("files/4") as sse:
        await settled(lambda: hub.fanout.connections == 2)
        await publish_bytes(hub, pieces[0], topic="files/4")
        await raw.until(lambda body: len(body) >= len(pieces[0]))
        # The hub's subscriber connection cut: what is published meanwhile comes back by catch-up, read
        # from Redis's history (the envelopes' raw bytes parsed there, not off pub/sub).
        kill_subscriber_connection(hub, redis)
        await settled(lambda: not hub.fanout.broker.ready)
        for piece in pieces[1:3]:
            await publish_bytes(hub, piece, topic="files/4")
        await settled(lambda: hub.fanout.broker.ready)
        # Then Redis itself restarts, from its append-only file: nothing is lost, nothing comes twice.
        redis.kill()
        await settled(lambda: not hub.fanout.broker.ready)
        redis.start()
        await settled(lambda: hub.fanout.broker.ready)
        for piece in pieces[3:]:
            await publish_bytes(hub, piece, topic="files/4")
        expected = b"".join(pieces)
        assert await raw.until(lambda body: len(body) >= len(expected)) == expected
        events = await sse.take(6)
    assert [base64.b64decode(e.data) for e in events] == pieces
    assert {e.event for e in events} == {"binary"}
