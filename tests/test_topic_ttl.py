"""`history.ttl` on Redis and Redis Cluster: a topic idle for the ttl leaves no key behind, live streams
go on, and a resume from before a drop gets a `reset`, never a silent gap (even once the topic is back)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from bench.processes import RespConnection
from tests.support.hub_client import HubUnderTest
from tests.support.waiting import settled

pytestmark = pytest.mark.parametrize("broker_kind", ["redis", "cluster"], indirect=True)

TTL = 0.5  # seconds; the sweep runs every ttl / 4


@pytest.fixture
def ports(broker_kind: str, request: pytest.FixtureRequest) -> list[int]:
    if broker_kind == "redis":
        return [request.getfixturevalue("redis_server").port]
    return [node.port for node in request.getfixturevalue("redis_cluster").primaries()]


def keys_of(ports: list[int], prefix: str) -> dict[str, int]:
    """Every key of the prefix on every primary, with its PTTL (-1: kept forever)."""
    found = {}
    glob = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + ":*"
    for port in ports:
        with RespConnection(port) as conn:
            cursor = "0"
            while True:
                cursor, keys = conn.call("SCAN", cursor, "MATCH", glob, "COUNT", 1000)
                for key in keys:
                    found[key] = conn.call("PTTL", key)
                if cursor == "0":
                    break
    return {k: ttl for k, ttl in found.items() if ttl != -2}  # -2: expired between SCAN and PTTL


def topic_keys(ports: list[int], prefix: str) -> list[str]:
    """What topics leave: every key but the counters, which outlive them, and publish and idempotency
    tokens and the processes' presence, which expire on their own clock (checked: never kept forever)."""
    left = []
    for key, ttl in keys_of(ports, prefix).items():
        if key.endswith(":seq"):
            continue
        if ":pub:" in key or ":idem:" in key or ":{presence" in key:
            assert ttl > 0, key
            continue
        left.append(key)
    return sorted(left)


def prefix_of(hub: HubUnderTest) -> str:
    return hub.fanout.broker._config.prefix


async def dropped(hub: HubUnderTest, ports: list[int]) -> None:
    await settled(lambda: not topic_keys(ports, prefix_of(hub)), timeout=5)


async def reset_reason(stream) -> str:
    event = await stream.next_event()
    assert event.event == "reset", event
    return orjson.loads(event.data)["reason"]


async def test_a_topic_idle_for_the_ttl_leaves_no_key_behind_and_live_streams_go_on(hub_factory, ports):
    hub = await hub_factory(history__ttl=TTL, publish__idempotency_window=1)
    async with hub.subscribe("jobs/123") as exact, hub.subscribe("jobs/*") as pattern:
        await hub.publish({"topic": "jobs/123", "data": "once", "retain": True})
        await hub.publish({"topic": "jobs/124", "data": "once"}, headers={"Idempotency-Key": "k-124"})
        await hub.publish([{"topic": "jobs/125", "data": "a"}, {"topic": "jobs/125", "data": "b"}])
        assert (await exact.next_event()).data == "once"
        assert [e.data for e in await pattern.take(4)] == ["once", "once", "a", "b"]
        assert topic_keys(ports, prefix_of(hub))  # histories, the registry, its indexes, retained state
        await dropped(hub, ports)
        async with hub.subscribe("jobs/**", lastEventId="earliest") as stream:
            with pytest.raises(TimeoutError):  # no history, no retained state
                await stream.next_event(timeout=0.2)
        # pub/sub is no key: the subscribers of a dropped topic get its next publish
        await hub.publish({"topic": "jobs/123", "data": "again"})
        for stream in (exact, pattern):
            assert (await stream.next_event()).data == "again"
    await settled(lambda: not any(":idem:" in key for key in keys_of(ports, prefix_of(hub))))


async def test_a_topic_published_within_the_ttl_is_kept(hub_factory, ports):
    hub = await hub_factory(history__ttl=TTL)
    await hub.publish({"topic": "idle", "data": "-"})
    for i in range(7):  # 0.7 s in all, each publish within the ttl of the one before
        await hub.publish({"topic": "kept", "data": str(i)})
        await asyncio.sleep(0.1)
    await settled(lambda: not any(key.endswith(":h:idle") for key in keys_of(ports, prefix_of(hub))))
    async with hub.subscribe("kept", "idle", lastEventId="earliest") as stream:
        assert [e.data for e in await stream.take(7)] == [str(i) for i in range(7)]


async def test_a_resume_from_before_a_drop_is_a_reset_even_once_the_topic_is_back(hub_factory, ports):
    hub = await hub_factory(history__ttl=TTL)
    async with hub.subscribe("pat/*") as stream:
        await hub.publish({"topic": "pat/a", "data": "a"})
        held = (await stream.next_event()).id
    await hub.publish({"topic": "pat/b", "data": "missed"})
    old = (await hub.publish([{"topic": "inc", "data": f"old {i}"} for i in range(3)]))["ids"]
    await dropped(hub, ports)

    # pat/b's event came after the id and is gone with its name: no index can say a pattern matched it
    async with hub.subscribe("pat/*", headers={"Last-Event-ID": held}) as stream:
        assert "no longer retained" in await reset_reason(stream)
        after = stream.last_event_id
    await hub.publish({"topic": "pat/c", "data": "new"})
    async with hub.subscribe("pat/*", headers={"Last-Event-ID": after}) as stream:
        assert (await stream.next_event()).data == "new"  # a position after the drop resumes

    async with hub.subscribe("inc", headers={"Last-Event-ID": old[0]}) as stream:
        assert "no longer retained" in await reset_reason(stream)  # gone: 'old 1', 'old 2' were missed
    await hub.publish([{"topic": "inc", "data": f"new {i}"} for i in range(2)])
    for held in old[:2]:
        # back, with new events: no silent splice of the new after the old ones missed
        async with hub.subscribe("inc", headers={"Last-Event-ID": held}) as stream:
            assert "no longer retained" in await reset_reason(stream)
    # The last id of all dropped: nothing of them was missed (ids never repeat), so the new events follow.
    async with hub.subscribe("inc", headers={"Last-Event-ID": old[-1]}) as stream:
        assert [e.data for e in await stream.take(2)] == ["new 0", "new 1"]


async def test_topics_written_without_a_ttl_are_dropped_by_a_hub_with_one(hub_factory, ports):
    forever = await hub_factory(history__ttl=0)
    await forever.publish({"topic": "legacy/1", "data": "kept by an older hub", "retain": True})
    await forever.publish({"topic": "legacy/2", "data": "kept by an older hub"})
    assert all(ttl == -1 for key, ttl in keys_of(ports, prefix_of(forever)).items() if ":h:" in key)
    await hub_factory(history__ttl=TTL)  # the same prefix
    await dropped(forever, ports)
