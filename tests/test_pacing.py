"""Flush pacing: what arrives between two rounds goes out in one write per subscriber; a round yields
to the loop between slices; the pause after a round follows its length, how starved and how backlogged
the hub is, within bounds; a starved hub holds its broker's reading for most of the pause."""

from __future__ import annotations

import asyncio
import uuid

from hub.brokers.memory import MemoryBroker
from hub.brokers.redis import RedisBroker
from hub.config import HistoryConfig, RedisConfig
from hub.engine.fanout import Fanout
from hub.engine.pacing import (
    BACKLOG_BUSY,
    BACKLOG_GAP_MAX,
    FLUSH_GAP_MAX,
    FLUSH_GAP_MIN,
    FLUSH_SLICE,
    READ_ON_AT,
    STARVED_GAP_MAX,
    STARVED_MEMORY,
    STARVED_NOISE,
    flush_gap,
    is_backlogged,
)
from hub.wire.event import Draft
from tests.support.fanout import BlockingTransport, BusyTransport, attach, publish_in_rounds, spin
from tests.support.waiting import settled


async def started_fanout() -> Fanout:
    fanout = Fanout(MemoryBroker(HistoryConfig(), 60), heartbeat_interval=60, subscribe_timeout=1)
    await fanout.start()
    return fanout


async def test_frames_published_before_a_round_go_out_in_one_write():
    fanout = await started_fanout()
    _, transport = await attach(fanout, "burst/*")
    await fanout.publish([Draft((f"burst/{i}",), str(i)) for i in range(50)])
    await fanout.publish([Draft(("burst/x",), "last")])
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    assert transport.writes[0].count(b"data: ") == 51
    await fanout.stop()


async def test_a_long_flush_lets_the_loop_run_between_slices_and_keeps_each_streams_order():
    fanout = await started_fanout()
    transports = [(await attach(fanout, "wide"))[1] for _ in range(FLUSH_SLICE * 2 + 10)]
    await fanout.publish([Draft(("wide",), "first")])
    await asyncio.sleep(0)
    assert sum(1 for t in transports if t.writes) == FLUSH_SLICE  # then the loop went round
    await fanout.publish([Draft(("wide",), "second")])  # arrives mid-flush
    await settled(lambda: all(b"second" in b"".join(t.writes) for t in transports))
    for i, transport in enumerate(transports):
        data = [line for w in transport.writes for line in w.split(b"\n") if line.startswith(b"data: ")]
        assert data == [b"data: first", b"data: second"]
        # not yet written when "second" came: both in one write; written already: one write each
        assert len(transport.writes) == (2 if i < FLUSH_SLICE else 1)
    await fanout.stop()


def test_a_hub_with_its_core_pauses_as_long_as_a_flush_took_within_milliseconds():
    assert flush_gap(0.0001, 0.0) == FLUSH_GAP_MIN
    assert flush_gap(0.003, 0.0) == 0.003
    assert flush_gap(0.003, STARVED_NOISE) == 0.003  # scheduling noise changes nothing
    assert flush_gap(0.5, 0.0) == FLUSH_GAP_MAX


def test_a_starved_hub_pauses_longer_the_more_it_waits_for_its_core_within_a_bound():
    round_seconds = 0.012
    gaps = [flush_gap(round_seconds, starved / 10) for starved in range(11)]
    assert gaps == sorted(gaps)
    assert flush_gap(round_seconds, 0.5) > 4 * round_seconds  # two busy processes on one core
    assert gaps[-1] <= STARVED_GAP_MAX
    assert flush_gap(10.0, 1.0) == STARVED_GAP_MAX


def test_a_backlogged_hub_pauses_longer_within_its_own_bound():
    assert is_backlogged(BACKLOG_BUSY, frames=100, writes=100)
    assert not is_backlogged(BACKLOG_BUSY - 0.2, frames=100, writes=100)  # it had time to idle
    # Waiting for its core half of the time, it runs at most the other half: not idle for that.
    assert is_backlogged(0.5, frames=100, writes=100, starved=0.5)
    assert not is_backlogged(0.2, frames=100, writes=100, starved=0.5)
    assert not is_backlogged(1.0, frames=1000, writes=100)  # its writes carry several frames already
    assert flush_gap(0.5, 0.0, backlogged=True) == BACKLOG_GAP_MAX
    assert flush_gap(0.012, 0.0, backlogged=True) == 0.012  # still as long as the round, no longer
    assert flush_gap(0.0001, 0.0, backlogged=True) == FLUSH_GAP_MIN
    assert flush_gap(10.0, 1.0, backlogged=True) == STARVED_GAP_MAX


async def busy_publishing(
    fanout: Fanout, topics: list[str], rounds: int, per_round: int | None = None
) -> list[tuple[float, float]]:
    """Publish to one topic after another while keeping the loop busy between flush rounds, as a hub
    does under a queue of publish requests; at most `per_round` events between two rounds (it goes on
    keeping the loop busy). Returns the pause and the starved share after each round."""
    after: list[tuple[float, float]] = []
    i = published = 0
    flushed_at = fanout.pacer.flushed_at
    while len(after) < rounds:
        if per_round is None or published < per_round:
            await fanout.publish([Draft((topics[i % len(topics)],), str(i))])
            i += 1
            published += 1
        spin(0.00001)  # well under a write: the rounds grow as long as their pause lets them
        await asyncio.sleep(0)
        if fanout.pacer.flushed_at != flushed_at:
            flushed_at = fanout.pacer.flushed_at
            published = 0
            after.append((fanout.pacer.pause, fanout.pacer.starved))
    return after


def beyond_the_usual_bound(pause: float, starved: float) -> bool:
    """Longer than any hub not backlogged would pause, whatever its round took (machine noise may
    have starved it a little)."""
    return pause > flush_gap(1.0, starved)


async def test_a_hub_busy_between_rounds_whose_writes_carry_one_frame_each_pauses_longer():
    fanout = await started_fanout()
    topics = [f"t{i}" for i in range(1000)]
    for topic in topics:
        await attach(fanout, topic, transport=BusyTransport())
    # at most an event per subscriber between two rounds, however long the pause (a starved machine's)
    after = await busy_publishing(fanout, topics, rounds=12, per_round=len(topics))
    assert any(beyond_the_usual_bound(*round_) for round_ in after)
    await fanout.stop()


async def test_a_busy_hub_whose_writes_carry_many_frames_keeps_the_usual_pause():
    fanout = await started_fanout()
    for _ in range(400):
        await attach(fanout, "all", transport=BusyTransport())
    after = await busy_publishing(fanout, ["all"], rounds=12)
    assert not any(beyond_the_usual_bound(*round_) for round_ in after)
    assert max(pause for pause, _ in after) > FLUSH_GAP_MAX / 2  # its rounds were long ones
    await fanout.stop()


async def test_a_hub_idle_between_rounds_keeps_the_usual_pause():
    fanout = await started_fanout()
    transports = [(await attach(fanout, f"t{i}", transport=BusyTransport()))[1] for i in range(400)]
    for i in range(6):
        await fanout.publish([Draft((f"t{j}",), str(i)) for j in range(400)])
        await settled(lambda i=i: all(f"data: {i}\n".encode() in b"".join(t.writes) for t in transports))
        assert not beyond_the_usual_bound(fanout.pacer.pause, fanout.pacer.starved)
        await asyncio.sleep(0.02)  # nothing else to do: the loop idles
    assert fanout.pacer.pause > FLUSH_GAP_MAX / 2  # its rounds were long ones
    await fanout.stop()


async def test_flush_rounds_spent_off_the_cpu_count_as_starved_and_stretch_the_pause():
    fanout = await started_fanout()
    transports = [(await attach(fanout, "t", transport=BlockingTransport()))[1] for _ in range(10)]
    await publish_in_rounds(fanout, transports)
    assert fanout.pacer.starved > 0.5
    assert flush_gap(0.02, fanout.pacer.starved) > FLUSH_GAP_MAX
    await asyncio.sleep(STARVED_MEMORY + 0.1)  # nothing to write: an idle hub is not short of CPU
    assert fanout.pacer.starved == 0
    await fanout.stop()


async def test_flush_rounds_on_the_cpu_do_not_count_as_starved():
    fanout = await started_fanout()
    transports = [(await attach(fanout, "t"))[1] for _ in range(300)]
    await publish_in_rounds(fanout, transports)
    assert fanout.pacer.starved < 0.35  # a preemption in the last round or two may show, not more
    await fanout.stop()


async def test_a_starved_fanout_holds_the_broker_between_rounds_and_reads_on_before_the_next(redis_server):
    config = RedisConfig(url=redis_server.url, prefix="t" + uuid.uuid4().hex[:10])
    fanout = Fanout(RedisBroker(config, HistoryConfig(), 60), heartbeat_interval=60, subscribe_timeout=5)
    await fanout.start()
    try:
        transports = [(await attach(fanout, "t", transport=BlockingTransport()))[1] for _ in range(10)]
        await publish_in_rounds(fanout, transports)  # each round's events arrive: no hold sticks
        assert fanout.pacer.starved > 0.5
        subscriber = fanout.broker._subscription.writer.transport
        assert not subscriber.is_reading()  # held right after the round...
        await settled(subscriber.is_reading, timeout=STARVED_GAP_MAX * READ_ON_AT + 1)  # ...not for long
    finally:
        await fanout.stop()
