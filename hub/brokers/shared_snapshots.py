"""New subscribers of the same topics, arriving together, share one snapshot read.

A stream opened without a Last-Event-ID reads the broker's position and its topics' retained state: the
same answer for every such stream of the same selectors read at the same moment. On Redis each read is a
script call over a pooled connection, and when thousands of streams open at once (a deploy, a herd
reconnecting, 12,500 per worker in `python -m bench connections`) they queue for the pool until the last
wait longer than the subscribe timeout and are refused (503). Here, while one read of a selector set is
in flight, the subscribers that ask join the next one, which starts as soon as it ends. Every subscriber
of a read asked before the read started, so its live events were already held from before the position
it reads: the snapshot is as good as one of its own. A burst costs a few reads, not one per stream.
Resumes (a Last-Event-ID, `earliest`) read on their own: their answers differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from hub.wire.ids import Since, SinceKind, Snapshot
from hub.wire.topics import Selector

P = TypeVar("P")
Read = Callable[[Sequence[Selector], Since[P]], Awaitable[Snapshot]]


class SharedSnapshots(Generic[P]):
    def __init__(self, read: Read[P]) -> None:
        self._read = read
        self._reading: dict[tuple[Selector, ...], asyncio.Future[Snapshot]] = {}
        self._next: dict[tuple[Selector, ...], asyncio.Future[Snapshot]] = {}

    async def snapshot(self, selectors: Sequence[Selector], since: Since[P]) -> Snapshot:
        if since.kind is not SinceKind.NEW:
            return await self._read(selectors, since)
        key = tuple(selectors)
        if key not in self._reading:
            shared = self._start(key, since)
        elif key in self._next:
            shared = self._next[key]
        else:
            shared = self._next[key] = asyncio.get_running_loop().create_future()
            shared.add_done_callback(_retrieve)
        # shield: one subscriber giving up (its client gone, its timeout) must not cancel the others' read
        snapshot = await asyncio.shield(shared)
        # Each its own list: a stream takes its snapshot's events out as it writes them.
        return Snapshot(snapshot.position, list(snapshot.events), snapshot.reset)

    def _start(self, key: tuple[Selector, ...], since: Since[P]) -> asyncio.Future[Snapshot]:
        reading = asyncio.ensure_future(self._read(key, since))
        self._reading[key] = reading
        reading.add_done_callback(lambda done: self._finished(key, since, done))
        return reading

    def _finished(self, key: tuple[Selector, ...], since: Since[P], done: asyncio.Future[Snapshot]) -> None:
        _retrieve(done)
        del self._reading[key]
        waiting = self._next.pop(key, None)
        if waiting is not None:
            self._start(key, since).add_done_callback(lambda read: _pass_on(read, waiting))

    def reads_in_flight(self) -> int:
        """Reads running or waiting to (leak checks: zero once every subscriber has its snapshot)."""
        return len(self._reading) + len(self._next)


def _pass_on(read: asyncio.Future[Snapshot], waiting: asyncio.Future[Snapshot]) -> None:
    if waiting.done():
        return
    if read.cancelled():
        waiting.cancel()
    elif (exc := read.exception()) is not None:
        waiting.set_exception(exc)
    else:
        waiting.set_result(read.result())


def _retrieve(future: asyncio.Future[Snapshot]) -> None:
    """A failed read whose subscribers all gave up is nobody's to raise: asyncio would log it."""
    if not future.cancelled():
        future.exception()
