"""A hub whose publishes Redis refuses says so in /readyz, and says ready again once they go through."""

from __future__ import annotations

import pytest

from tests.support.waiting import settled


@pytest.fixture(params=["redis", "cluster"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def readyz(hub) -> int:
    async with hub.session.get(hub.url + "/readyz") as resp:
        return resp.status


async def test_readyz_fails_while_redis_refuses_publishes_and_recovers_without_one(
    hub_factory, broker_kind, redis_factory, redis_cluster_factory
):
    """A Redis that refused every publish (here: full, with no eviction) left /readyz at 200, since its
    connections and ticks were well, so a load balancer kept sending publishers to the replica."""
    if broker_kind == "redis":
        nodes = [redis_factory()]
        url = nodes[0].url
    else:
        cluster = redis_cluster_factory(primaries=3)
        nodes, url = cluster.primaries(), cluster.url
    hub = await hub_factory(url, sse__heartbeat_interval=0.2)
    await hub.publish({"topic": "r", "data": "before"})
    await settled(lambda: hub.fanout.ready)
    assert await readyz(hub) == 200
    for node in nodes:
        node.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
        node.command("CONFIG", "SET", "maxmemory", "1")
    status, doc = await hub.post("/publish", json={"topic": "r", "data": "refused"})
    assert status == 503, doc
    # No internals: not Redis' own words, which name the script's SHA and the failing call.
    assert "OOM" not in doc["error"]["message"], doc
    assert "script" not in doc["error"]["message"], doc
    assert await readyz(hub) == 503
    for node in nodes:
        node.command("CONFIG", "SET", "maxmemory", "0")
    # No publish meanwhile (a balancer sends none to an unready replica): the hub finds out by itself.
    await settled(lambda: hub.fanout.ready, timeout=10)
    assert await readyz(hub) == 200
    assert (await hub.publish({"topic": "r", "data": "after"}))["id"]
