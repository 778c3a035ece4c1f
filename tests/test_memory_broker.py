"""The in-process broker's history, on its own."""

from __future__ import annotations

import gc

from hub.brokers.memory import MemoryBroker
from hub.config import HistoryConfig
from hub.event import Draft, Event
from hub.history import Since
from hub.topics import Selector
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
    snapshot = await broker.snapshot(selectors, Since.parse(f"{epoch}-0"))
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
        (Since.parse(None), [0, 1, 2, 3, 4]),
        (Since.parse("earliest"), [0, 1, 2, 3, 4, "later"]),
        (Since.parse(ids[2]), [3, 4, "later"]),
    ]:
        with counted_calls() as calls:
            snapshot = await broker.snapshot(selectors, since)
        assert [e.data for e in snapshot.events] == expected
        assert calls.count < 500, (since, calls)
