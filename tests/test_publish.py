"""Publishing over real HTTP, against both brokers: what is accepted arrives, what is refused changes
nothing."""

from __future__ import annotations

import asyncio
import io
import itertools
import re

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.ids import advances, names_event
from tests.support.raw_stream import open_stream
from tests.support.waiting import settled


async def test_form_publish_like_mercure(hub):
    async with hub.subscribe("a", "b") as stream:
        status, doc = await hub.post(
            "/publish", data={"topic": ["a", "b"], "data": "hi there", "type": "note"}
        )
        assert status == 200
        event = await stream.next_event()
        assert (event.event, event.data) == ("note", "hi there")
        assert names_event(event.id, doc["id"]), (event.id, doc["id"])


async def test_batch_answers_ids_in_order(hub, broker_kind):
    async with hub.subscribe("b/*") as stream:
        doc = await hub.publish([{"topic": f"b/{i}", "data": i} for i in range(5)])
        got = await stream.take(5)
        arrived = [e.id for e in got]
        assert all(advances(a, b) for a, b in itertools.pairwise(arrived)), arrived  # each once
        if broker_kind == "cluster":
            # b/0..b/4 fall in different partitions, which no counter orders against each other: the
            # events may arrive in any order, but the response's ids must be in the batch's order.
            got.sort(key=lambda e: int(e.data))
        assert [e.data for e in got] == ["0", "1", "2", "3", "4"]
        assert all(names_event(e.id, doc["ids"][i]) for i, e in enumerate(got)), ([e.id for e in got], doc)


BAD = [
    (
        {
            "data": b'{"topic":"t","event":"a\\nb","data":"x"}',
            "headers": {"Content-Type": "application/json"},
        },
        400,
    ),
    (
        {
            "data": b'[{"topic":"t","data":"ok"},{"topic":"t t"}]',
            "headers": {"Content-Type": "application/json"},
        },
        400,
    ),
    ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
    ({"data": b"topic=t&data=x", "headers": {"Content-Type": "text/plain"}}, 415),
    ({"json": {"topic": "t", "data": "x" * 300_000}}, 413),
    ({"data": b"x" * 2_000_000, "headers": {"Content-Type": "application/json"}}, 413),
]


@pytest.mark.parametrize(("kwargs", "status"), BAD)
async def test_refused_publish_is_a_json_error_and_changes_nothing(hub, kwargs, status):
    async with hub.subscribe("t", "**") as stream:
        if len(kwargs.get("data", b"")) > 1_000_000:  # big bodies go as a stream, not in one write
            kwargs = {**kwargs, "data": io.BytesIO(kwargs["data"])}
        got_status, doc = await hub.post("/publish", **kwargs)
        assert got_status == status
        assert set(doc["error"]) == {"code", "message"}
        marker = await hub.publish({"topic": "t", "data": "marker"})
        event = await stream.next_event()
        assert event.data == "marker"
        assert names_event(event.id, marker["id"]), (event.id, marker["id"])


async def test_content_type_that_is_not_utf8_is_a_415_not_a_500(hub):
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.running.port)
    writer.write(
        b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: \xacwM/\xe2Y\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 415 "), head
    assert orjson.loads(body)["error"]["code"] == "unsupported_media_type"


async def test_chunked_body_over_the_limit_is_413(hub):
    async def body():
        for _ in range(40):
            yield b"x" * 65536

    status, doc = await hub.post("/publish", data=body(), headers={"Content-Type": "application/json"})
    assert status == 413
    assert doc["error"]["code"] == "payload_too_large"


texts = st.lists(
    st.one_of(st.text(), st.sampled_from(["\r", "\n", "\r\n", "\0", "🎉", "\ndata: x", "\rid: 1"])),
    max_size=6,
).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=texts)
async def test_any_data_round_trips_through_the_hub_to_an_independent_parser(hub, data):
    async with (
        httpx.AsyncClient(base_url=hub.url, timeout=10) as client,
        aconnect_sse(client, "GET", "/events", params={"topic": "prop"}) as source,
    ):
        events = source.aiter_sse()
        await hub.publish({"topic": "prop", "data": data, "event": "p"})
        async for event in events:
            if event.event == "p":
                break
    assert event.data == re.sub(r"\r\n|\r|\n", "\n", data)


fuzz_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["topic", "topics", "data", "event", "retry", "retain", "x"]), inner, max_size=4
        )
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=100), fuzz_values.map(lambda v: httpx._content.json_dumps(v).encode())),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "",
            "application/json; charset=latin-1",
        ]
    ),
)
async def test_fuzzed_publish_never_answers_5xx(hub, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    async with hub.session.post(hub.url + "/publish", data=body, headers=headers) as resp:
        assert resp.status in (200, 400, 413, 415), await resp.text()
        doc = await resp.json()
        assert ("id" in doc or "ids" in doc) if resp.status == 200 else set(doc) == {"error"}


def nested_json(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


# orjson parses this, but cannot encode it inside an envelope: once, the memory broker stored it,
# answered 500, sent it to SSE subscribers only, and its history answered a bare `[`
POISON = b'{"topic": "public/poison", "data": ' + nested_json(254) + b"}"


@pytest.mark.parametrize(
    "body",
    [
        POISON,
        b'{"topic": "public/poison", "data": ' + nested_json(65) + b"}",
        b'[{"topic": "public/poison", "data": 1}, {"topic": "public/a", "data": ' + nested_json(65) + b"}]",
    ],
    ids=["poison-254", "past-the-bound", "batch"],
)
async def test_data_nested_too_deep_is_a_400_and_nothing_is_stored_or_sent(hub, body):
    async with (
        hub.subscribe("public/**") as sse,
        open_stream(hub.url, "/events", [("topic", "public/**"), ("format", "ndjson")]) as ndjson,
    ):
        await settled(lambda: hub.fanout.connections == 2)
        status, doc = await hub.post("/publish", data=body, headers={"Content-Type": "application/json"})
        assert (status, doc["error"]["code"]) == (400, "data_too_deep"), doc
        async with hub.session.get(hub.url + "/topics/public/poison/history") as resp:
            assert (resp.status, await resp.json()) == (200, [])
        marker = await hub.publish({"topic": "public/poison", "data": "marker"})
        event = await sse.next_event()
        assert names_event(event.id, marker["id"]), (event.id, marker["id"])
        (line,) = await ndjson.lines(1)
        assert orjson.loads(line)["data"] == "marker"
