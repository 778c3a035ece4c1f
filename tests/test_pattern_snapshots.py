"""What a pattern subscription reads before it goes live, on every broker: the retained state and the
replay of exactly the topics it matches, read from indexes by the pattern's literal prefix. Topics whose
names sort right next to a prefix (`public0`, `public.x`, `publiç`) are where an index read can slip."""

from __future__ import annotations

import itertools

from hub.wire.topics import Selector
from tests.support.hub_client import HubUnderTest

NEAR = [
    "public",
    "public/",
    "public//a",
    "public/a",
    "public/a/b",
    "public/a0",
    "public/é",
    "public/é/b",
    "public0",
    "public0/a",
    "public-/a",
    "public.x/a",
    "publicX/a",
    "publiç/a",
    "pub/lic",
    "other/public/a",
    "日本/a",
    "/a",
    "/",
]
# Each pattern, and a topic of its own that it matches, to publish as a marker: a stream that shows the
# marker next has sent nothing more before it.
PATTERNS = {
    "public/**": "public/~m",
    "public/*": "public/~m",
    "public/*/b": "public/~m/b",
    "public/a/**": "public/a/~m",
    "*/a": "~m/a",
    "**": "~m",
    "/*": "/~m",
}


class Published:
    def __init__(self, hub: HubUnderTest) -> None:
        self.hub = hub
        self.events: list[tuple[str, str, bool]] = []  # topic, data, retained
        self.marks = itertools.count()

    async def __call__(self, topic: str, data: str, retain: bool = False) -> None:
        await self.hub.publish({"topic": topic, "data": data, "retain": retain})
        self.events.append((topic, data, retain))

    def matching(self, pattern: str, start: int = 0, *, retained: bool = False) -> list[str]:
        selector = Selector.parse(pattern)
        return sorted(d for t, d, r in self.events[start:] if selector.matches(t) and (r or not retained))

    async def check(self, stream, pattern: str, expected: list[str]) -> str:
        """The stream sends exactly `expected` (in any order: a cluster's partitions have no common
        order), then a marker; returns the marker's id."""
        got = await stream.take(len(expected))
        assert sorted(e.data for e in got) == expected, pattern
        mark = f"mark {next(self.marks)}"
        await self(PATTERNS[pattern], mark)
        event = await stream.next_event()
        assert event.data == mark, (pattern, event.data)
        return stream.last_event_id


async def test_a_pattern_gets_the_state_and_replay_of_exactly_its_topics_beside_its_prefix(hub):
    publish = Published(hub)
    opened = {}  # pattern -> (a position before anything it matches, events published by then)
    for pattern in PATTERNS:
        async with hub.subscribe(pattern) as stream:
            opened[pattern] = (await publish.check(stream, pattern, []), len(publish.events))
    for topic in NEAR:
        await publish(topic, f"state {topic}", retain=True)
    for topic in NEAR:
        await publish(topic, f"event {topic}")
    later = {}
    for pattern in PATTERNS:
        async with hub.subscribe(pattern) as stream:
            position = await publish.check(stream, pattern, publish.matching(pattern, retained=True))
            later[pattern] = (position, len(publish.events))
    for topic in ("public/a", "public0", "publicX/a", "public/é/b", "日本/a"):
        await publish(topic, f"after {topic}")
    for pattern in PATTERNS:
        # From before anything (a read by prefix, on Redis), and from after most (a read of the topics
        # that changed since), then everything retained.
        for position, start in (opened[pattern], later[pattern]):
            async with hub.subscribe(pattern, headers={"Last-Event-ID": position}) as stream:
                await publish.check(stream, pattern, publish.matching(pattern, start))
        async with hub.subscribe(pattern, lastEventId="earliest") as stream:
            await publish.check(stream, pattern, publish.matching(pattern))
