"""The subscription registry: this process's subscribers by selector, fed by the broker, feeding outboxes.

Per event: one match, one encoding, then the same bytes appended to each matching outbox; the outboxes
given something to write are written in paced rounds (`hub/engine/pacing.py`). No task and no await per
subscriber, ever: the broker calls `on_event` synchronously and a slow client can only hurt itself (see
`Outbox`). What bytes an event becomes is `hub/wire/frames.py`'s; this module only chooses which.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from hub.brokers.base import Broker
from hub.engine.outbox import CloseReason, Outbox
from hub.engine.pacing import FlushPacer
from hub.engine.roster import Roster
from hub.errors import BrokerUnavailable
from hub.wire import chunked, formats
from hub.wire.cluster_ids import Stamp, VectorCursor
from hub.wire.event import Draft, Event
from hub.wire.formats import Format
from hub.wire.frames import HEARTBEATS, RESYNC, encoded_for, event_frame, relabeled
from hub.wire.idempotency import Idempotency
from hub.wire.ids import ContinuityLost, Cursor, Since, Snapshot
from hub.wire.presence import Disconnect
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

STOP_TIMEOUT = 2.0  # seconds to wait for the heartbeat task at shutdown
MAX_HELD = 10_000  # live events held for one subscriber while it reads its replay


_Group = dict[Outbox, None]  # insertion-ordered set


class Fanout:
    def __init__(self, broker: Broker[Any], *, heartbeat_interval: float, subscribe_timeout: float) -> None:
        self.broker = broker
        self.heartbeat_interval = heartbeat_interval
        self.subscribe_timeout = subscribe_timeout
        self._exact: dict[str, _Group] = {}
        self._patterns: dict[Selector, _Group] = {}
        self._refs: dict[Selector, int] = {}  # local subscribers per selector, writing or not
        self._live: dict[Selector, asyncio.Future[None]] = {}
        self._outboxes: _Group = {}
        self._replaying: _Group = {}
        # Subscribers in another format than SSE, or not chunked (HTTP/1.0): while there are none,
        # on_event appends the one chunked SSE frame to every target without looking at it.
        self._others = 0
        self._relabeled = 0  # ...or reading several cluster partitions: each needs its own kind of id
        # When the outboxes given something are written: `on_event` fills its `dirty`, it runs the rounds.
        self.pacer = FlushPacer(self._flush_one, broker.hold_reading)
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Read at scrape time by /metrics and /stats: plain integers, nothing on the hot path.
        self.counters: dict[str, int] = dict.fromkeys(
            ("published", "events", "deliveries", "dropped", "slow_consumers", "heartbeats"), 0
        )
        self._last_tick = time.monotonic()
        # Who holds each stream (presence): entered on subscribe, removed on unsubscribe.
        self.roster = Roster()

    @property
    def heartbeat_age(self) -> float:
        """Seconds since a tick last came back through the broker."""
        return time.monotonic() - self._last_tick

    @property
    def ready(self) -> bool:
        """The broker connected, and the whole path through it alive: a tick came back lately.

        A connection alone proves little: a Redis that is paused (or a network that drops packets
        without a reset) keeps its socket open while nothing flows. Two intervals, as for clients, with
        a second of slack for a busy loop."""
        return self.broker.ready and self.heartbeat_age <= max(
            2 * self.heartbeat_interval, self.heartbeat_interval + 1
        )

    # lifecycle

    async def start(self) -> None:
        self._last_tick = time.monotonic()
        await self.broker.start(self)
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="hub-heartbeats")

    async def stop(self) -> None:
        self.pacer.stop()
        if self._heartbeat_task is not None:
            task, self._heartbeat_task = self._heartbeat_task, None
            task.cancel()
            # Bounded: a tick stuck inside the Redis client (seen once, with Redis just killed, under
            # load) must not hold the shutdown up; the broker's close below ends its connections.
            await asyncio.wait([task], timeout=STOP_TIMEOUT)
            if not task.done():
                log.warning("heartbeat task did not stop within %.0f s; going on", STOP_TIMEOUT)
            elif not task.cancelled() and task.exception() is not None:
                log.warning("heartbeat task ended with %r", task.exception())
        await self.broker.close()

    def close_all(self, final: bytes | Callable[[], bytes] | None, reason: CloseReason) -> None:
        """Close every stream, after one last block of SSE (a short `retry:`; a callable: each its own)."""
        for outbox in list(self._outboxes):
            self.close(outbox, final() if callable(final) else final, reason)

    def close(self, outbox: Outbox, final: bytes | None, reason: CloseReason) -> None:
        """Close one stream, after what it has pending and, if SSE, one last block `final`."""
        if final is not None and outbox.transport is not None and outbox.format is Format.SSE:
            outbox.pending.append(chunked.frame(final) if outbox.chunked else final)
            outbox.flush()
        outbox.close(reason)
        # Now, not on connection_lost: a client that does not read can hold a closing transport open
        # for as long as it likes.
        self.unsubscribe(outbox)

    def disconnect(self, command: Disconnect, final: bytes) -> int:
        """Close the streams `command` names, each after `final` (SSE); returns how many."""
        closed = 0
        for outbox in list(self._outboxes):
            member = outbox.member
            if member is not None and command.matches(member, outbox.selectors):
                self.close(outbox, final, CloseReason.DISCONNECTED)
                closed += 1
        return closed

    def tell(self, outbox: Outbox, frame: bytes) -> None:
        """Write `frame` (encoded for the stream) to one stream in its turn, after the events before it."""
        if not frame or outbox.closed:
            return
        if not outbox.pending:
            self.pacer.dirty.append(outbox)
        outbox.pending.append(frame)
        self.pacer.schedule()

    async def publish(self, drafts: Sequence[Draft], idempotency: Idempotency | None = None) -> list[str]:
        """Hand validated drafts to the broker; returns their ids once accepted."""
        ids = await self.broker.publish(drafts, idempotency)
        self.counters["published"] += len(ids)
        return ids

    # subscriptions

    @property
    def connections(self) -> int:
        return len(self._outboxes)

    @property
    def selectors(self) -> Mapping[Selector, asyncio.Future[None]]:
        return self._live

    def registrations(self) -> dict[str, int]:
        """The size of every registry a subscriber is entered in: all zero once every subscriber has
        gone, whichever path it left by (leak checks)."""
        return {
            "connections": len(self._outboxes),
            "replaying": len(self._replaying),
            "selectors": len(self._refs),
            "live": len(self._live),
            "exact_groups": len(self._exact),
            "pattern_groups": len(self._patterns),
        }

    def parse_since(self, last_event_id: str | None) -> Since[Any]:
        """Where a subscriber resumes, read once by the broker into its own kind of position."""
        return self.broker.parse_since(last_event_id)

    async def subscribe(self, outbox: Outbox, since: Since[Any]) -> Snapshot:
        """Subscribe `outbox` and read what it gets before live events.

        Live events are held from the moment the broker confirms the subscription until
        `start_writing`, which merges them after the snapshot by id: no gap, no duplicate.
        Raises `BrokerUnavailable` (and registers nothing) if the broker does not answer in time."""
        self._outboxes[outbox] = None
        self._replaying[outbox] = None
        if outbox.member is not None:
            self.roster.join(outbox.member, outbox.selectors)
        if outbox.format is not Format.SSE or not outbox.chunked:
            self._others += 1
        waits = []
        for selector in outbox.selectors:
            refs = self._refs.get(selector, 0)
            self._refs[selector] = refs + 1
            if refs == 0:
                self._live[selector] = self.broker.subscribe(selector)
            live = self._live[selector]
            if not live.done():
                waits.append(live)
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                if waits:
                    # shield: one subscriber giving up must not cancel the others' wait on the same future.
                    # The gathering future outlives a timeout, and fails once `unsubscribe` cancels a
                    # wait: its exception is retrieved here, or asyncio logs it as never retrieved.
                    gathered = asyncio.gather(*waits)
                    gathered.add_done_callback(_retrieve)
                    await asyncio.shield(gathered)
                return await self.broker.snapshot(outbox.selectors, since)
        except TimeoutError:
            self.unsubscribe(outbox)
            raise BrokerUnavailable("the broker did not confirm the subscription in time") from None
        except BaseException:
            self.unsubscribe(outbox)
            raise

    def start_writing(self, outbox: Outbox, transport: asyncio.Transport, position: Cursor) -> None:
        """Go live after the snapshot up to `position` was written: the held live events after it
        first. Synchronous, so no event can slip in between."""
        held, outbox.held = outbox.held or [], None
        self._replaying.pop(outbox, None)
        if outbox.closed:
            return
        frames = []
        for event, stamp in held:
            try:
                event_id = position.place(event, stamp)
            except ContinuityLost:
                # the broker lost its data while we read: only a fresh resume can tell what is missing
                outbox.close(CloseReason.RESYNC)
                return
            if event_id is not None:
                labeled = relabeled(event, event_id)
                frame = encoded_for(outbox.format, outbox.chunked, outbox.selectors, labeled)
                if frame:
                    frames.append(frame)
        if isinstance(position, VectorCursor) and position.relabels:
            outbox.cursor = position
            self._relabeled += 1
        outbox.pending[:0] = frames
        for selector in outbox.selectors:
            group = self._group(selector, create=True)
            assert group is not None
            group[outbox] = None
        outbox.transport = transport
        self._flush_one(outbox)

    def unsubscribe(self, outbox: Outbox) -> None:
        if self._outboxes.pop(outbox, False) is False:
            return
        if outbox.member is not None:
            self.roster.leave(outbox.member, outbox.selectors)
        self._replaying.pop(outbox, None)
        if outbox.format is not Format.SSE or not outbox.chunked:
            self._others -= 1
        if outbox.cursor is not None:
            self._relabeled -= 1
        outbox.close(CloseReason.CLIENT_GONE)
        for selector in outbox.selectors:
            group = self._group(selector, create=False)
            if group is not None:
                group.pop(outbox, None)
                if not group:
                    if selector.is_pattern:
                        del self._patterns[selector]
                    else:
                        del self._exact[selector.text]
            refs = self._refs[selector] - 1
            if refs:
                self._refs[selector] = refs
                continue
            del self._refs[selector]
            live = self._live.pop(selector, None)
            if live is not None and not live.done():
                live.cancel()
            self.broker.unsubscribe(selector)

    def cut_off(self, outbox: Outbox) -> None:
        """Close a stream whose replay was not written: its client stopped reading it, or it was cut off
        meanwhile (see `_hold`). The caller dropped its connection."""
        if not outbox.closed:
            self._drop_replaying(outbox)
        self.unsubscribe(outbox)

    def _drop_replaying(self, outbox: Outbox) -> None:
        """Close a subscriber as a slow consumer while its replay is written, and let go of what was
        held for it: it resumes later, from history."""
        held, outbox.held = len(outbox.held or ()), None
        self._replaying.pop(outbox, None)
        outbox.close(CloseReason.SLOW_CONSUMER)
        self.counters["dropped"] += held
        self.counters["slow_consumers"] += 1
        log.info("closed a slow consumer of %s during its replay", ",".join(s.text for s in outbox.selectors))

    def _group(self, selector: Selector, *, create: bool) -> _Group | None:
        if selector.is_pattern:
            if create:
                return self._patterns.setdefault(selector, {})
            return self._patterns.get(selector)
        if create:
            return self._exact.setdefault(selector.text, {})
        return self._exact.get(selector.text)

    # the broker's sink

    def on_event(self, event: Event, stamp: Stamp | None = None) -> None:
        self.counters["events"] += 1
        # split the topics once, and only when a pattern or a replaying subscriber needs segments
        parts = [t.split("/") for t in event.topics] if self._patterns or self._replaying else []
        if self._replaying:
            self._hold(event, stamp, parts)
        targets = self._match(event.topics, parts)
        if not targets:
            return
        if self._others or self._relabeled:
            self._deliver_mixed(event, stamp, targets)
            return
        frame = event_frame(event)
        pacer = self.pacer
        dirty = pacer.dirty
        for outbox in targets:
            pending = outbox.pending
            if not pending:
                dirty.append(outbox)
            pending.append(frame)
        self.counters["deliveries"] += len(targets)
        if pacer.handle is None:
            pacer.schedule()

    def _deliver_mixed(self, event: Event, stamp: Stamp | None, targets: Iterable[Outbox]) -> None:
        """`on_event` while some stream is in another format, or reads several cluster partitions:
        each kind of frame a target needs encoded once (NDJSON once per topic it is delivered under,
        cluster ids once per set of partitions)."""
        encoded: dict[tuple[Format, bool, str, str], bytes] = {}
        dirty = self.pacer.dirty
        count = 0
        for outbox in targets:
            fmt = outbox.format
            topic = formats.first_topic(event, outbox.selectors) if fmt is Format.NDJSON else ""
            event_id = event.id
            cursor = outbox.cursor
            if cursor is not None and stamp is not None:
                if cursor.duplicate(stamp.partition, stamp.cross):
                    continue  # it comes through a lower partition of this subscriber's too
                event_id = stamp.id_for(cursor.mask)
            key = (fmt, outbox.chunked, topic, event_id)
            data = encoded.get(key)
            if data is None:
                labeled = relabeled(event, event_id)
                data = encoded[key] = encoded_for(fmt, outbox.chunked, outbox.selectors, labeled)
            count += 1
            if not data:
                continue  # empty text: nothing to write, and an empty chunk would end the stream
            pending = outbox.pending
            if not pending:
                dirty.append(outbox)
            pending.append(data)
        self.counters["deliveries"] += count
        self.pacer.schedule()

    def on_tick(self) -> None:
        self._last_tick = time.monotonic()
        self.counters["heartbeats"] += 1
        dirty = self.pacer.dirty
        for outbox in self._outboxes:
            beat = HEARTBEATS[outbox.format, outbox.heartbeat_event, outbox.chunked]
            if not beat:
                continue
            if not outbox.pending:
                dirty.append(outbox)
            outbox.pending.append(beat)
        self.pacer.schedule()

    def on_lost(self, reason: str) -> None:
        self.close_all(RESYNC, CloseReason.RESYNC)

    def _hold(self, event: Event, stamp: Stamp | None, parts: list[list[str]]) -> None:
        for outbox in list(self._replaying):
            held = outbox.held
            if held is not None and any(
                selector.matches_segments(p) for selector in outbox.selectors for p in parts
            ):
                held.append((event, stamp))
                outbox.held_bytes += event.size
                # Held events are output it has not taken yet, bounded as any is: reading its replay
                # slower than they come, it resumes later (its replay is stopped and its connection
                # dropped, see `write_replay`). start_writing would encode them all at once otherwise.
                if outbox.held_bytes > outbox.max_buffer or len(held) > MAX_HELD:
                    self._drop_replaying(outbox)

    def _match(self, topics: tuple[str, ...], parts: list[list[str]]) -> Collection[Outbox]:
        exact = self._exact
        if len(topics) == 1 and not self._patterns:
            return exact.get(topics[0], ())  # most events, without building a list of groups
        groups: list[_Group] = []
        for topic in topics:
            group = exact.get(topic)
            if group:
                groups.append(group)
        if self._patterns:
            for selector, group in self._patterns.items():
                if any(selector.matches_segments(p) for p in parts):
                    groups.append(group)
        if len(groups) == 1:
            return groups[0]
        if not groups:
            return ()
        merged: _Group = {}
        for group in groups:
            merged.update(group)
        return merged

    # writing

    def _flush_one(self, outbox: Outbox) -> int:
        """Write `outbox`'s pending frames; returns how many there were."""
        frames = len(outbox.pending)
        reason = outbox.flush()
        if reason is None:
            return frames
        self.unsubscribe(outbox)
        if reason is CloseReason.SLOW_CONSUMER:
            self.counters["dropped"] += frames  # written into a buffer that was then thrown away
            self.counters["slow_consumers"] += 1
            log.info("closed a slow consumer of %s", ",".join(s.text for s in outbox.selectors))
        return frames

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.broker.tick()
            except BrokerUnavailable:
                # No tick, no heartbeat: clients notice the silence, which is the point.
                log.warning("heartbeat tick not sent: broker unavailable")


def _retrieve(future: asyncio.Future[list[None]]) -> None:
    if not future.cancelled():
        future.exception()
