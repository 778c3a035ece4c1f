"""A hub on Redis may stop reading its events for a moment (a starved fan-out gathers them until its
next flush): nothing published meanwhile is lost, reordered or doubled, and reading goes on by itself."""

from __future__ import annotations

import pytest

from tests.support.waiting import settled


@pytest.mark.parametrize("broker_kind", ["redis", "cluster"], indirect=True)
async def test_held_reading_delivers_nothing_until_it_reads_on_then_everything_in_order(hub):
    broker = hub.fanout.broker
    async with hub.subscribe("held") as stream:
        broker.hold_reading(True)
        ids = [(await hub.publish({"topic": "held", "data": i}))["id"] for i in range(5)]
        with pytest.raises(TimeoutError):
            await stream.next_event(timeout=0.3)
        broker.hold_reading(False)
        got = await stream.take(5)
        assert [int(e.data) for e in got] == list(range(5))
        assert [e.id for e in got] == ids


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
async def test_a_connection_made_while_held_is_held_too_and_loses_nothing(hub_factory, redis_server):
    hub = await hub_factory(redis_server.url)
    broker = hub.fanout.broker
    async with hub.subscribe("rejoined") as stream:
        await hub.publish({"topic": "rejoined", "data": 0})
        assert int((await stream.next_event()).data) == 0
        assert int(redis_server.call("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
        await settled(
            lambda: broker._subscription.writer is None
        )  # noticed (a held connection would not read the end)
        broker.hold_reading(True)
        await settled(lambda: broker._subscription.writer is not None)  # the new one, made while held
        for i in range(1, 6):
            await hub.publish({"topic": "rejoined", "data": i})
        with pytest.raises(TimeoutError):
            await stream.next_event(timeout=0.3)
        assert not broker._subscription.writer.transport.is_reading()
        broker.hold_reading(False)
        assert [int(e.data) for e in await stream.take(5)] == [1, 2, 3, 4, 5]
