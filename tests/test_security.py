"""Auth, CORS, limits and log redaction over real HTTP, against both brokers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp
import pytest
import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.http.auth import mint
from hub.http.state import GUARD
from hub.wire.topics import Selector
from tests.support.ids import names_event
from tests.support.sse_reader import SseStream
from tests.support.waiting import settled

SECRET = "test-secret-of-at-least-32-bytes!"
PUBLIC = "pub/**"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def secured(hub_factory):
    return await hub_factory(
        auth__jwt_secret=SECRET, auth__public_topics=(PUBLIC,), sse__heartbeat_interval=0.2
    )


async def status_of(hub, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """Status, JSON body (or None for a stream) and headers of one request."""
    async with hub.session.request(method, hub.url + path, **kwargs) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json(), resp.headers
        return resp.status, None, resp.headers


async def test_token_from_header_cookie_or_query(secured):
    token = mint(subscribe=["users/42/**"], publish=["users/42/*"], secret=SECRET)
    url = secured.url + "/events"
    ways = [
        {"headers": bearer(token)},
        {"cookies": {"hub_token": token}},
        {"params_extra": {"token": token}},
    ]
    for way in ways:
        params = [("topic", "users/42/notifications"), *way.get("params_extra", {}).items()]
        # A session per way, so that a cookie does not ride along with the next way's request.
        async with (
            aiohttp.ClientSession(cookies=way.get("cookies")) as session,
            session.get(url, params=params, headers=way.get("headers")) as resp,
        ):
            assert resp.status == 200, await resp.text()
            stream = SseStream(resp)
            await stream.until_comment()
            doc = await secured.publish(
                {"topic": "users/42/notifications", "data": "hi"}, headers=bearer(token)
            )
            event = await stream.next_event()
            assert event.data == "hi"
            assert names_event(event.id, doc["id"]), (event.id, doc["id"])


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({}, 401, "token_required"),
        ({"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}, 401, "invalid_token"),
        ({"headers": bearer("not-a-token")}, 401, "invalid_token"),
        ({"headers": bearer(mint(subscribe=["users/42/**"], secret="x" * 40))}, 401, "invalid_token"),
        ({"headers": bearer(mint(subscribe=["users/42/**"], ttl=-60, secret=SECRET))}, 401, "token_expired"),
        ({"headers": bearer(mint(subscribe=["users/43/**"], secret=SECRET))}, 403, "topic_forbidden"),
        ({"headers": bearer(mint(subscribe=["users/*"], secret=SECRET))}, 403, "topic_forbidden"),
    ],
)
async def test_subscribe_refusals(secured, kwargs, status, code):
    got, doc, headers = await status_of(
        secured, "GET", "/events", params={"topic": "users/42/notifications"}, **kwargs
    )
    assert (got, doc["error"]["code"]) == (status, code)
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert not secured.fanout._refs  # nothing was subscribed


async def test_public_topics_need_no_token_but_private_ones_in_the_same_request_do(secured):
    async with secured.subscribe("pub/news", "pub/*/x") as stream:
        doc = await secured.publish(
            {"topic": "pub/news", "data": 1}, headers=bearer(mint(publish=["pub/**"], secret=SECRET))
        )
        event = await stream.next_event()
        assert event.data == "1"
        assert names_event(event.id, doc["id"]), (event.id, doc["id"])
    got, doc, _ = await status_of(secured, "GET", "/events", params=[("topic", "pub/a"), ("topic", "b")])
    assert (got, doc["error"]["code"]) == (401, "token_required")
    # An invalid token is refused even for public topics: the client should know its token is bad.
    got, _, _ = await status_of(secured, "GET", "/events", params={"topic": "pub/a", "token": "bad"})
    assert got == 401


async def test_publish_refusals_publish_nothing(secured):
    admin = mint(subscribe=["**"], publish=["**"], secret=SECRET)
    async with secured.subscribe("**", headers=bearer(admin)) as stream:
        refusals = [
            ({}, 401, "token_required"),
            ({"headers": bearer("x.y.z")}, 401, "invalid_token"),
            ({"headers": bearer(mint(subscribe=["**"], secret=SECRET))}, 403, "topic_forbidden"),
            ({"headers": bearer(mint(publish=["news/*"], secret=SECRET))}, 403, "topic_forbidden"),
        ]
        for kwargs, status, code in refusals:
            # A batch with one topic outside the grant is refused whole.
            body = [{"topic": "news/a", "data": "no"}, {"topics": ["news/b", "other"], "data": "no"}]
            got, doc, _ = await status_of(secured, "POST", "/publish", json=body, **kwargs)
            assert (got, doc["error"]["code"]) == (status, code)
        marker = await secured.publish({"topic": "news/c", "data": "marker"}, headers=bearer(admin))
        event = await stream.next_event()
        assert event.data == "marker"
        assert names_event(event.id, marker["id"]), (event.id, marker["id"])


segment = st.sampled_from(["a", "b", "pub"])
topic_st = st.lists(segment, min_size=1, max_size=3).map("/".join)
selector_st = st.builds(
    lambda segs, tail: "/".join(segs + (["**"] if tail else [])) or "**",
    st.lists(st.sampled_from(["a", "b", "pub", "*"]), max_size=3),
    st.booleans(),
)
# Every topic of up to four segments, one deeper than any generated selector reaches, with a segment
# ("c") that no selector names: the real topic space is not limited to the selectors' alphabet.
ALL_TOPICS = ["/".join(p) for n in range(1, 5) for p in itertools.product(("a", "b", "c", "pub"), repeat=n)]


def sample_topic(selector: str) -> str:
    """A topic the selector matches."""
    return "/".join("a" if s == "*" else s for s in selector.split("/") if s != "**") or "a"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sub_grant=st.lists(selector_st, max_size=2),
    asked=st.lists(selector_st, min_size=1, max_size=2, unique=True),
    pub_grant=st.lists(selector_st, max_size=2),
    events=st.lists(st.lists(topic_st, min_size=1, max_size=2, unique=True), min_size=1, max_size=4),
)
async def test_no_subscriber_sees_and_no_publisher_sends_outside_its_token(
    secured, broker_kind, sub_grant, asked, pub_grant, events
):
    readable = [Selector.parse(s) for s in [*sub_grant, PUBLIC]]
    publishable = [Selector.parse(s) for s in pub_grant]
    admin = mint(subscribe=["**"], publish=["**"], secret=SECRET)
    tag = uuid.uuid4().hex[:8]
    params = [("topic", t) for t in asked]
    sub_headers = bearer(mint(subscribe=sub_grant, secret=SECRET))
    async with (
        secured.subscribe("**", headers=bearer(admin)) as everything,
        secured.session.get(secured.url + "/events", params=params, headers=sub_headers) as resp,
    ):
        # Refused when some asked selector is not within any single readable selector: reaches a topic
        # it does not. (Within the union alone is not enough: `*` and `*/*/**` do not grant `**`.)
        reaches_outside = any(
            all(any(a.matches(t) and not r.matches(t) for t in ALL_TOPICS) for r in readable)
            for a in map(Selector.parse, asked)
        )
        assert resp.status == (403 if reaches_outside else 200), await resp.text()
        stream = SseStream(resp)
        if resp.status == 200:
            await stream.until_comment()
        accepted: dict[str, list[str]] = {}
        for i, topics in enumerate(events):
            data = f"{tag}-{i}"
            status, _, _ = await status_of(
                secured,
                "POST",
                "/publish",
                json={"topics": topics, "data": data},
                headers=bearer(mint(publish=pub_grant, secret=SECRET)),
            )
            granted = all(any(p.matches(t) for p in publishable) for t in topics)
            assert status == (200 if granted else 403)
            if granted:
                accepted[data] = topics
        sentinel = f"{tag}-end"
        await secured.publish({"topic": sample_topic(asked[0]), "data": sentinel}, headers=bearer(admin))
        seen = [e.data for e in await _until(everything, sentinel, accepted)]
        # refused publishes reached no one; on a cluster, events of different partitions have no order
        assert _in_order(seen, broker_kind) == _in_order([*accepted, sentinel], broker_kind)
        if resp.status == 200:
            wanted = [
                d
                for d, ts in accepted.items()
                if any(Selector.parse(s).matches(t) for s in asked for t in ts)
            ]
            got = [e.data for e in await _until(stream, sentinel, wanted) if e.data != sentinel]
            for data in got:
                assert any(r.matches(t) for r in readable for t in accepted[data]), (data, accepted[data])
            assert _in_order(got, broker_kind) == _in_order(wanted, broker_kind)


async def _until(stream: SseStream, data: str, expected: Iterable[str] = ()) -> list[Any]:
    """Events up to `data`, and past it until every expected one is in (on a cluster a later event of
    another partition can overtake an earlier one)."""
    out = []
    need = set(expected)
    ended = False
    while True:
        event = await stream.next_event()
        out.append(event)
        ended = ended or event.data == data
        if ended and need <= {e.data for e in out}:
            return out


def _in_order(items: list[str], broker_kind: str) -> list[str]:
    return sorted(items) if broker_kind == "cluster" else items


async def test_cors_preflight_and_stream_headers(hub_factory):
    hub = await hub_factory(cors__origins=("https://app.example",), cors__allow_credentials=True)
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    status, _, headers = await status_of(hub, "OPTIONS", "/publish", headers=preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
    status, doc, headers = await status_of(
        hub, "OPTIONS", "/publish", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert (status, doc["error"]["code"]) == (403, "origin_forbidden")
    assert "Access-Control-Allow-Origin" not in headers
    status, _, _ = await status_of(hub, "OPTIONS", "/nowhere", headers=preflight)
    assert status == 404
    async with hub.subscribe("t", headers={"Origin": "https://app.example"}) as stream:
        assert stream.response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert stream.response.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in stream.response.headers["Vary"]
    async with hub.subscribe("t", headers={"Origin": "https://evil.example"}) as stream:
        assert "Access-Control-Allow-Origin" not in stream.response.headers
    status, doc, headers = await status_of(
        hub, "POST", "/publish", json={"topic": "t", "data": 1}, headers={"Origin": "https://app.example"}
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"


async def test_without_cors_config_no_cors_headers(hub):
    async with hub.subscribe("t", headers={"Origin": "https://app.example"}) as stream:
        assert not any(h.startswith("Access-Control") for h in stream.response.headers)


async def test_connection_limits_answer_429_with_retry_after(hub_factory):
    hub = await hub_factory(
        limits__max_connections=2, server__trusted_proxies=("127.0.0.1",), limits__max_connections_per_ip=1
    )
    first = {"X-Forwarded-For": "198.51.100.1"}
    second = {"X-Forwarded-For": "198.51.100.2"}
    async with hub.subscribe("t", headers=first):
        status, doc, headers = await status_of(hub, "GET", "/events", params={"topic": "t"}, headers=first)
        assert (status, doc["error"]["code"]) == (429, "too_many_connections")
        assert int(headers["Retry-After"]) >= 1
        async with hub.subscribe("t", headers=second):
            status, doc, _ = await status_of(
                hub, "GET", "/events", params={"topic": "t"}, headers={"X-Forwarded-For": "198.51.100.3"}
            )
            assert (status, doc["error"]["code"]) == (429, "too_many_connections")
    # Closed streams give their places back.
    for _ in range(100):
        if hub.running.runner.app[GUARD].connections.open == 0:
            break
        await asyncio.sleep(0.02)
    async with hub.subscribe("t", headers=first), hub.subscribe("t", headers=second):
        pass


async def test_publish_rate_per_token_answers_429_with_retry_after(hub_factory):
    hub = await hub_factory(
        auth__jwt_secret=SECRET, limits__publish_rate=1.0, limits__publish_burst=3, limits__max_batch=3
    )
    one, two = (bearer(mint(publish=["**"], secret=SECRET, subject=s)) for s in ("one", "two"))
    await hub.publish([{"topic": "t", "data": i} for i in range(3)], headers=one)
    status, doc, headers = await status_of(
        hub, "POST", "/publish", json={"topic": "t", "data": 1}, headers=one
    )
    assert (status, doc["error"]["code"]) == (429, "rate_limited")
    assert headers["Retry-After"] == "1"
    await hub.publish({"topic": "t", "data": 1}, headers=two)  # another token, its own budget


async def test_batch_and_subscription_size_limits(hub_factory):
    hub = await hub_factory(limits__max_batch=2, limits__max_topics=2)
    status, doc, _ = await status_of(
        hub, "POST", "/publish", json=[{"topic": "t", "data": i} for i in range(3)]
    )
    assert (status, doc["error"]["code"]) == (413, "batch_too_large")
    status, doc, _ = await status_of(hub, "GET", "/events", params=[("topic", t) for t in "abc"])
    assert (status, doc["error"]["code"]) == (400, "too_many_topics")


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="hub"):
        yield caplog


async def test_tokens_never_reach_the_logs(secured, debug_logs):
    token = mint(subscribe=["users/1"], secret=SECRET)
    async with secured.subscribe("users/1", token=token):
        pass
    await status_of(secured, "GET", "/events", params={"topic": "users/2", "token": token})
    await status_of(secured, "GET", "/events", params={"topic": "users/1"}, headers=bearer(token + "x"))
    for _ in range(100):
        if any("stream closed" in r.getMessage() for r in debug_logs.records):
            break
        await asyncio.sleep(0.02)
    text = "\n".join(r.getMessage() for r in debug_logs.records)
    assert "stream open" in text
    assert "token=[redacted]" in text
    assert token not in text
    assert token.split(".")[2] not in text


async def test_a_token_parameter_with_a_percent_encoded_name_is_redacted_in_the_logs(secured, debug_logs):
    token = mint(subscribe=["users/1"], secret=SECRET)
    url = yarl.URL(f"{secured.url}/events?topic=users/1&%74oken={token}", encoded=True)
    async with secured.session.get(url) as resp:
        assert resp.status == 200  # it authenticates: aiohttp decodes the name
    await settled(lambda: any("stream closed" in r.getMessage() for r in debug_logs.records))
    text = "\n".join(r.getMessage() for r in debug_logs.records)
    assert "%74oken=[redacted]" in text
    assert token.split(".")[2] not in text
