"""The in-process broker's history, on its own."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

from hub.brokers.memory import MemoryBroker
from hub.config import HistoryConfig
from hub.wire.event import Draft, Event
from hub.wire.idempotency import Idempotency
from hub.wire.topics import Selector
from tests.support.work import counted_calls


def tracked_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


async def test_a_long_history_adds_nothing_for_the_garbage_collector_to_walk():
    broker = MemoryBroker(HistoryConfig(max_events=100_000), 60)
    before = tracked_objects()
    for start in range(0, 20_000, 1000):
        await broker.publish([Draft((f"gc/{i % 50}",), f"event {i}") for i in range(start, start + 1000)])
    # As Event objects, each held event was two more objects for every full collection to walk.
    assert tracked_objects() - before < 1000


async def test_history_gives_back_every_field_of_the_events_it_holds():
    broker = MemoryBroker(HistoryConfig(), 60)
    drafts = [
        Draft(("h/a",), {"n": [1, 2]}, event="update", retry=1500, retain=True),
        Draft(("h/a", "h/b"), "plain text"),
    ]
    ids = await broker.publish(drafts)
    page = await broker.history_page("h/a", None, 10)
    assert page.events == [Event.from_draft(id_, draft) for id_, draft in zip(ids, drafts, strict=True)]
    epoch = ids[0].rpartition("-")[0]
    selectors = (Selector.parse("h/a"), Selector.parse("h/b"))
    snapshot = await broker.snapshot(selectors, broker.parse_since(f"{epoch}-0"))
    assert [e.id for e in snapshot.events] == ids  # the event of two topics once


async def test_a_pattern_snapshot_costs_the_matching_topics_not_all_topics():
    # 87 ms of event loop per `public/**` subscribe once 80,000 topics existed: every topic was matched.
    broker = MemoryBroker(HistoryConfig(), 60)
    for start in range(0, 20_000, 1000):
        await broker.publish([Draft((f"other/{i}",), "x", retain=True) for i in range(start, start + 1000)])
    ids = await broker.publish([Draft((f"public/{i}",), i, retain=True) for i in range(5)])
    await broker.publish([Draft(("public/0",), "later")])
    selectors = [Selector.parse("public/**")]
    for since, expected in [
        (broker.parse_since(None), [0, 1, 2, 3, 4]),
        (broker.parse_since("earliest"), [0, 1, 2, 3, 4, "later"]),
        (broker.parse_since(ids[2]), [3, 4, "later"]),
    ]:
        with counted_calls() as calls:
            snapshot = await broker.snapshot(selectors, since)
        assert [e.data for e in snapshot.events] == expected
        assert calls.count < 500, (since, calls)


async def keyed_publishes_per_second(broker: MemoryBroker, start: int, count: int) -> float:
    began = time.perf_counter()
    for n in range(start, start + count):
        await broker.publish([Draft(("k",), n)], Idempotency(f"key {n}", "f"))
    return count / (time.perf_counter() - began)


async def test_a_keyed_publish_costs_the_same_with_many_keys_live():
    # Every keyed publish scanned every live key for expired ones: 5,119/s fell to 211/s at 28,000 keys.
    broker = MemoryBroker(HistoryConfig(), 3600)
    few = max([await keyed_publishes_per_second(broker, n, 200) for n in range(0, 1000, 200)])
    await keyed_publishes_per_second(broker, 1000, 9000)
    many = max([await keyed_publishes_per_second(broker, n, 200) for n in range(10_000, 11_000, 200)])
    assert many > few / 3, (few, many)  # flat, give or take a loaded machine's noise


async def test_expired_keys_are_forgotten_and_a_key_answers_again_only_within_its_window():
    broker = MemoryBroker(HistoryConfig(), 0.2)
    first = await broker.publish([Draft(("k",), 1)], Idempotency("key", "f"))
    assert await broker.publish([Draft(("k",), 1)], Idempotency("key", "f")) == first
    await asyncio.sleep(0.25)
    again = await broker.publish([Draft(("k",), 1)], Idempotency("key", "f"))
    assert again != first
    assert await broker.publish([Draft(("k",), 1)], Idempotency("key", "f")) == again


async def test_history_past_its_age_is_let_go_without_a_publish_to_its_topic():
    # Held until the topic's next publish: one-off topics kept theirs for ever.
    broker = MemoryBroker(HistoryConfig(max_age=0.1, ttl=0), 60)
    tracemalloc.start()
    try:
        await broker.publish([Draft((f"once/{i}",), str(i) * 100_000) for i in range(50)])
        assert tracemalloc.get_traced_memory()[0] > 5_000_000
        await asyncio.sleep(0.15)
        await broker.publish([Draft(("other",), "")])
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] < 1_000_000
    finally:
        tracemalloc.stop()
    assert broker.history_bytes < 1000
    assert broker.topic_count == 51  # emptied, still registered: a resume from before gets a reset
