"""Presence and control over HTTP: subscriber counts per topic and selector, who is subscribed, every
subscription, disconnects; on one hub of each broker, and across processes on one Redis and a cluster
(two hubs on the same prefix are two processes of one hub)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from hub.http.auth import mint
from hub.http.state import PRESENCE
from tests.support.hub_client import HubUnderTest
from tests.support.sse_reader import SseStream
from tests.support.waiting import settled

SECRET = "presence-secret-of-at-least-32-bytes!!"
INTERVAL = 0.2
ACROSS = pytest.mark.parametrize("broker_kind", ["redis", "cluster"])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def get(hub: HubUnderTest, path: str, expect: int = 200, **kwargs: Any) -> Any:
    async with hub.session.get(hub.url + path, **kwargs) as resp:
        assert resp.content_type == "application/json", await resp.text()
        doc = await resp.json()
        assert resp.status == expect, doc
        return doc


@contextlib.asynccontextmanager
async def stream(hub: HubUnderTest, *topics: str, **params: str) -> AsyncIterator[tuple[str, SseStream]]:
    """A live stream and its connection id."""
    query = [("topic", t) for t in topics] + list(params.items())
    async with hub.session.get(hub.url + "/events", params=query) as resp:
        assert resp.status == 200, await resp.text()
        reader = SseStream(resp)
        await reader.until_comment()
        yield resp.headers["Hub-Connection-Id"], reader


async def subscribers(hub: HubUnderTest, topic: str, **kwargs: Any) -> int:
    return int((await get(hub, f"/topics/{topic}/subscribers", **kwargs))["subscribers"])


def counted(hub: HubUnderTest, topic: str, want: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await subscribers(hub, topic) == want

    return check


async def test_counts_per_topic_and_per_selector(hub_factory):
    hub = await hub_factory(presence__interval=INTERVAL)
    async with contextlib.AsyncExitStack() as stack:
        for topics in (["chat/1"], ["chat/1"], ["chat/*"], ["other"], ["chat/**", "other"]):
            await stack.enter_async_context(stream(hub, *topics))
        doc = await get(hub, "/topics/chat/1/subscribers")
        assert doc == {
            "topic": "chat/1",
            "subscribers": 4,
            "selectors": [
                {"selector": "chat/*", "subscribers": 1},
                {"selector": "chat/**", "subscribers": 1},
                {"selector": "chat/1", "subscribers": 2},
            ],
        }
        assert await subscribers(hub, "other") == 2
        assert await subscribers(hub, "nobody/here") == 0
    await eventually(counted(hub, "chat/1", 0))
    assert hub.fanout.roster.members == {}
    assert hub.fanout.roster.streams == 0


@ACROSS
async def test_counts_and_presence_add_up_across_processes(hub_factory):
    one = await hub_factory(presence__interval=INTERVAL)
    two = await hub_factory(presence__interval=INTERVAL)
    async with stream(one, "room", name="ann") as (ann, _), stream(two, "room", name="bob") as (bob, _):
        async with stream(two, "room/*/x", "room", name="cy") as (cy, _):
            for hub in (one, two):
                await eventually(counted(hub, "room", 3))
            doc = await get(one, "/topics/room/presence")
            assert doc["subscribers"] == 3
            assert doc["truncated"] is False
            assert sorted((m["name"], m["conn"], m["selector"]) for m in doc["members"]) == sorted(
                [("ann", ann, "room"), ("bob", bob, "room"), ("cy", cy, "room")]
            )
            assert all(m["sub"] is None and m["since"] > 0 for m in doc["members"])
            limited = await get(two, "/topics/room/presence", params={"limit": "2"})
            assert len(limited["members"]) == 2
            assert limited["truncated"] is True
        # gone from the other process's count within a round or two
        await eventually(counted(one, "room", 2))


@ACROSS
async def test_a_process_that_dies_without_a_word_drops_out_of_the_counts(hub_factory):
    one = await hub_factory(presence__interval=INTERVAL)
    two = await hub_factory(presence__interval=INTERVAL)
    async with stream(two, "lobby"), stream(two, "lobby"):
        await eventually(counted(one, "lobby", 2))
        # Its writer stops where it stands (no goodbye), as a killed process's does; its streams live
        # on in this test, but no longer for the others once its counts expire (5 rounds).
        directory = two.running.runner.app[PRESENCE].directory
        task = directory._task
        assert task is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        directory._task = None
        started = asyncio.get_running_loop().time()
        await eventually(counted(one, "lobby", 0))
        # 5 rounds, and slack for a loaded machine
        assert asyncio.get_running_loop().time() - started < 5 * INTERVAL + 5
        doc = await get(one, "/topics/lobby/presence")
        assert doc["members"] == []
        assert doc["subscribers"] == 0


async def test_presence_shows_the_tokens_sub_with_auth_on(hub_factory):
    hub = await hub_factory(auth__jwt_secret=SECRET, presence__interval=INTERVAL)
    token = mint(subscribe=["team/*"], subject="alice", secret=SECRET)
    async with stream(hub, "team/a", token=token) as (conn, _):
        doc = await get(hub, "/topics/team/a/presence", params={"token": token})
        assert [(m["sub"], m["name"], m["conn"]) for m in doc["members"]] == [("alice", None, conn)]
        # reading a topic's presence takes the grant that subscribes to it
        other = mint(subscribe=["elsewhere"], secret=SECRET)
        await get(hub, "/topics/team/a/presence", 403, params={"token": other})
        await get(hub, "/topics/team/a/subscribers", 401)
        controller = mint(control=True, secret=SECRET)
        assert await subscribers(hub, "team/a", params={"token": controller}) == 1
    # a name of the client's own choosing would pass it off as someone else
    async with hub.session.get(
        hub.url + "/events", params={"topic": "team/a", "token": token, "name": "bob"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_parameter"


async def test_every_subscription_is_listed_for_control(hub_factory):
    hub = await hub_factory(auth__jwt_secret=SECRET, presence__interval=INTERVAL)
    token = mint(subscribe=["**"], secret=SECRET)
    controller = {"Authorization": "Bearer " + mint(control=True, secret=SECRET)}
    async with stream(hub, "a", "b", token=token), stream(hub, "a", token=token):
        doc = await get(hub, "/subscriptions", headers=controller)
        assert doc == {
            "streams": 2,
            "selectors": [{"selector": "a", "subscribers": 2}, {"selector": "b", "subscribers": 1}],
            "truncated": False,
        }
        top = await get(hub, "/subscriptions", headers=controller, params={"limit": "1"})
        assert top["selectors"] == [{"selector": "a", "subscribers": 2}]
        assert top["truncated"] is True
        await get(hub, "/subscriptions", 403, params={"token": token})
        await get(hub, "/subscriptions", 401)


@ACROSS
async def test_listing_adds_up_across_processes(hub_factory):
    one = await hub_factory(presence__interval=INTERVAL)
    two = await hub_factory(presence__interval=INTERVAL)
    async with stream(one, "x"), stream(two, "x", "y"):

        async def both() -> bool:
            doc = await get(one, "/subscriptions")
            return doc["streams"] == 2 and doc["selectors"] == [
                {"selector": "x", "subscribers": 2},
                {"selector": "y", "subscribers": 1},
            ]

        await eventually(both)


async def disconnect(hub: HubUnderTest, body: Any, expect: int = 202, **kwargs: Any) -> Any:
    status, doc = await hub.post("/disconnect", json=body, **kwargs)
    assert status == expect, doc
    return doc


async def test_a_disconnect_closes_the_streams_it_names_and_tells_them_why(hub_factory):
    hub = await hub_factory(presence__interval=INTERVAL)
    async with (
        stream(hub, "news", name="ann") as (_, ann),
        stream(hub, "news", name="bob") as (_, bob),
        stream(hub, "sports/*", name="ann") as (_, ann_sports),
    ):
        assert await disconnect(hub, {"name": "ann", "topic": "news", "reason": "bye"}) == {"closed_here": 1}
        event = await ann.next_event()
        assert (event.event, event.data, event.retry) == ("disconnect", '{"reason":"bye"}', 3000)
        assert await ann.ended()
        # the others are untouched, and still get events
        await hub.publish({"topic": "news", "data": "still here"})
        assert (await bob.next_event()).data == "still here"
        assert await disconnect(hub, {"topic": "sports/golf"}) == {"closed_here": 1}
        assert await ann_sports.ended()
    await settled(lambda: hub.fanout.connections == 0)


async def test_a_disconnect_by_connection_id(hub_factory):
    hub = await hub_factory(presence__interval=INTERVAL)
    async with stream(hub, "t") as (conn, reader), stream(hub, "t") as (_, other):
        assert await disconnect(hub, {"conn": conn}) == {"closed_here": 1}
        assert await reader.ended()
        await hub.publish({"topic": "t", "data": "x"})
        assert (await other.next_event()).data == "x"


@ACROSS
async def test_a_disconnect_reaches_every_process(hub_factory):
    one = await hub_factory(auth__jwt_secret=SECRET, presence__interval=INTERVAL)
    two = await hub_factory(auth__jwt_secret=SECRET, presence__interval=INTERVAL)
    eve = mint(subscribe=["**"], subject="eve", secret=SECRET)
    dan = mint(subscribe=["**"], subject="dan", secret=SECRET)
    controller = {"Authorization": "Bearer " + mint(control=True, secret=SECRET)}
    async with (
        stream(one, "a", token=eve) as (_, eve_one),
        stream(two, "b", token=eve) as (_, eve_two),
        stream(two, "a", token=dan) as (_, dan_two),
    ):
        assert await disconnect(one, {"sub": "eve"}, headers=controller) == {"closed_here": 1}
        assert await eve_one.ended()
        # the other process closes hers within a round or two, with the same last block
        assert await eve_two.ended(timeout=5)
        assert [e.event for e in eve_two.events] == ["disconnect"]
        publisher = {"Authorization": "Bearer " + mint(publish=["**"], secret=SECRET)}
        await one.publish({"topic": "a", "data": "on"}, headers=publisher)
        assert (await dan_two.next_event()).data == "on"


async def test_disconnects_and_listings_need_the_control_grant(hub_factory):
    hub = await hub_factory(auth__jwt_secret=SECRET, presence__interval=INTERVAL)
    admin = {"Authorization": "Bearer " + mint(subscribe=["**"], publish=["**"], secret=SECRET)}
    status, doc = await hub.post("/disconnect", json={"topic": "a"})
    assert status == 401
    assert doc["error"]["code"] == "token_required"
    status, doc = await hub.post("/disconnect", json={"topic": "a"}, headers=admin)
    assert status == 403
    assert doc["error"]["code"] == "control_required"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{}",
        b'{"reason": "only a reason"}',
        b'{"sub": 7}',
        b'{"sub": ""}',
        b'{"topic": "a/*"}',
        b'{"topic": "a b"}',
        b'{"conn": "' + b"x" * 65 + b'"}',
        b'{"name": "' + b"n" * 65 + b'"}',
        b'{"sub": "a", "extra": 1}',
        b'{"sub": "a", "reason": "' + b"r" * 257 + b'"}',
        b"\xff\xfe",
    ],
)
async def test_a_bad_disconnect_is_a_400_and_closes_nothing(hub_factory, body):
    hub = await hub_factory(presence__interval=INTERVAL)
    async with stream(hub, "a", name="a") as (_, reader):
        status, doc = await hub.post("/disconnect", data=body)
        assert status == 400, doc
        await hub.publish({"topic": "a", "data": "alive"})
        assert (await reader.next_event()).data == "alive"


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "²", "1" * 40, ""])
async def test_a_bad_limit_is_a_400(hub, limit):
    doc = await get(hub, "/topics/a/presence", 400, params={"limit": limit})
    assert doc["error"]["code"] == "invalid_parameter"
    await get(hub, "/subscriptions", 400, params={"limit": limit})


@pytest.mark.parametrize("topic", ["a%20b", "a/*", "%00", "a%0Ab"])
async def test_a_bad_topic_is_a_400(hub, topic):
    async with hub.session.get(f"{hub.url}/topics/{topic}/subscribers") as resp:
        assert resp.status == 400


async def test_joins_and_leaves_on_the_system_topic_of_a_topic_that_opted_in(hub_factory):
    hub = await hub_factory(presence__interval=INTERVAL, presence__events=("chat/**",))
    async with stream(hub, "$presence/chat/1") as (_, watcher):
        async with stream(hub, "chat/1", name="ann") as (conn, _):
            joined = await watcher.next_event()
            async with stream(hub, "quiet", name="bob"):  # not opted in: no event
                pass
        left = await watcher.next_event()
    for event, kind in ((joined, "join"), (left, "leave")):
        assert event.event == kind
        data = orjson.loads(event.data)
        assert data["conn"] == conn
        assert data["name"] == "ann"
        assert data["topic"] == "chat/1"
    assert watcher.events == []


async def test_the_system_topic_is_read_with_the_topics_grant_and_published_by_no_one(hub_factory):
    hub = await hub_factory(auth__jwt_secret=SECRET, presence__events=("**",))
    reader = mint(subscribe=["chat/1"], secret=SECRET)
    async with stream(hub, "$presence/chat/1", token=reader):
        pass
    async with hub.session.get(
        hub.url + "/events", params={"topic": "$presence/chat/2", "token": reader}
    ) as resp:
        assert resp.status == 403
    publisher = {"Authorization": "Bearer " + mint(publish=["**"], secret=SECRET)}
    for body in ({"topic": "$presence/chat/1", "data": "x"}, {"topics": ["a", "$x"], "data": "x"}):
        doc = await hub.publish(body, expect=403, headers=publisher)
        assert doc["error"]["code"] == "reserved_topic"
    async with hub.session.post(
        hub.url + "/publish/stream", params={"topic": "$x"}, data=b"x", headers=publisher
    ) as resp:
        assert resp.status == 403


@pytest.mark.parametrize("broker_kind", ["redis"])
async def test_presence_answers_503_while_redis_is_down(hub_factory, redis_factory):
    server = redis_factory()
    hub = await hub_factory(redis_url=server.url, presence__interval=INTERVAL)
    await settled(lambda: hub.fanout.ready)
    async with stream(hub, "a") as (conn, _):
        server.kill()
        for path in ("/topics/a/subscribers", "/topics/a/presence", "/subscriptions"):
            doc = await get(hub, path, 503)
            assert doc["error"]["code"] == "broker_unavailable"
        status, _ = await hub.post("/disconnect", json={"conn": conn})
        assert status == 503


@pytest.mark.parametrize("broker_kind", ["redis"])
async def test_presence_that_redis_lost_is_written_again(hub_factory, redis_server):
    # As when a process stalls past its counts' expiry, or Redis loses its data (which, as a whole,
    # also closes every stream for a resync: here only presence goes).
    one = await hub_factory(presence__interval=INTERVAL)
    two = await hub_factory(presence__interval=INTERVAL)
    async with stream(one, "kept"):
        await eventually(counted(two, "kept", 1))
        node = one.running.runner.app[PRESENCE].directory.node
        prefix = one.running.runner.app[PRESENCE].directory._keys.counts(node).rsplit(":", 1)[0]
        keys = redis_server.call("KEYS", prefix.replace("{", "\\{").replace("}", "\\}") + ":*")
        assert isinstance(keys, list)
        assert len(keys) >= 3
        redis_server.call("DEL", *keys)
        assert await subscribers(two, "kept") == 0
        await eventually(counted(two, "kept", 1))
        assert (await get(two, "/topics/kept/presence"))["members"] != []


async def metrics_text(hub: HubUnderTest) -> str:
    async with hub.session.get(hub.url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_metrics_label_the_top_selectors_only_when_asked(hub_factory):
    hub = await hub_factory(presence__interval=INTERVAL, presence__metrics_top=2)
    plain = await hub_factory(presence__interval=INTERVAL)
    async with stream(hub, "a", "b"), stream(hub, "a", "c/*"), stream(hub, "a"), stream(plain, "b"):

        async def labelled() -> bool:
            text = await metrics_text(hub)
            return 'hub_selector_subscribers{selector="a"} 3.0' in text

        await eventually(labelled)
        text = await metrics_text(hub)
        series = [line for line in text.splitlines() if line.startswith("hub_selector_subscribers{")]
        # two series: "a", then the larger of the rest ("b": 1 here, 2 where two processes share Redis)
        assert len(series) == 2
        assert series[0] == 'hub_selector_subscribers{selector="a"} 3.0'
        assert series[1].startswith('hub_selector_subscribers{selector="b"}')
        assert "hub_presence_streams" in text
        assert "hub_selector_subscribers" not in await metrics_text(plain)
