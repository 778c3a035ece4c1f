"""No field, line or header injection through anything a client sends: topics, event names, ids, retry
values, data. Each hostile value is sent through the live server; the raw stream is then read line by
line, and must hold nothing but the hub's own fields and the one event published honestly."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.ids import names_event

FIELDS = ("id", "event", "data", "retry")
# Every hostile value tries to smuggle this in. Upper case: ids are lower case and digits, and an epoch
# such as "pwnox3" once put "pwn" in a stream that nothing had been smuggled into.
PWN = "PWN"

HOSTILE_PUBLISHES: list[tuple[str, dict[str, Any]]] = [
    ("topic-lf", {"topic": f"t\nevent: {PWN}", "data": "x"}),
    ("topic-cr", {"topic": f"t\revent: {PWN}", "data": "x"}),
    ("topic-nul", {"topic": f"t\x00{PWN}", "data": "x"}),
    ("topic-nel", {"topic": f"t\x85event: {PWN}", "data": "x"}),
    ("topic-line-separator", {"topic": f"t\u2028event: {PWN}", "data": "x"}),
    ("topics-lf", {"topics": ["t", f"u\ndata: {PWN}"], "data": "x"}),
    ("event-lf", {"topic": "t", "event": f"x\ndata: {PWN}", "data": "x"}),
    ("event-cr", {"topic": "t", "event": f"x\rdata: {PWN}", "data": "x"}),
    ("event-crlf", {"topic": "t", "event": f"x\r\ndata: {PWN}", "data": "x"}),
    ("event-nul", {"topic": "t", "event": f"x\x00{PWN}", "data": "x"}),
    ("event-paragraph-separator", {"topic": "t", "event": f"x\u2029data: {PWN}", "data": "x"}),
    ("event-reserved-reset", {"topic": "t", "event": "reset", "data": PWN}),
    ("retry-string", {"topic": "t", "retry": f"1\ndata: {PWN}", "data": "x"}),
    ("retry-negative", {"topic": "t", "retry": -1, "data": PWN}),
    ("retry-float", {"topic": "t", "retry": 1.5, "data": PWN}),
    ("retry-bool", {"topic": "t", "retry": True, "data": PWN}),
    ("retry-huge", {"topic": "t", "retry": 10**30, "data": PWN}),
    ("id-field", {"topic": "t", "id": f"1\ndata: {PWN}", "data": "x"}),
]


def lines_of(raw: bytes) -> list[str]:
    text = raw.decode()
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def assert_only_hub_fields(raw: bytes) -> None:
    for line in lines_of(raw):
        if not line or line.startswith(":"):
            continue
        name = line.partition(":")[0]
        assert name in FIELDS, f"unexpected field in {line!r}"
        if name != "data":
            assert PWN not in line, line


@pytest.mark.parametrize(("body"), [b for _, b in HOSTILE_PUBLISHES], ids=[n for n, _ in HOSTILE_PUBLISHES])
async def test_hostile_publish_is_refused_and_writes_nothing(hub, body):
    async with hub.subscribe("t", "**") as stream:
        async with hub.session.post(hub.url + "/publish", json=body) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] in {
                "invalid_topic",
                "invalid_event_name",
                "reserved_event_name",
                "invalid_field",
                "unknown_field",
            }
            assert PWN not in "".join(f"{k}{v}" for k, v in resp.headers.items())
        marker = await hub.publish({"topic": "t", "data": "marker"})
        event = await stream.next_event()
        assert (event.event, event.data) == ("message", "marker")
        assert names_event(event.id, marker["id"]), (event.id, marker["id"])
        assert PWN not in stream.raw.decode()
        assert_only_hub_fields(bytes(stream.raw))


async def test_data_that_looks_like_fields_stays_data(hub):
    sneaky = f"x\r\nevent: {PWN}\rid: 0\n\ndata: {PWN}\r\rretry: 1\n: comment"
    async with hub.subscribe("t") as stream:
        doc = await hub.publish({"topic": "t", "data": sneaky})
        marker = await hub.publish({"topic": "t", "data": "marker"})
        first, second = await stream.take(2)
    assert (first.id, first.event) == (doc["id"], "message")
    assert first.data.split("\n") == [
        "x",
        f"event: {PWN}",
        "id: 0",
        "",
        f"data: {PWN}",
        "",
        "retry: 1",
        ": comment",
    ]
    assert second.id == marker["id"]
    assert_only_hub_fields(bytes(stream.raw))


@pytest.mark.parametrize(
    "last_event_id",
    [f"1\r\nevent: {PWN}\r\ndata: x", f"a-1\nid: {PWN}", f"\rretry: 1\r{PWN}", f"{PWN}\x00", "é" * 500],
)
async def test_hostile_last_event_id_is_never_echoed(hub, last_event_id):
    async with hub.subscribe("t", lastEventId=last_event_id) as stream:
        reset = await stream.next_event()
        assert reset.event == "reset"
        marker = await hub.publish({"topic": "t", "data": "marker"})
        assert (await stream.next_event()).id == marker["id"]
    assert PWN not in stream.raw.decode()
    assert_only_hub_fields(bytes(stream.raw))


@pytest.mark.parametrize(
    "params",
    [
        [("topic", f"t\r\nX-Injected: {PWN}")],
        [("topic", "t"), ("heartbeat", f"event\r\nX-Injected: {PWN}")],
        [("topic", "t"), ("format", f"sse\r\nX-Injected: {PWN}")],
    ],
)
async def test_no_header_injection_through_the_query(hub, params):
    async with hub.session.get(hub.url + "/events", params=params) as resp:
        assert resp.status == 400
        assert "X-Injected" not in resp.headers
        assert all(PWN not in v for v in resp.headers.values())
