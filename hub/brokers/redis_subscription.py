"""The Redis broker's subscriber connection: ONE raw RESP connection per process, not redis-py's PubSub
(which gives up after its retries run out, and costs a task hop per message).

A topic is SUBSCRIBEd when its first local subscriber arrives and UNSUBSCRIBEd when its last leaves;
patterns are PSUBSCRIBEd as a Redis glob that may match more than the selector, the engine matching
exactly. An event that reaches us through several channels or patterns arrives as consecutive messages
with one id; all but the first are dropped here. The transport's supervisor reconnects with capped,
jittered backoff; every wanted name is subscribed again, and what was published meanwhile is caught up
from the history before the connection counts as live.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis

from hub.brokers.base import BrokerSink
from hub.brokers.redis_keys import RedisKeys
from hub.brokers.transport.endpoint import Endpoint, RawConnection
from hub.brokers.transport.reply_reader import hold
from hub.brokers.transport.resp import pack
from hub.brokers.transport.supervisor import CommandRefused, supervise
from hub.errors import BrokerUnavailable
from hub.redact import redact_url
from hub.wire.event import EnvelopeError, Event, envelope_id, open_envelope
from hub.wire.ids import Position, Since, SinceKind, Snapshot, merge, parse_id, seq_of
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0
# Reads a snapshot whose script publishes `token` on the tick channel once it has read (see `snapshot`).
SnapshotRead = Callable[[Sequence[Selector], Since[Position], bytes], Awaitable[Snapshot]]


class Subscription:
    def __init__(
        self,
        endpoint: Endpoint,
        url: str,
        connect_timeout: float,
        keys: RedisKeys,
        name: str,
        tick_channel: bytes,
        read: SnapshotRead,
        on_reconnect: Callable[[], None],
    ) -> None:
        self._endpoint = endpoint
        self._where = redact_url(url)
        self._connect_timeout = connect_timeout
        self._keys = keys
        self._name = name  # CLIENT SETNAME
        self._tick_channel = tick_channel
        self._read = read
        self._on_reconnect = on_reconnect
        self.sink: BrokerSink | None = None
        # name -> selectors subscribed under it, with their counts (`*` and `**` share one glob)
        self._wanted: dict[bytes, dict[Selector, int]] = {}
        # name -> one entry per SUBSCRIBE sent and not yet confirmed, each entry the futures it serves
        self._waiters: dict[bytes, deque[list[asyncio.Future[None]]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reading_held = False  # the fan-out asked for no reading from the subscriber connection
        self._subscribed = False  # every wanted name is confirmed on the current connection
        self.live = False  # ...and caught up from history: ready
        self._catch_up_task: asyncio.Task[None] | None = None
        # The last event received: where a reconnect catches up from, and this hub's high-water mark.
        self.last_id = b""
        # While catching up after a reconnect, live messages wait here so they follow the history.
        self._held: list[bytes] | None = None
        # Snapshot tokens awaited on the subscriber connection (see `snapshot`); a subscriber's token
        # that arrives while catching up is answered only once the held messages are delivered.
        self._syncs: dict[bytes, tuple[asyncio.Future[None], bool]] = {}
        self._deferred: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self, sink: BrokerSink) -> None:
        self.sink = sink
        self._task = asyncio.create_task(
            supervise(
                self._connect, self._serve, self._ended, running=lambda: not self._closed, where=self._where
            ),
            name="hub-redis-subscriber",
        )

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            # Bounded, and the supervisor also checks `_closed`: on Python 3.11 a cancellation can be
            # lost inside the Redis client (a timeout expiring at the same moment).
            await asyncio.wait([task], timeout=CLOSE_TIMEOUT)
            if task.done() and not task.cancelled():
                task.exception()
        for entries in self._waiters.values():
            for futures in entries:
                for future in futures:
                    future.cancel()
        self._waiters.clear()
        self.sink = None

    def hold_reading(self, held: bool) -> None:
        self._reading_held = held
        hold(self._writer, held)

    @property
    def writer(self) -> asyncio.StreamWriter | None:
        return self._writer

    # subscribing

    def subscribe(self, selector: Selector) -> asyncio.Future[None]:
        is_pattern, name = self._keys.subscription(selector)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        wanted = self._wanted.get(name)
        if wanted is not None:
            wanted[selector] = wanted.get(selector, 0) + 1
            entries = self._waiters.get(name)
            if entries:
                entries[-1].append(future)  # rides on the SUBSCRIBE already under way
            elif self._subscribed:
                future.set_result(None)
            else:
                self._waiters.setdefault(name, deque()).append([future])
            return future
        self._wanted[name] = {selector: 1}
        self._waiters.setdefault(name, deque()).append([future])
        if self._writer is not None:
            self._writer.write(pack(b"PSUBSCRIBE" if is_pattern else b"SUBSCRIBE", name))
        return future

    def unsubscribe(self, selector: Selector) -> None:
        is_pattern, name = self._keys.subscription(selector)
        wanted = self._wanted.get(name)
        if wanted is None or selector not in wanted:
            return
        wanted[selector] -= 1
        if wanted[selector] == 0:
            del wanted[selector]
        if wanted:
            return
        del self._wanted[name]
        if self._writer is not None:
            self._writer.write(pack(b"PUNSUBSCRIBE" if is_pattern else b"UNSUBSCRIBE", name))

    # reading in step with the connection

    async def snapshot(
        self, selectors: Sequence[Selector], since: Since[Position], *, catch_up: bool
    ) -> Snapshot:
        """A snapshot read once the subscriber connection has read every message published before it."""
        token = secrets.token_hex(8).encode()
        synced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncs[token] = (synced, catch_up)
        try:
            snapshot = await self._read(selectors, since, token)
            # Wait until the subscriber connection has read every message older than the snapshot,
            # so none of them can arrive after the subscriber has gone live.
            async with asyncio.timeout(self._connect_timeout):
                await synced
        except TimeoutError:
            raise BrokerUnavailable("the redis subscription did not keep up") from None
        finally:
            self._syncs.pop(token, None)
        if not catch_up:
            # Every message up to this position has now been read and delivered, so a later catch-up
            # starts here: it must not send a live subscriber events older than its snapshot.
            self._advance(_position(snapshot))
        return snapshot

    def _advance(self, position: Position) -> None:
        """Move the catch-up point forward (never back: a lower seq in the same epoch is Redis losing
        data, and the publish script needs the high-water mark to notice)."""
        current = parse_id(self.last_id.decode())
        if current is None or current.epoch != position.epoch or current.seq < position.seq:
            self.last_id = str(position).encode()

    # the connection

    async def _connect(self) -> RawConnection:
        return await self._endpoint.connect(self._name, self._connect_timeout)

    async def _serve(self, connection: RawConnection) -> None:
        self._writer = writer = connection.writer
        # Re-subscribe everything wanted; whoever waits on a name is served by its first confirmation.
        # The tick channel goes last: its confirmation means every other one is confirmed too.
        commands = []
        for name, selectors in self._wanted.items():
            is_pattern = next(iter(selectors)).is_pattern
            commands.append(pack(b"PSUBSCRIBE" if is_pattern else b"SUBSCRIBE", name))
            entries = self._waiters.get(name)
            if entries and len(entries) > 1:
                merged = [f for futures in entries for f in futures]
                entries.clear()
                entries.append(merged)
            elif not entries:
                self._waiters[name] = deque([[]])
        for name in list(self._waiters):
            if name not in self._wanted:
                for futures in self._waiters.pop(name):
                    for future in futures:
                        future.cancel()
        commands.append(pack(b"SUBSCRIBE", self._tick_channel))
        self._held = []  # until caught up
        reading = connection.read(self._on_reply, held=self._reading_held)
        writer.write(b"".join(commands))
        await reading.ended  # raises why the connection ended

    def _ended(self) -> bool:
        """The connection is over (or never opened): whether it had been live."""
        was_live, self.live = self.live, False
        self._subscribed = False
        self._writer = None
        self._held = None
        self._fail_syncs()
        if self._catch_up_task is not None:
            self._catch_up_task.cancel()
            self._catch_up_task = None
        if was_live:
            self._on_reconnect()
        return was_live

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise CommandRefused(str(reply))
        if not isinstance(reply, list):
            return  # none comes: the setup's replies were read as the connection opened
        kind = reply[0]
        if kind == b"message":
            if reply[1] == self._tick_channel:
                if reply[2]:
                    self._on_sync(reply[2])
                elif self.sink is not None:
                    self.sink.on_tick()
                return
            self._on_message(reply[2])
        elif kind == b"pmessage":
            self._on_message(reply[3])
        elif kind in (b"subscribe", b"psubscribe"):
            name = reply[1]
            if name == self._tick_channel:
                self._subscribed = True
                self._catch_up_task = asyncio.create_task(self._catch_up(), name="hub-redis-catch-up")
                return
            entries = self._waiters.get(name)
            if entries:
                for future in entries.popleft():
                    if not future.done():
                        future.set_result(None)
                if not entries:
                    del self._waiters[name]

    def _on_message(self, message: bytes) -> None:
        if self._held is not None:
            self._held.append(message)
            return
        id_ = envelope_id(message)
        if id_ == self.last_id:
            return  # the same event through another of its channels, or through a pattern
        self.last_id = id_
        try:
            event = open_envelope(message)
        except EnvelopeError as exc:
            log.warning("dropped a malformed message from redis: %s", exc)
            return
        if self.sink is not None:
            self.sink.on_event(event)

    def _on_sync(self, token: bytes) -> None:
        entry = self._syncs.get(token)
        if entry is None:
            return
        future, catch_up = entry
        if self._held is not None and not catch_up:
            self._deferred.append(future)
        elif not future.done():
            future.set_result(None)

    def _fail_syncs(self) -> None:
        for future in [f for f, _ in self._syncs.values()] + self._deferred:
            if not future.done():
                future.set_exception(BrokerUnavailable("the redis subscription was lost"))
                # its waiter may be gone already (shutdown): do not log it as never retrieved
                future.add_done_callback(lambda f: f.exception())
        self._deferred.clear()

    async def _catch_up(self) -> None:
        """Deliver what was published while the subscription was down, then what arrived meanwhile."""
        last = parse_id(self.last_id.decode())
        selectors = [selector for wanted in self._wanted.values() for selector in wanted]
        since = Since(SinceKind.AFTER, last) if last else Since(SinceKind.NEW)
        try:
            snapshot = await self.snapshot(selectors if last else [], since, catch_up=True)
        except BrokerUnavailable as exc:
            log.warning("catch-up failed: %s; reconnecting", exc)
            if self._writer is not None:
                self._writer.close()
            return
        except Exception:
            log.exception("catch-up failed; reconnecting")
            if self._writer is not None:
                self._writer.close()
            return
        held, self._held = self._held or [], None
        if snapshot.reset is not None:
            if last is not None and self.sink is not None:
                log.warning("redis lost events (%s): closing streams so they resync", snapshot.reset)
                self.sink.on_lost(snapshot.reset)
            self._advance(_position(snapshot))
            held = [m for m in held if envelope_id(m).startswith(_position(snapshot).epoch.encode() + b"-")]
            events = []
        else:
            events = snapshot.events
        floor = last.seq if last and snapshot.reset is None else 0
        for event in merge([events, open_all(held)]):
            if seq_of(event.id) > floor and self.sink is not None:
                self.sink.on_event(event)
                self.last_id = event.id.encode()
        self._advance(_position(snapshot))
        log.info(
            "redis subscription live: caught up %d events after %s to %s, then %d live",
            len(events),
            last,
            snapshot.position,
            len(held),
        )
        self.live = True
        for future in self._deferred:
            if not future.done():
                future.set_result(None)
        self._deferred.clear()


def _position(snapshot: Snapshot) -> Position:
    assert isinstance(snapshot.position, Position)  # one Redis: one counter
    return snapshot.position


def open_all(messages: Sequence[bytes]) -> list[Event]:
    """Envelopes from Redis, skipping (and logging) any this hub did not write."""
    events = []
    for message in messages:
        try:
            events.append(open_envelope(message))
        except EnvelopeError as exc:
            log.warning("dropped a malformed message from redis: %s", exc)
    return events
