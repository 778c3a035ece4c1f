"""A publish's answer is exact through a Redis pause: 503 only for what was never published, 504
`outcome_unknown` for what went out to Redis unanswered, and `/readyz` 503 while publishes fail.

Found from outside: with Redis SIGSTOPped for `redis.connect_timeout` or longer, about half of the
publishes answered 503 ("not accepted: retrying is safe") reached every subscriber once Redis went on,
since their commands were waiting in its socket; and `/readyz` said ready throughout."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bench.processes import RedisCluster, RedisProcess
from hub.client import HubClient
from tests.support.ids import names_event
from tests.support.waiting import settled

TOPIC = "stall/t"


@pytest.fixture(params=["redis", "cluster"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Paused:
    """A hub on a Redis (or a cluster) of its own, and the node that serves TOPIC."""

    hub: Any
    node: RedisProcess

    @contextlib.asynccontextmanager
    async def pause(self) -> AsyncIterator[None]:
        assert self.node.proc is not None
        self.node.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.node.proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def stall_cluster() -> Iterator[RedisCluster]:
    """The module's tests pause one node at a time, briefly: a node timeout longer than that, so the
    cluster never fails it (and there are no replicas to fail it over to)."""
    with RedisCluster(node_timeout_ms=8000) as cluster:
        yield cluster


@pytest.fixture
async def paused(hub_factory, broker_kind, redis_factory, request: pytest.FixtureRequest) -> Paused:
    if broker_kind == "redis":
        node = redis_factory()
        hub = await hub_factory(node.url, redis__connect_timeout=1)
        return Paused(hub, node)
    cluster: RedisCluster = request.getfixturevalue("stall_cluster")
    hub = await hub_factory(cluster.url, redis__connect_timeout=1)
    parts = hub.fanout.broker._parts
    return Paused(hub, cluster.node_for_slot(parts.slots[parts.of_topic(TOPIC)]))


async def readyz(hub) -> int:
    async with hub.session.get(hub.url + "/readyz") as resp:
        return resp.status


async def history(hub) -> list[Any]:
    async with hub.session.get(hub.url + f"/topics/{TOPIC}/history") as resp:
        assert resp.status == 200, await resp.text()
        return [event["data"] for event in await resp.json()]


async def until(stream, data: Any) -> list[Any]:
    """The data of every event up to and with `data`."""
    seen = []
    while not seen or seen[-1] != data:
        seen.append((await stream.next_event(timeout=10)).data)
    return seen


async def publishes_over(hub, seconds: float, count: int) -> list[tuple[int, Any]]:
    """`count` publishes without a key, spread over `seconds`: (status, body) each, in order."""

    async def one(i: int) -> tuple[int, Any]:
        await asyncio.sleep(i * seconds / count)
        return await hub.post("/publish", json={"topic": TOPIC, "data": f"p{i}"})

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_in_a_redis_pause_no_503_is_published_a_504_says_unknown_and_the_client_publishes_once(
    paused: Paused, broker_kind
):
    hub = paused.hub
    loop = asyncio.get_running_loop()
    async with hub.subscribe(TOPIC) as stream, HubClient(hub.url) as client:
        await client.publish(TOPIC, "before")
        assert await until(stream, "before") == ["before"]
        async with paused.pause():
            # Sent on the open connections first (504s), then waiting for new ones to open (503s on one
            # Redis, whose connections must answer their setup; redis-py's cluster client retries on).
            publishing = asyncio.ensure_future(publishes_over(hub, 2.0, 8))
            await asyncio.sleep(0.1)  # the first of those has taken the connection that is open
            # The client's, under keys of its own: retried through the pause, and longer than it used to.
            by_client = asyncio.gather(*(client.publish(TOPIC, f"c{i}") for i in range(6)))
            started = loop.time()
            while await readyz(hub) != 503:  # publishes fail: not ready, whatever the ticks say
                assert loop.time() - started < 4, "ready throughout the pause"
                await asyncio.sleep(0.1)
            await asyncio.sleep(5 - (loop.time() - started))
            assert not by_client.done()
        answers = await publishing
        client_ids = await by_client
        await settled(lambda: hub.fanout.ready)
        assert await readyz(hub) == 200
        await client.publish(TOPIC, "after")
        delivered = await until(stream, "after")
    stored = await history(hub)

    statuses = [status for status, _ in answers]
    refused = {f"p{i}" for i, (status, _) in enumerate(answers) if status == 503}
    assert set(statuses) <= {200, 503, 504}, answers
    assert 504 in statuses, answers
    if broker_kind == "redis":
        assert 503 in statuses, answers
    for status, doc in answers:
        if status == 504:
            assert doc["outcome"] == "unknown", doc
            assert doc["error"]["code"] == "outcome_unknown", doc
            assert "Idempotency-Key" in doc["error"]["message"], doc
        elif status == 503:
            assert doc["error"]["code"] == "broker_unavailable", doc
    assert not refused & set(delivered), (answers, delivered)
    assert not refused & set(stored), (answers, stored)

    by_the_client = [f"c{i}" for i in range(6)]
    assert sorted(d for d in delivered if d.startswith("c")) == by_the_client, delivered
    assert sorted(d for d in stored if d.startswith("c")) == by_the_client, stored
    assert len(set(client_ids)) == 6


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
async def test_a_stream_the_broker_fails_part_way_says_what_was_published_and_never_503(paused: Paused):
    """It answered 503 ("nothing was published") though its first pieces had reached subscribers."""
    hub = paused.hub
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"one"
        await release.wait()
        yield b"two"

    async with hub.subscribe(TOPIC) as stream:
        posting = asyncio.ensure_future(
            hub.post(
                "/publish/stream",
                params={"topic": TOPIC},
                data=body(),
                headers={"Content-Type": "text/plain"},
            )
        )
        first = await stream.next_event()
        async with paused.pause():
            release.set()
            status, doc = await posting
    assert first.data == "one"
    assert (status, doc["outcome"], doc["events"]) == (504, "unknown", 1), doc
    assert names_event(first.id, doc["last_id"]), doc
