"""Presence: who holds this process's streams (the fan-out's roster), shared through the broker's
directory; joins and leaves published on the topics that opted in; disconnects obeyed by every process.

Never on an event's path: a stream is entered when it subscribes and removed when it goes; the joins
and leaves are publishes of their own, in tasks, that a broker outage loses (and logs).
"""

from __future__ import annotations

import asyncio
import logging

from hub.brokers.directory import Directory, Listing
from hub.engine.fanout import Fanout
from hub.errors import HttpError
from hub.wire import frames
from hub.wire.event import Draft
from hub.wire.presence import Disconnect, Member, presence_data, presence_topic
from hub.wire.selector_set import SelectorSet
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

MAX_ANNOUNCING = 10_000  # joins and leaves being published at once; past it they are dropped (and logged)


class Presence:
    def __init__(
        self,
        fanout: Fanout,
        directory: Directory,
        *,
        events: tuple[str, ...],
        retry_ms: int,
        metrics_top: int = 0,
        interval: float = 1.0,
    ) -> None:
        self.fanout = fanout
        self.directory = directory
        self._retry = retry_ms
        self._metrics_top = metrics_top
        self._interval = interval
        # The hub-wide listing /metrics shows, read a round at a time (a scrape cannot wait on Redis).
        self.listing: Listing | None = None
        self._watching: asyncio.Task[None] | None = None
        self._events = SelectorSet(tuple(Selector.parse(text) for text in events))
        self._announcing: set[asyncio.Task[None]] = set()
        self._dropped = 0
        if events:
            fanout.roster.listener = self._announce

    async def start(self) -> None:
        await self.directory.start(self.fanout.roster, self)
        if self._metrics_top:
            self._watching = asyncio.create_task(self._watch(), name="hub-presence-metrics")

    async def close(self) -> None:
        self.fanout.roster.listener = None
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.wait([self._watching], timeout=self._interval + 1)
        if self._announcing:
            # The last leaves (the drain closed every stream) get the moment the shutdown has.
            await asyncio.wait(self._announcing, timeout=1.0)
            for task in self._announcing:
                task.cancel()
        await self.directory.close()

    def obey(self, command: Disconnect) -> int:
        """Close this process's streams that `command` names; returns how many."""
        return self.fanout.disconnect(command, frames.disconnected(command.reason, self._retry))

    async def disconnect(self, command: Disconnect) -> int:
        """Have every process close the streams `command` names; returns how many closed here, at once
        (the others close theirs within a round of the directory)."""
        await self.directory.send(command)
        return self.obey(command)

    async def counts(self, topic: str) -> dict[str, int]:
        return await self.directory.counts(topic)

    async def members(self, topic: str, limit: int) -> list[tuple[str, Member]]:
        return await self.directory.members(topic, limit)

    async def top(self, limit: int) -> Listing:
        return await self.directory.top(limit)

    async def _watch(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        failing = False
        # A cancellation a Redis client call swallowed still counts: the loop ends on it.
        while not task.cancelling():
            try:
                self.listing = await self.directory.top(self._metrics_top)
                failing = False
            except HttpError as exc:
                self.listing = None  # no figures rather than stale ones
                if not failing:
                    log.warning("hub-wide subscriber counts not read for /metrics: %s", exc.message)
                    failing = True
            await asyncio.sleep(self._interval)

    def announces(self, topic: str) -> bool:
        return self._events.matches(topic)

    def left(self, member: Member, topic: str) -> None:
        self._announce("leave", member, topic)

    def _announce(self, kind: str, member: Member, topic: str) -> None:
        if not self._events.matches(topic):
            return
        system = presence_topic(topic)
        if system is None:
            return
        if len(self._announcing) >= MAX_ANNOUNCING:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("%d joins and leaves not published: too many under way", self._dropped)
            return
        draft = Draft((system,), presence_data(member, topic), kind)
        task = asyncio.get_running_loop().create_task(self._publish(draft))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _publish(self, draft: Draft) -> None:
        try:
            await self.fanout.publish([draft])
        except HttpError as exc:
            log.warning("%s on %s not published: %s", draft.event, draft.topics[0], exc.message)
