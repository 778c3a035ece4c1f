"""New streams of the same topics arriving together share one snapshot read (hub.brokers.shared_snapshots):
a burst costs a few reads, each read serves only subscribers that asked before it started, and a
subscriber giving up or a read failing is each one's own business."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest

from hub.brokers.shared_snapshots import SharedSnapshots
from hub.errors import BrokerUnavailable
from hub.wire.event import Event
from hub.wire.ids import Position, Since, SinceKind, Snapshot
from hub.wire.topics import Selector

NEW: Since[Position] = Since(SinceKind.NEW)
TOPIC = (Selector.parse("news"),)


class Reads:
    """A broker's read, slow enough for a burst to gather: each read is answered with its own number as
    the position, and remembers who had asked when it started."""

    def __init__(self, fail: bool = False) -> None:
        self.started: list[set[int]] = []
        self.asked: set[int] = set()
        self.release = asyncio.Event()
        self.fail = fail

    async def read(self, selectors: object, since: Since[Position]) -> Snapshot:
        number = len(self.started)
        self.started.append(set(self.asked))
        await self.release.wait()
        if self.fail:
            raise BrokerUnavailable("the broker is unavailable")
        return Snapshot(Position("e", number), [Event(f"e-{number}", ("news",), "retained")])

    async def ask(
        self, shared: SharedSnapshots[Position], who: int, since: Since[Position] = NEW
    ) -> Snapshot:
        self.asked.add(who)
        return await shared.snapshot(TOPIC, since)


async def test_a_burst_of_new_streams_costs_two_reads_each_started_after_its_subscribers_asked():
    reads = Reads()
    shared = SharedSnapshots(reads.read)
    first = asyncio.create_task(reads.ask(shared, 0))
    await asyncio.sleep(0)  # the first read is under way before the burst
    burst = [asyncio.create_task(reads.ask(shared, who)) for who in range(1, 100)]
    await asyncio.sleep(0)
    reads.release.set()
    snapshots = await asyncio.gather(first, *burst)
    assert len(reads.started) == 2
    for who, snapshot in enumerate(snapshots):
        read = int(str(snapshot.position).split("-")[1])
        assert who in reads.started[read]  # never a read that started before this subscriber asked
    assert [s.position for s in snapshots[1:]] == [Position("e", 1)] * 99
    # each its own list of events: a stream takes them out as it writes them
    snapshots[1].events.clear()
    assert [e.data for e in snapshots[2].events] == ["retained"]
    assert shared.reads_in_flight() == 0


async def test_resumes_and_other_topics_read_on_their_own():
    reads = Reads()
    reads.release.set()
    shared = SharedSnapshots(reads.read)
    after: Since[Position] = Since(SinceKind.AFTER, Position("e", 0))
    await asyncio.gather(
        *(reads.ask(shared, who, after) for who in range(3)),
        shared.snapshot((Selector.parse("other"),), NEW),
        reads.ask(shared, 9),
    )
    assert len(reads.started) == 5


async def test_subscribers_giving_up_leave_the_reads_to_the_others():
    reads = Reads()
    shared = SharedSnapshots(reads.read)
    starter, leaving, staying = (asyncio.create_task(reads.ask(shared, who)) for who in range(3))
    await asyncio.sleep(0)  # the starter's read under way; the other two wait for the next
    for task in (starter, leaving):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    reads.release.set()
    assert (await staying).position == Position("e", 1)
    assert len(reads.started) == 2
    assert shared.reads_in_flight() == 0


async def test_a_failed_read_fails_every_subscriber_of_it_and_the_next_burst_reads_again():
    reads = Reads(fail=True)
    shared = SharedSnapshots(reads.read)
    waiting = [asyncio.create_task(reads.ask(shared, who)) for who in range(5)]
    await asyncio.sleep(0)
    reads.release.set()
    for task in waiting:
        with pytest.raises(BrokerUnavailable):
            await task
    assert shared.reads_in_flight() == 0
    reads.fail = False
    assert (await reads.ask(shared, 5)).position == Position("e", 2)


@pytest.fixture
def broker_kind() -> str:
    return "redis"


def script_calls(redis_server) -> int:
    stats = redis_server.command("INFO", "commandstats").decode()
    return sum(int(n) for n in re.findall(r"cmdstat_eval(?:sha)?:calls=(\d+)", stats))


async def test_ninety_streams_opening_at_once_on_redis_read_a_few_snapshots_and_all_get_the_event(
    hub_factory, redis_server
):
    hub = await hub_factory(redis__max_connections=2, limits__max_connections_per_ip=0)
    before = script_calls(redis_server)
    async with contextlib.AsyncExitStack() as stack:
        streams = await asyncio.gather(
            *(stack.enter_async_context(hub.subscribe("herd")) for _ in range(90))  # the session holds 100
        )
        assert script_calls(redis_server) - before < 10  # one per stream before
        doc = await hub.publish({"topic": "herd", "data": "to all"})
        for stream in streams:
            assert (await stream.next_event()).id == doc["id"]
    assert hub.fanout.broker._snapshots.reads_in_flight() == 0
