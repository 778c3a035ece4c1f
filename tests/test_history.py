"""`GET /topics/{topic}/history` over real HTTP, against both brokers."""

from __future__ import annotations

import json
import logging
import socket
import tracemalloc
from urllib.parse import quote

import pytest
from yarl import URL

from hub.http.auth import mint
from hub.http.state import GUARD
from tests.support.ids import plain, seq_in, vector
from tests.support.raw_stream import open_stream
from tests.support.waiting import settled

SECRET = "history-secret-of-at-least-32-bytes!"


def history_url(hub, topic: str) -> URL:
    return URL(hub.url + "/topics/" + quote(topic, safe="/") + "/history", encoded=True)


async def get_history(hub, topic: str, expect: int = 200, headers=None, **params: str):
    async with hub.session.get(history_url(hub, topic), params=params, headers=headers) as resp:
        body = await resp.read()
        assert resp.status == expect, body
        return resp, body


async def test_history_is_a_json_array_of_the_topics_events_oldest_first(hub):
    ids = []
    for i, data in enumerate(["a\nb", {"n": 1}, None, "é🎉"]):
        doc = await hub.publish({"topic": "jobs/1", "data": data, "event": "step" if i == 1 else None})
        ids.append(doc["id"])
    await hub.publish({"topics": ["jobs/2", "jobs/1"], "data": "both"})
    await hub.publish({"topic": "jobs/2", "data": "other topic"})
    resp, body = await get_history(hub, "jobs/1")
    assert resp.content_type == "application/json"
    events = json.loads(body)
    assert [e["data"] for e in events] == ["a\nb", {"n": 1}, None, "é🎉", "both"]
    assert [e["id"] for e in events][:4] == ids
    assert {e["topic"] for e in events} == {"jobs/1"}
    assert [e["event"] for e in events][:2] == ["message", "step"]


async def test_after_and_limit_page_through_the_history(hub):
    ids = (await hub.publish([{"topic": "p", "data": i} for i in range(10)]))["ids"]
    _, body = await get_history(hub, "p", after=ids[2], limit="3")
    assert [e["id"] for e in json.loads(body)] == ids[3:6]
    _, body = await get_history(hub, "p", after=ids[-1])
    assert json.loads(body) == []
    _, body = await get_history(hub, "p", limit="100")
    assert len(json.loads(body)) == 10


async def test_a_topic_without_history_is_an_empty_array(hub):
    _, body = await get_history(hub, "never/published")
    assert json.loads(body) == []


async def test_history_crosses_broker_pages_in_order_exactly_once(hub_factory):
    hub = await hub_factory(history__max_events=2500)
    ids = []
    for start in range(0, 2600, 1000):
        ids += (await hub.publish([{"topic": "long", "data": i} for i in range(start, start + 1000)]))["ids"]
    _, body = await get_history(hub, "long")
    assert [e["id"] for e in json.loads(body)] == ids[-2500:]
    _, body = await get_history(hub, "long", after=ids[-2500], limit="1500")
    assert [e["id"] for e in json.loads(body)] == ids[-2499:-999]


async def test_ndjson_download_is_one_line_per_event_with_a_filename(hub):
    ids = (await hub.publish([{"topic": "logs/app", "data": f"line {i}\n"} for i in range(3)]))["ids"]
    resp, body = await get_history(hub, "logs/app", format="ndjson")
    assert resp.content_type == "application/x-ndjson"
    assert resp.headers["Content-Disposition"] == (
        "attachment; filename=\"logs_app.ndjson\"; filename*=UTF-8''logs_app.ndjson"
    )
    lines = body.split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line)["id"] for line in lines[:-1]] == ids


async def test_a_topic_cannot_inject_into_the_download_headers(hub):
    topic = 'x";a=b\\;é/..'
    await hub.publish({"topic": topic, "data": 1})
    resp, body = await get_history(hub, topic, format="ndjson")
    assert json.loads(body)["topic"] == topic
    disposition = resp.headers["Content-Disposition"]
    assert disposition == (
        "attachment; filename=\"x__a_b____...ndjson\"; filename*=UTF-8''x%22%3Ba%3Db%5C%3B%C3%A9_...ndjson"
    )
    # A line break in the path is no topic at all: refused before any header is written.
    injected = "/topics/x%0D%0ASet-Cookie:%20a=b/history"
    async with open_stream(hub.url, injected, [("format", "ndjson")]) as raw:
        assert raw.status == 400
        assert "set-cookie" not in raw.headers
        assert raw.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("topic", "params"),
    [
        ("a/*", {}),
        ("a/**", {}),
        ("a", {"after": "not-an-id"}),
        ("a", {"after": "abc-1-"}),
        ("a", {"limit": "0"}),
        ("a", {"limit": "-1"}),
        ("a", {"limit": "1.5"}),
        ("a", {"limit": "99999999999"}),
        ("a", {"limit": "\u0661"}),  # an Arabic-Indic 1: a digit to str.isdigit, not to us
        ("a", {"format": "xml"}),
    ],
)
async def test_bad_topic_after_limit_or_format_is_a_json_400(hub, topic, params):
    _, body = await get_history(hub, topic, expect=400, **params)
    assert json.loads(body)["error"]["code"] in ("invalid_topic", "invalid_selector", "invalid_parameter")


def id_like(published_id: str, broker_kind: str, *, seq: int | str, other_history: bool = False) -> str:
    """An id of the form `published_id` has (a one-topic event's) at another seq; with `other_history`,
    from a history that is gone (one Redis: another epoch; a cluster: another digest of the epochs)."""
    if broker_kind == "cluster":
        head, seqs = vector(published_id)
        (p,) = seqs  # the event's own partition
    else:
        head, _ = plain(published_id)
    if other_history:
        head = ("a" if head[0] != "a" else "b") + head[1:]
    return f"{head}_{p}.{seq}" if broker_kind == "cluster" else f"{head}-{seq}"


async def test_an_id_from_another_or_a_future_history_is_a_409(hub, broker_kind):
    doc = await hub.publish({"topic": "e", "data": 1})
    seq = seq_in(doc["id"])
    for after in (
        id_like(doc["id"], broker_kind, seq=1, other_history=True),
        id_like(doc["id"], broker_kind, seq=seq + 1000),
    ):
        _, body = await get_history(hub, "e", expect=409, after=after)
        assert json.loads(body)["error"]["code"] == "history_lost"
    _, body = await get_history(hub, "e", after=id_like(doc["id"], broker_kind, seq=0))
    assert [e["id"] for e in json.loads(body)] == [doc["id"]]


async def test_history_needs_the_grant_to_subscribe_to_the_topic(hub_factory):
    hub = await hub_factory(auth__jwt_secret=SECRET, auth__public_topics=("public/**",))
    admin = {"Authorization": "Bearer " + mint(publish=["**"], subscribe=["**"], secret=SECRET)}
    reader = {"Authorization": "Bearer " + mint(subscribe=["a/*"], secret=SECRET)}
    for topic in ("a/1", "b/1", "public/x"):
        await hub.publish({"topic": topic, "data": topic}, headers=admin)
    _, body = await get_history(hub, "a/1", headers=reader)
    assert [e["data"] for e in json.loads(body)] == ["a/1"]
    _, body = await get_history(hub, "b/1", expect=403, headers=reader)
    assert json.loads(body)["error"]["code"]
    await get_history(hub, "a/1", expect=401)
    _, body = await get_history(hub, "public/x")
    assert [e["data"] for e in json.loads(body)] == ["public/x"]


@pytest.mark.timeout(180)
async def test_a_large_history_streams_in_order_without_being_held_in_memory(hub_factory):
    total = 50_000
    hub = await hub_factory(history__max_events=total)
    payload = "x" * 300
    for _ in range(0, total, 1000):
        await hub.publish([{"topic": "big", "data": payload}] * 1000)

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        count = size = 0
        last_seq = 0
        async with hub.session.get(history_url(hub, "big")) as resp:
            assert resp.status == 200
            # one event per line; the array's brackets on lines of their own
            async for line in resp.content:
                size += len(line)
                line = line.strip().rstrip(b",")
                if line in (b"[", b"]", b""):
                    continue
                event = json.loads(line)
                seq = seq_in(event["id"])
                assert seq > last_seq  # in order, and each once
                last_seq = seq
                count += 1
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert count == total
    assert size > 15_000_000
    # The whole history as JSON is over 15 MB; server and client together held about one broker page
    # at a time (~2.6 MB on Redis, where the client library's parse of a page costs the most).
    assert peak < size / 5, (peak, size)


async def test_an_after_id_past_any_possible_sequence_is_a_400_not_a_broker_error(hub, broker_kind):
    doc = await hub.publish({"topic": "e", "data": 1})
    # Past 2**53, which no counter reaches: not an id of the hub's, refused before any broker read.
    _, body = await get_history(hub, "e", expect=400, after=id_like(doc["id"], broker_kind, seq=2**53))
    assert json.loads(body)["error"]["code"] == "invalid_parameter"


async def test_an_after_id_from_the_future_of_the_counter_is_a_409(hub, broker_kind):
    doc = await hub.publish({"topic": "e", "data": 1})
    _, body = await get_history(hub, "e", expect=409, after=id_like(doc["id"], broker_kind, seq=2**53 - 1))
    assert json.loads(body)["error"]["code"] == "history_lost"


async def test_a_client_leaving_mid_download_is_no_error_and_the_hub_serves_on(hub_factory, caplog):
    hub = await hub_factory(history__max_events=20_000)
    for _ in range(40):
        await hub.publish([{"topic": "big", "data": "y" * 1000}] * 500)
    server = hub.running.runner.server
    before = len(server.connections)  # the publishing session's keep-alive connection
    async with open_stream(hub.url, "/topics/big/history", [("format", "ndjson")]) as raw:
        assert raw.status == 200
        await raw.until(lambda body: len(body) > 100_000)
    # The server notices at its next write; then the download must be gone quietly.
    await settled(lambda: len(server.connections) == before)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    _, body = await get_history(hub, "big", limit="2")
    assert len(json.loads(body)) == 2


async def test_a_history_download_holds_a_place_among_the_clients_streams(hub_factory):
    hub = await hub_factory(limits__max_connections_per_ip=1)
    await hub.publish({"topic": "h/limit", "data": 1})
    async with hub.subscribe("h/limit"), hub.session.get(hub.url + "/topics/h/limit/history") as resp:
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == "too_many_connections"
    await settled(lambda: hub.running.runner.app[GUARD].connections.open == 0)
    async with hub.session.get(hub.url + "/topics/h/limit/history") as resp:
        assert resp.status == 200
        assert len(await resp.json()) == 1
    assert hub.running.runner.app[GUARD].connections.open == 0  # and gives it back


@pytest.mark.parametrize("broker_kind", ["memory"])
async def test_a_history_download_the_client_does_not_read_is_cut_off(hub_factory):
    # Nothing bounded it: the handler waited on the socket for ever, holding its stream place and pages.
    hub = await hub_factory(sse__max_buffer=64 * 1024, sse__drain_timeout=0.5, history__max_events=200)
    for _ in range(25):
        await hub.publish([{"topic": "unread", "data": "x" * 100_000}] * 8)
    connections = hub.running.runner.app[GUARD].connections
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", hub.running.port))
    try:
        sock.sendall(b"GET /topics/unread/history?limit=200 HTTP/1.1\r\nHost: x\r\n\r\n")
        await settled(lambda: connections.open == 1)
        await settled(lambda: connections.open == 0, timeout=8)
    finally:
        sock.close()
