"""Job progress and the streamed publish relay over real HTTP, against both brokers."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hub.http.auth import mint
from tests.support.ids import names_event

SECRET = "streams-secret-of-at-least-32-bytes"


async def test_progress_is_retained_so_a_late_subscriber_sees_where_the_job_stands(hub):
    status, doc = await hub.post(
        "/progress/build-7", json={"current": 3, "total": 12, "message": "compiling"}
    )
    assert (status, doc["topic"]) == (200, "jobs/build-7")
    async with hub.subscribe("jobs/build-7") as late:
        state = await late.next_event()
        assert (state.id, state.event) == (doc["id"], "progress")
        assert orjson.loads(state.data) == {
            "current": 3,
            "total": 12,
            "percent": 25.0,
            "message": "compiling",
        }
        await hub.post("/progress/build-7", json={"current": 12, "total": 12})
        await hub.post("/progress/build-7", json={"done": True, "result": {"artifact": "a.tar"}})
        more = await late.take(2)
        assert [(e.event, orjson.loads(e.data)["percent"]) for e in more] == [
            ("progress", 100.0),
            ("done", 100.0),
        ]
        assert orjson.loads(more[1].data)["result"] == {"artifact": "a.tar"}
    async with hub.subscribe("jobs/*") as later:
        assert (await later.next_event()).event == "done"  # only the current state, not the history
    await hub.post("/progress/deploy", json={"error": "disk full"})
    async with hub.subscribe("jobs/deploy") as failed:
        event = await failed.next_event()
        assert (event.event, orjson.loads(event.data)) == ("error", {"error": "disk full"})


@pytest.mark.parametrize(
    "body",
    [
        {"current": -1, "total": 10},
        {"current": 1, "total": 0},
        {"current": True},
        {"current": "3"},
        {"current": 1, "percent": 50},
        {"done": False},
        {"error": ""},
        {"error": "x", "current": 1},
        [1, 2],
    ],
)
async def test_bad_progress_is_refused_and_publishes_nothing(hub, body):
    async with hub.subscribe("jobs/j") as stream:
        status, doc = await hub.post("/progress/j", json=body)
        assert status == 400, doc
        marker = await hub.publish({"topic": "jobs/j", "data": "marker"})
        assert (await stream.next_event()).id == marker["id"]
    for job in ("a*b", "a%0Ab", "a%20b"):  # found by the fuzz: a line break once made this a 404
        status, doc = await hub.post(f"/progress/{job}", json={"current": 1})
        assert (status, doc["error"]["code"]) == (400, "invalid_topic")


async def test_progress_needs_publish_rights_on_the_job_topic(hub_factory):
    hub = await hub_factory(auth__jwt_secret=SECRET)
    mine = {"Authorization": "Bearer " + mint(publish=["jobs/mine"], secret=SECRET)}
    status, _ = await hub.post("/progress/mine", json={"current": 1}, headers=mine)
    assert status == 200
    status, doc = await hub.post("/progress/other", json={"current": 1}, headers=mine)
    assert (status, doc["error"]["code"]) == (403, "topic_forbidden")


async def test_streamed_text_is_relayed_before_the_body_ends(hub):
    release = asyncio.Event()

    async def body():
        yield b"Hel"
        await release.wait()  # the request is still being written
        yield "lo, wörld".encode()

    async with hub.subscribe("llm/1") as stream:
        posting = asyncio.create_task(
            hub.post(
                "/publish/stream",
                params={"topic": "llm/1", "event": "token"},
                data=body(),
                headers={"Content-Type": "text/plain"},
            )
        )
        first = await stream.next_event()
        assert (first.event, first.data) == ("token", "Hel")
        assert not posting.done()
        release.set()
        status, doc = await posting
        assert status == 200
        rest = await stream.take(2)
    assert "".join(e.data for e in [first, *rest[:-1]]) == "Hello, wörld"
    assert (rest[-1].event, orjson.loads(rest[-1].data)) == ("done", {"events": doc["events"]})
    assert doc["events"] == 2
    assert rest[-1].id == doc["done_id"]


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (
            "application/x-ndjson",
            b'{"data": 1}\n{"topic": "feed/b", "data": 2, "event": "x"}\n{"data": 3}',
            [("message", "1"), ("x", "2"), ("message", "3")],
        ),
        (
            "text/event-stream",
            b'data: {"delta": "a"}\r\n\r\nevent: usage\r\ndata: 7\r\n\r\ndata: [DONE]\r\n\r\n',
            [("message", '{"delta": "a"}'), ("usage", "7"), ("message", "[DONE]")],
        ),
    ],
    ids=["ndjson", "sse"],
)
async def test_streamed_ndjson_and_sse_bodies(hub, content_type, body, expected):
    async with hub.subscribe("feed/*") as stream:
        status, doc = await hub.post(
            "/publish/stream", params={"topic": "feed/a"}, data=body, headers={"Content-Type": content_type}
        )
        assert (status, doc["events"]) == (200, 3)
        got = await stream.take(4)
    pairs = [(e.event, e.data) for e in got]
    want = [*expected, ("done", '{"events":3}')]
    if hub.fanout.broker.name == "redis-cluster":
        # feed/b may hash to another partition than feed/a, and partitions have no order between
        # them (README, Redis Cluster): feed/a's events keep theirs, feed/b's comes somewhere.
        other = ("x", "2")
        assert sorted(pairs) == sorted(want)
        assert [e for e in pairs if e != other] == [e for e in want if e != other]
    else:
        assert pairs == want


async def test_a_broken_body_ends_with_an_error_event(hub):
    async with hub.subscribe("llm/2") as stream:
        _, writer = await asyncio.open_connection("127.0.0.1", hub.running.port)
        writer.write(
            b"POST /publish/stream?topic=llm/2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        await writer.drain()
        assert (await stream.next_event()).data == "first"
        writer.close()  # mid-body
        await writer.wait_closed()
        error = await stream.next_event()
    assert (error.event, orjson.loads(error.data)) == (
        "error",
        {"error": "the request body broke off", "events": 1},
    )


async def test_a_bad_line_midway_is_a_400_and_an_error_event_after_what_came_before(hub):
    async with hub.subscribe("feed/d") as stream:
        status, doc = await hub.post(
            "/publish/stream",
            params={"topic": "feed/d"},
            data=b'{"data": "ok"}\n{oops\n{"data": "never"}\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert (status, doc["error"]["code"]) == (400, "invalid_json")
        got = await stream.take(2)
    assert [e.event for e in got] == ["message", "error"]
    assert orjson.loads(got[1].data)["events"] == 1


@pytest.mark.parametrize(
    ("params", "content_type", "status", "code"),
    [
        ({}, "text/plain", 400, "missing_topic"),
        ({"topic": "a b"}, "text/plain", 400, "invalid_topic"),
        ({"topic": "t", "event": "reset"}, "text/plain", 400, "reserved_event_name"),
        ({"topic": "t"}, "application/json", 415, "unsupported_media_type"),
    ],
)
async def test_a_refused_stream_publishes_nothing(hub, params, content_type, status, code):
    async with hub.subscribe("**") as stream:
        got_status, doc = await hub.post(
            "/publish/stream", params=params, data=b"x", headers={"Content-Type": content_type}
        )
        assert (got_status, doc["error"]["code"]) == (status, code)
        marker = await hub.publish({"topic": "t", "data": "marker"})
        event = await stream.next_event()
        assert event.data == "marker"
        assert names_event(event.id, marker["id"]), (event.id, marker["id"])


async def test_a_stream_over_the_rate_is_slowed_not_cut(hub_factory):
    hub = await hub_factory(limits__publish_rate=20.0, limits__publish_burst=2, limits__max_batch=2)
    lines = b"".join(b'{"data": %d}\n' % i for i in range(8))
    async with hub.subscribe("slow") as stream:
        started = asyncio.get_running_loop().time()
        status, doc = await hub.post(
            "/publish/stream",
            params={"topic": "slow"},
            data=lines,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert (status, doc["events"]) == (200, 8)
        got = await stream.take(9)
    assert [e.data for e in got[:8]] == [str(i) for i in range(8)]
    assert asyncio.get_running_loop().time() - started >= 0.25  # 6 events over the burst at 20/s


def nested_json(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


@pytest.mark.parametrize("depth", [64, 253], ids=["past-the-bound", "orjson-limit"])
async def test_progress_with_a_result_nested_too_deep_is_a_400_and_stores_nothing(hub, depth):
    # 253 in the result is 254 in the update: once a 500 on every broker (orjson cannot encode it)
    async with hub.subscribe("jobs/**") as stream:
        status, doc = await hub.post(
            "/progress/poison",
            data=b'{"done": true, "result": ' + nested_json(depth) + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert (status, doc["error"]["code"]) == (400, "data_too_deep"), doc
        async with hub.session.get(hub.url + "/topics/jobs/poison/history") as resp:
            assert (resp.status, await resp.json()) == (200, [])
        marker = await hub.publish({"topic": "jobs/poison", "data": "marker"})
        event = await stream.next_event()
        assert names_event(event.id, marker["id"]), (event.id, marker["id"])


async def test_a_streamed_line_nested_too_deep_is_refused_and_never_published(hub):
    async with hub.subscribe("feed/deep") as stream:
        status, doc = await hub.post(
            "/publish/stream",
            params={"topic": "feed/deep"},
            data=b'{"data": "ok"}\n{"data": ' + nested_json(254) + b'}\n{"data": "never"}\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert (status, doc["error"]["code"]) == (400, "data_too_deep")
        got = await stream.take(2)
    assert [(e.event, e.data) for e in got] == [("message", "ok"), ("error", got[1].data)]
    error = orjson.loads(got[1].data)
    assert error["events"] == 1
    async with hub.session.get(hub.url + "/topics/feed/deep/history") as resp:
        assert [e["data"] for e in await resp.json()] == ["ok", error]
