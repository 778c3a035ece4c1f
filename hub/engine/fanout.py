"""The fan-out engine: a registry of this process's subscriptions, fed by the broker, feeding outboxes.

Per event: one match, one encoding, then the same bytes appended to each matching outbox; dirty outboxes
are flushed together once per loop iteration. No task and no await per subscriber, ever: the broker
calls `on_event` synchronously and a slow client can only hurt itself (see `Outbox`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Collection, Iterable, Iterator, Mapping, Sequence

import orjson

from hub.brokers.base import Broker
from hub.engine.outbox import CloseReason, Outbox
from hub.errors import BadRequest, BrokerUnavailable, Conflict
from hub.wire import chunked, formats, sse
from hub.wire.cluster_ids import VectorCursor
from hub.wire.event import Draft, Event
from hub.wire.formats import Format
from hub.wire.idempotency import Idempotency
from hub.wire.ids import RESET_EPOCH, ContinuityLost, Cursor, Position, Since, Snapshot
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

HEARTBEAT_COMMENT = sse.encode_comment()
HEARTBEAT_EVENT = sse.encode_event("", event="heartbeat")


def wire(body: bytes, is_chunked: bool) -> bytes:
    """`body` as written to a transport. Empty stays empty: an empty chunk would end the stream."""
    if not body:
        return b""
    return chunked.frame(body) if is_chunked else body


# format -> heartbeat kind -> chunked? -> bytes, so the tick picks without encoding anything. A text
# stream gets none: anything written there would become part of the text.
_HEARTBEAT_BODIES = {
    (Format.SSE, False): HEARTBEAT_COMMENT,
    (Format.SSE, True): HEARTBEAT_EVENT,
    (Format.NDJSON, False): formats.NDJSON_HEARTBEAT,
    (Format.NDJSON, True): formats.NDJSON_HEARTBEAT_EVENT,
    (Format.TEXT, False): b"",
    (Format.TEXT, True): b"",
}
HEARTBEATS = {
    (fmt, event, is_chunked): wire(body, is_chunked)
    for (fmt, event), body in _HEARTBEAT_BODIES.items()
    for is_chunked in (True, False)
}
RESYNC = sse.encode_retry(500)


# Under load, a flush waits as long as the last one took (within these bounds, seconds) after it
# ended: a quiet hub writes each event at once; a busy one gives about half its time to what arrives,
# which then goes out in one write per subscriber. The bound keeps the added latency to milliseconds.
FLUSH_GAP_MIN = 0.001
FLUSH_GAP_MAX = 0.005
# A hub that waits for its core during a round (another process on it, a CPU quota, a hypervisor) is
# starved: the core is saturated, and every write (a syscall through the TCP stack, some 10 µs) costs
# time nobody has. Above STARVED_NOISE, the starved share of its rounds stretches the pause, up to
# STARVED_GAP_MAX when it gets none of the core: fewer, larger writes. Two hubs on one core deliver
# 1.3x to 1.6x as much this way (`python -m bench load --scenarios redis`, medians of 4: 12 gave less,
# 48 no more); a hub with a core of its own keeps the pause above.
STARVED_NOISE = 0.1
STARVED_STRETCH = 24.0
STARVED_GAP_MAX = 0.25
STARVED_SMOOTHING = 0.25  # weight of the last round in the running starved share
STARVED_MEMORY = 1.0  # seconds without a flush round after which the starved share starts again from 0
# A starved hub on Redis also stops reading its events during the pause, and reads on at this share of
# it: what came meanwhile is read in one go, just before the flush that writes it, instead of waking the
# process (and taking the core from the other) once per event. Two hubs on one core: 1.56M against
# 1.30M deliveries/s (`redis`, medians of 6 interleaved runs; 9 of 10 pairs higher).
READ_ON_AT = 0.9
# A backlogged hub: its loop ran all the while between two rounds (requests waiting), and its writes
# carried about one frame each, as when each event goes to other subscribers (`topics`): a syscall per
# delivery. It pauses up to BACKLOG_GAP_MAX instead, so that a subscriber's next events share a write:
# `topics` 1.12x deliveries (medians of 4 interleaved runs). `latency` is unchanged (a hub with time to
# spare idles between rounds), and so is `fanout`, whose writes carry many frames each already.
BACKLOG_BUSY = 0.9  # share of the time between two rounds the hub ran
BACKLOG_FRAMES = 2.0  # frames per write below which writing is mostly one syscall per delivery
BACKLOG_GAP_MAX = 0.02
# Outboxes written per callback: between two slices the loop reads its sockets, so a publish waiting
# on Redis, or a request, is not held up for a whole flush (thousands of writes: milliseconds).
FLUSH_SLICE = 128
STOP_TIMEOUT = 2.0  # seconds to wait for the heartbeat task at shutdown
MAX_HELD = 10_000  # live events held for one subscriber while it reads its replay
HISTORY_PAGE = 1000  # events read from the broker at a time for a history download


def flush_gap(round_seconds: float, starved: float, backlogged: bool = False) -> float:
    """The pause after a flush round that took `round_seconds`, a share `starved` of which the hub spent
    waiting for its core rather than running; longer bounds for a `backlogged` hub (`is_backlogged`)."""
    excess = max(0.0, starved - STARVED_NOISE) / (1 - STARVED_NOISE)
    gap = round_seconds * (1 + STARVED_STRETCH * excess)
    base = BACKLOG_GAP_MAX if backlogged else FLUSH_GAP_MAX
    bound = base + (STARVED_GAP_MAX - base) * excess
    return min(max(gap, FLUSH_GAP_MIN), bound)


def is_backlogged(busy: float, frames: int, writes: int, starved: float = 0.0) -> bool:
    """Whether a round that wrote `frames` in `writes`, after a share `busy` of the time since the last
    round was spent running, came from a saturated hub whose deliveries each cost a write. A hub that
    waits for its core a share `starved` of the time runs at most the rest of it, however much it has
    to do."""
    return busy >= BACKLOG_BUSY * (1 - starved) and frames < BACKLOG_FRAMES * writes


def relabeled(event: Event, event_id: str) -> Event:
    """`event` under the id one subscriber gets (on a cluster, its partitions' positions)."""
    if event_id == event.id:
        return event
    return Event(event_id, event.topics, event.data, event.event, event.retry, event.retain)


def event_body(event: Event) -> bytes:
    data = sse.data_text(event.data)
    return sse.encode_event(data, id=event.id, event=event.event, retry=event.retry)


def event_frame(event: Event) -> bytes:
    return chunked.frame(event_body(event))


def encoded_for(outbox: Outbox, event: Event) -> bytes:
    """`event` as `outbox` gets it on the wire, whatever its format (the slow path: see `on_event`)."""
    if outbox.format is Format.SSE:
        return event_frame(event) if outbox.chunked else event_body(event)
    return wire(_other_body(outbox.format, event, outbox.selectors), outbox.chunked)


def _other_body(fmt: Format, event: Event, selectors: Sequence[Selector]) -> bytes:
    topic = formats.first_topic(event, selectors) if fmt is Format.NDJSON else ""
    return formats.encode(fmt, event, topic)


def snapshot_bodies(
    snapshot: Snapshot,
    batch: int = 64 * 1024,
    fmt: Format = Format.SSE,
    selectors: Sequence[Selector] = (),
) -> Iterator[bytes]:
    """The bytes a subscriber gets before live events, in batches: a reset if any, the replayed or
    retained events, then (SSE only) a position line so even a quiet client resumes from here.

    NDJSON carries the reset as a line and ids in its objects; text carries the events' data only.
    Takes the events out of `snapshot` as it goes, so that none is held once written."""
    parts: list[bytes] = []
    size = 0
    if snapshot.reset is not None:
        if fmt is Format.SSE:
            reset = orjson.dumps({"reason": snapshot.reset}).decode()
            parts.append(sse.encode_event(reset, event="reset"))
        elif fmt is Format.NDJSON:
            parts.append(formats.ndjson_reset(snapshot.reset))
    events = snapshot.events
    events.reverse()  # popped from the end: each in O(1)
    position = str(snapshot.position)
    del snapshot
    while events:
        event = events.pop()
        body = event_body(event) if fmt is Format.SSE else _other_body(fmt, event, selectors)
        parts.append(body)
        size += len(body)
        if size >= batch:
            yield b"".join(parts)
            parts, size = [], 0
    if fmt is Format.SSE:
        parts.append(sse.encode_position(position))
    yield b"".join(parts)


_Group = dict[Outbox, None]  # insertion-ordered set


class Fanout:
    def __init__(self, broker: Broker, *, heartbeat_interval: float, subscribe_timeout: float) -> None:
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
        self._dirty: list[Outbox] = []
        self._flush_handle: asyncio.Handle | None = None
        self._flushed_at = 0.0  # loop time the last flush ended
        self._flushing: list[Outbox] | None = None  # the flush under way: its outboxes...
        self._flush_next = 0  # ...the next slice's start...
        self._flush_clocks = (0.0, 0.0)  # ...and the wall and CPU clocks at its start (was it starved?)
        self._starved = 0.0  # running share of flush rounds spent waiting for the core
        self._round_end = (0.0, 0.0)  # wall and CPU clocks at the end of the last round
        self._busy = 0.0  # share of the time between the last round and this one the hub ran
        self._round_frames = 0  # frames this round has written so far
        self._flush_gap = FLUSH_GAP_MIN
        self._read_on: asyncio.TimerHandle | None = None  # set while the broker's reading is held
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Read at scrape time by /metrics and /stats: plain integers, nothing on the hot path.
        self.counters: dict[str, int] = dict.fromkeys(
            ("published", "events", "deliveries", "dropped", "slow_consumers", "heartbeats"), 0
        )
        self._last_tick = time.monotonic()

    @property
    def heartbeat_age(self) -> float:
        """Seconds since a tick last came back through the broker."""
        return time.monotonic() - self._last_tick

    @property
    def flush_pause(self) -> float:
        """Seconds the next flush round waits after the last one ended, if events are waiting."""
        return self._flush_gap

    @property
    def starved(self) -> float:
        """The running share of flush rounds this process spent waiting for its core, from 0 to 1:
        well above 0, it needs more CPU than it gets. 0 once it has had nothing to write for a while."""
        if self._flushing is None and self._quiet(asyncio.get_running_loop().time()):
            return 0.0
        return self._starved

    def _quiet(self, now: float) -> bool:
        return now - self._flushed_at > STARVED_MEMORY

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
        if self._read_on is not None:
            self._read_on.cancel()
            self._read_again()
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
            if final is not None and outbox.transport is not None and outbox.format is Format.SSE:
                block = final() if callable(final) else final
                outbox.pending.append(chunked.frame(block) if outbox.chunked else block)
                outbox.flush()
            outbox.close(reason)
            # Now, not on connection_lost: a client that does not read can hold a closing
            # transport open for as long as it likes.
            self.unsubscribe(outbox)

    async def publish(self, drafts: Sequence[Draft], idempotency: Idempotency | None = None) -> list[str]:
        """Hand validated drafts to the broker; returns their ids once accepted."""
        ids = await self.broker.publish(drafts, idempotency)
        self.counters["published"] += len(ids)
        return ids

    async def history(
        self, topic: str, after_id: str | None, limit: int | None, page_size: int = HISTORY_PAGE
    ) -> AsyncGenerator[list[Event], None]:
        """`topic`'s retained events after `after`, oldest first, at most `limit`, page by page: nothing
        holds more than one page. Raises `Conflict` when `after` is from another epoch (or later than
        anything issued), and when the broker loses its data between two pages: the pages read so far
        then belong to a history that is gone. Raises `BadRequest` for an id this hub did not issue."""
        after: Position | None = None
        if after_id is not None:
            after = await self.broker.resolve_after(topic, after_id)
            if after is None:
                raise BadRequest("invalid_parameter", f"after {after_id!r} is not an event id of this hub")
        epoch = None
        left = limit
        while left is None or left > 0:
            want = page_size if left is None else min(page_size, left)
            page = await self.broker.history_page(topic, after, want)
            position = page.position
            if epoch is None:
                epoch = position.epoch
                if after is not None and (after.epoch != epoch or after.seq > position.seq):
                    raise Conflict("history_lost", RESET_EPOCH)
            elif position.epoch != epoch:
                raise Conflict("history_lost", "the broker lost its history during the read")
            if page.events:
                yield page.events
                after = page.last
                if left is not None:
                    left -= len(page.events)
            if len(page.events) < want:
                return

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

    async def subscribe(self, outbox: Outbox, since: Since) -> Snapshot:
        """Subscribe `outbox` and read what it gets before live events.

        Live events are held from the moment the broker confirms the subscription until
        `start_writing`, which merges them after the snapshot by id: no gap, no duplicate.
        Raises `BrokerUnavailable` (and registers nothing) if the broker does not answer in time."""
        self._outboxes[outbox] = None
        self._replaying[outbox] = None
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
        for event in held:
            try:
                event_id = position.place(event)
            except ContinuityLost:
                # the broker lost its data while we read: only a fresh resume can tell what is missing
                outbox.close(CloseReason.RESYNC)
                return
            if event_id is not None:
                frame = encoded_for(outbox, relabeled(event, event_id))
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

    def on_event(self, event: Event) -> None:
        self.counters["events"] += 1
        # split the topics once, and only when a pattern or a replaying subscriber needs segments
        parts = [t.split("/") for t in event.topics] if self._patterns or self._replaying else []
        if self._replaying:
            self._hold(event, parts)
        targets = self._match(event.topics, parts)
        if not targets:
            return
        if self._others or self._relabeled:
            self._deliver_mixed(event, targets)
            return
        frame = event_frame(event)
        dirty = self._dirty
        for outbox in targets:
            pending = outbox.pending
            if not pending:
                dirty.append(outbox)
            pending.append(frame)
        self.counters["deliveries"] += len(targets)
        if self._flush_handle is None:
            self._schedule_flush()

    def _deliver_mixed(self, event: Event, targets: Iterable[Outbox]) -> None:
        """`on_event` while some stream is in another format, or reads several cluster partitions:
        each kind of frame a target needs encoded once (NDJSON once per topic it is delivered under,
        cluster ids once per set of partitions)."""
        encoded: dict[tuple[Format, bool, str, str], bytes] = {}
        dirty = self._dirty
        count = 0
        stamp = event.stamp
        for outbox in targets:
            fmt = outbox.format
            topic = formats.first_topic(event, outbox.selectors) if fmt is Format.NDJSON else ""
            event_id = event.id
            cursor = outbox.cursor
            if cursor is not None and stamp is not None:
                if cursor.duplicate(event):
                    continue  # it comes through a lower partition of this subscriber's too
                event_id = stamp.id_for(cursor.mask)
            key = (fmt, outbox.chunked, topic, event_id)
            data = encoded.get(key)
            if data is None:
                data = encoded[key] = encoded_for(outbox, relabeled(event, event_id))
            count += 1
            if not data:
                continue  # empty text: nothing to write, and an empty chunk would end the stream
            pending = outbox.pending
            if not pending:
                dirty.append(outbox)
            pending.append(data)
        self.counters["deliveries"] += count
        self._schedule_flush()

    def on_tick(self) -> None:
        self._last_tick = time.monotonic()
        self.counters["heartbeats"] += 1
        dirty = self._dirty
        for outbox in self._outboxes:
            beat = HEARTBEATS[outbox.format, outbox.heartbeat_event, outbox.chunked]
            if not beat:
                continue
            if not outbox.pending:
                dirty.append(outbox)
            outbox.pending.append(beat)
        self._schedule_flush()

    def on_lost(self, reason: str) -> None:
        self.close_all(RESYNC, CloseReason.RESYNC)

    def _hold(self, event: Event, parts: list[list[str]]) -> None:
        for outbox in list(self._replaying):
            held = outbox.held
            if held is not None and any(
                selector.matches_segments(p) for selector in outbox.selectors for p in parts
            ):
                held.append(event)
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

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._dirty:
            loop = asyncio.get_running_loop()
            if loop.time() - self._flushed_at < self._flush_gap:
                # Flushing back to back: the hub is busy, and one write per subscriber per event is
                # most of its work. Let the events of the next moment gather into the same writes.
                self._flush_handle = loop.call_at(self._flushed_at + self._flush_gap, self._flush)
            else:
                self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write the dirty outboxes, a slice at a time. An outbox that gets more before its slice comes
        round takes it in the same write; one written already waits for the next flush, which comes
        after the usual pause, with whatever else arrives by then."""
        self._flush_handle = None
        loop = asyncio.get_running_loop()
        flushing = self._flushing
        if flushing is None:
            flushing, self._dirty = self._dirty, []
            self._flushing, self._flush_next = flushing, 0
            self._flush_clocks = wall0, cpu0 = (time.perf_counter(), time.thread_time())
            between = wall0 - self._round_end[0]
            self._busy = (cpu0 - self._round_end[1]) / between if between > 0 else 0.0
            self._round_frames = 0
            if self._quiet(loop.time()):
                self._starved = 0.0  # a hub that had time to idle was not short of CPU then
        start = self._flush_next
        end = start + FLUSH_SLICE
        frames = 0
        for i in range(start, min(end, len(flushing))):
            frames += self._flush_one(flushing[i])
        self._round_frames += frames
        if end < len(flushing):
            self._flush_next = end
            self._flush_handle = loop.call_soon(self._flush)
            return
        self._flushing = None
        self._flushed_at = loop.time()
        # Between its slices a round always has a callback ready, so the loop never sleeps: the wall
        # time the thread did not run is time spent waiting for the core.
        wall0, cpu0 = self._flush_clocks
        self._round_end = wall1, cpu1 = (time.perf_counter(), time.thread_time())
        wall = wall1 - wall0
        if wall > 0:
            starved = max(0.0, 1 - (cpu1 - cpu0) / wall)
            self._starved += STARVED_SMOOTHING * (starved - self._starved)
        backlogged = is_backlogged(self._busy, self._round_frames, len(flushing), self._starved)
        self._flush_gap = flush_gap(wall, self._starved, backlogged)
        if self._starved > STARVED_NOISE and self._read_on is None:
            self.broker.hold_reading(True)
            self._read_on = loop.call_at(self._flushed_at + self._flush_gap * READ_ON_AT, self._read_again)
        self._schedule_flush()

    def _read_again(self) -> None:
        self._read_on = None
        self.broker.hold_reading(False)

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
