"""The subscription registry on its own: one encoding per event, no task per subscriber, a slow
consumer cut off alone, every registry empty once its subscribers leave. (When it writes: test_pacing.)"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from hub.brokers.memory import MemoryBroker
from hub.brokers.redis import RedisBroker
from hub.config import HistoryConfig, RedisConfig
from hub.engine.fanout import Fanout
from hub.engine.outbox import CloseReason
from hub.errors import BrokerUnavailable
from hub.http.server import free_port
from hub.wire import chunked
from hub.wire.event import Draft
from hub.wire.formats import Format
from tests.support.fanout import attach


async def started_fanout() -> Fanout:
    fanout = Fanout(MemoryBroker(HistoryConfig(), 60), heartbeat_interval=60, subscribe_timeout=1)
    await fanout.start()
    return fanout


async def test_a_subscribe_the_broker_never_confirms_leaves_no_exception_unretrieved(caplog):
    # A Redis that is down: each subscribe times out, and `unsubscribe` cancels its wait inside the
    # shielded gather, which asyncio used to report as "_GatheringFuture exception was never retrieved".
    broker = RedisBroker(RedisConfig(url=f"redis://127.0.0.1:{free_port()}"), HistoryConfig(), 60)
    fanout = Fanout(broker, heartbeat_interval=60, subscribe_timeout=0.1)
    await fanout.start()
    try:
        for i in range(3):
            with pytest.raises(BrokerUnavailable):
                await attach(fanout, f"down/{i}")
        await asyncio.sleep(0)
        gc.collect()
    finally:
        await fanout.stop()
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_an_event_is_encoded_once_for_all_subscribers_without_tasks():
    fanout = await started_fanout()
    transports = [(await attach(fanout, "room"))[1] for _ in range(200)]
    tasks = len(asyncio.all_tasks())
    await fanout.publish([Draft(("room",), "hello")])
    assert len(asyncio.all_tasks()) == tasks
    for _ in range(2):  # two slices of writes (FLUSH_SLICE)
        await asyncio.sleep(0)
    first = transports[0].writes[0]
    assert b"data: hello\n" in first
    assert all(len(t.writes) == 1 and t.writes[0] is first for t in transports)
    await fanout.stop()


async def test_a_stalled_connection_is_cut_off_alone():
    fanout = await started_fanout()
    slow, slow_transport = await attach(fanout, "t", max_buffer=1000, stalled=True)
    fast, fast_transport = await attach(fanout, "t")
    for i in range(30):
        await fanout.publish([Draft(("t",), "x" * 100 + str(i))])
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # a busy hub pauses milliseconds between flush rounds (hub/engine/pacing.py)
    assert slow.close_reason is CloseReason.SLOW_CONSUMER
    assert slow_transport.aborted
    assert fanout.counters["slow_consumers"] == 1
    assert b"".join(fast_transport.writes).count(b"data: ") == 30  # in fewer writes: flushes coalesce
    assert not fast.closed
    await fanout.stop()


async def test_last_subscriber_leaving_releases_the_selector():
    fanout = await started_fanout()
    a, _ = await attach(fanout, "x", "y/*")
    b, _ = await attach(fanout, "x")
    fanout.unsubscribe(a)
    assert set(s.text for s in fanout.selectors) == {"x"}
    fanout.unsubscribe(b)
    assert not fanout.selectors
    assert fanout.connections == 0
    await fanout.stop()


async def test_registrations_count_every_subscriber_and_drop_to_zero_when_they_leave():
    fanout = await started_fanout()
    (a, _), (b, _) = await attach(fanout, "room", "jobs/*"), await attach(fanout, "room")
    assert fanout.registrations() == {
        "connections": 2,
        "replaying": 0,
        "selectors": 2,
        "live": 2,
        "exact_groups": 1,
        "pattern_groups": 1,
    }
    fanout.unsubscribe(a)
    fanout.unsubscribe(b)
    assert set(fanout.registrations().values()) == {0}
    await fanout.stop()


async def test_closing_every_stream_ends_each_cleanly_and_drops_it_at_once():
    fanout = await started_fanout()
    # a client that never reads never lets a closing transport finish: nothing may wait on that
    _, stalled = await attach(fanout, "t", stalled=True)
    _, plain = await attach(fanout, "t")
    fanout.close_all(b"retry: 100\n\n", CloseReason.SHUTDOWN)
    assert fanout.connections == 0
    assert not fanout.selectors
    for transport in (stalled, plain):
        assert transport.closed
        assert transport.writes[-2:] == [chunked.frame(b"retry: 100\n\n"), chunked.LAST_CHUNK]
    writes = len(plain.writes)
    await fanout.publish([Draft(("t",), "after")])
    await asyncio.sleep(0)
    assert len(plain.writes) == writes
    await fanout.stop()


async def test_a_slow_consumer_is_dropped_when_cut_off():
    fanout = await started_fanout()
    slow, _ = await attach(fanout, "t", max_buffer=10, stalled=True)
    await fanout.publish([Draft(("t",), "x" * 100)])
    await asyncio.sleep(0)
    assert slow.close_reason is CloseReason.SLOW_CONSUMER
    assert fanout.connections == 0
    await fanout.stop()


async def test_mixed_formats_encode_each_format_once_and_ndjson_once_per_topic():
    fanout = await started_fanout()
    sse = [(await attach(fanout, "a/1"))[1] for _ in range(3)]
    text = [(await attach(fanout, "a/*", format=Format.TEXT))[1] for _ in range(3)]
    by_a = [(await attach(fanout, "a/1", format=Format.NDJSON))[1] for _ in range(3)]
    by_b = [(await attach(fanout, "b/*", format=Format.NDJSON))[1] for _ in range(3)]
    await fanout.publish([Draft(("a/1", "b/1"), "hi")])
    await asyncio.sleep(0)
    for group in (sse, text, by_a, by_b):
        assert all(len(t.writes) == 1 and t.writes[0] is group[0].writes[0] for t in group)
    assert text[0].writes[0] == chunked.frame(b"hi")
    assert b'"topic":"a/1"' in by_a[0].writes[0]
    assert b'"topic":"b/1"' in by_b[0].writes[0]
    assert b"data: hi\n" in sse[0].writes[0]
    await fanout.stop()


async def test_an_empty_text_event_writes_nothing_rather_than_an_empty_chunk():
    fanout = await started_fanout()
    _, transport = await attach(fanout, "t", format=Format.TEXT)
    await fanout.publish([Draft(("t",), "")])
    await asyncio.sleep(0)
    assert transport.writes == []  # b"0\r\n\r\n" would have ended the stream
    await fanout.publish([Draft(("t",), "x")])
    await asyncio.sleep(0)
    assert transport.writes == [chunked.frame(b"x")]
    await fanout.stop()


async def test_the_sse_only_path_returns_once_the_last_other_format_leaves():
    fanout = await started_fanout()
    outbox, _ = await attach(fanout, "a", format=Format.NDJSON)
    assert fanout._others == 1
    fanout.unsubscribe(outbox)
    fanout.unsubscribe(outbox)  # a second unsubscribe counts nothing
    assert fanout._others == 0
    await fanout.stop()
