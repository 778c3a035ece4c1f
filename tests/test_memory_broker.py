"""The in-process broker's history, on its own."""

from __future__ import annotations

import gc

from hub.brokers.memory import MemoryBroker
from hub.config import HistoryConfig
from hub.event import Draft, Event
from hub.history import Since
from hub.topics import Selector


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
