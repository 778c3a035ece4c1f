"""The memory broker's bound on memory, through a real hub: topics dropped after `history.ttl`, history held
within `history.max_total_bytes`, and a resume past either gets a reset, never a silent gap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.hub_client import HubUnderTest
from tests.test_resume import publish_many, reset_reason

pytestmark = pytest.mark.parametrize("broker_kind", ["memory"])


async def history(hub: HubUnderTest, topic: str) -> list[Any]:
    async with hub.session.get(f"{hub.url}/topics/{topic}/history") as resp:
        assert resp.status == 200
        return list(await resp.json())


async def dropped(hub: HubUnderTest, topic: str, timeout: float = 3.0) -> None:
    """Wait until `topic`'s history is gone: publishes to another topic sweep what is past its ttl."""
    async with asyncio.timeout(timeout):
        while await history(hub, topic):
            await hub.publish({"topic": "sweeper", "data": ""})
            await asyncio.sleep(0.05)


async def test_a_topic_past_its_ttl_is_dropped_and_its_live_streams_go_on(hub_factory):
    hub = await hub_factory(history__ttl=0.2)
    async with hub.subscribe("jobs/1") as stream:
        await hub.publish({"topic": "jobs/1", "data": "first", "retain": True})
        assert (await stream.next_event()).data == "first"
        await dropped(hub, "jobs/1")
        await hub.publish({"topic": "jobs/1", "data": "again"})
        assert (await stream.next_event()).data == "again"
    assert [e["data"] for e in await history(hub, "jobs/1")] == ["again"]
    async with hub.subscribe("jobs/1") as stream:  # the retained state went with the topic
        await hub.publish({"topic": "jobs/1", "data": "live"})
        assert (await stream.next_event()).data == "live"


async def test_a_resume_from_before_a_topic_was_dropped_gets_a_reset(hub_factory):
    hub = await hub_factory(history__ttl=0.2)
    old = await publish_many(hub, "jobs/1", 3)
    gone = await publish_many(hub, "jobs/2", 2)
    await dropped(hub, "jobs/1")
    await dropped(hub, "jobs/2")
    # jobs/1 lives again: its new events must not pass for what came after an id of its old life.
    new = await publish_many(hub, "jobs/1", 2, start=3)
    for topics, since in [(["jobs/1"], old[0]), (["jobs/*"], old[0]), (["jobs/2"], gone[0])]:
        async with hub.subscribe(*topics, headers={"Last-Event-ID": since}) as stream:
            assert "no longer retained" in await reset_reason(stream), (topics, since)
    # From an id of its new life, a resume is exact as ever.
    async with hub.subscribe("jobs/1", "jobs/*", headers={"Last-Event-ID": new[0]}) as stream:
        assert (await stream.next_event()).data == "4"


async def test_history_past_the_byte_bound_goes_from_the_least_recently_published_topics(hub_factory):
    # Each event is charged its data and 256 bytes for its bookkeeping: 1258 here, three fit.
    hub = await hub_factory(history__max_total_bytes=4000)
    data = "x" * 1000
    first = (await hub.publish({"topic": "a", "data": data}))["id"]
    await hub.publish({"topic": "b", "data": data})
    await hub.publish({"topic": "a", "data": data})  # a is the most recently published now
    await hub.publish({"topic": "c", "data": data})
    assert await history(hub, "b") == []
    assert [len(await history(hub, t)) for t in "ac"] == [2, 1]
    last = (await hub.publish({"topic": "c", "data": "small"}))["id"]
    assert [len(await history(hub, t)) for t in "ac"] == [1, 2]
    # b lost its event after `first`; a lost only `first` itself, which this client had.
    async with hub.subscribe("b", headers={"Last-Event-ID": first}) as stream:
        assert "no longer retained" in await reset_reason(stream)
    async with hub.subscribe("a", headers={"Last-Event-ID": first}) as stream:
        assert (await stream.next_event()).data == data
    async with hub.subscribe("c", headers={"Last-Event-ID": first}) as stream:
        got = await stream.take(2)
        assert [e.id for e in got][-1] == last
