"""The Redis broker: ids and publishes through one Lua script, fan-out over one pub/sub connection.

Publishing runs a script that assigns each event the next id of the shared counter and PUBLISHes its
envelope to each of its topics' channels, atomically: a batch is accepted whole or not at all.

Receiving uses ONE raw RESP connection per process (not redis-py's PubSub, which gives up after its
retries run out, and costs a task hop per message): a topic is SUBSCRIBEd when its first local subscriber
arrives and UNSUBSCRIBEd when its last leaves; patterns are PSUBSCRIBEd as a Redis glob that may match
more than the selector, the engine matching exactly. An event that reaches us through several channels
or patterns arrives as consecutive messages with one id; all but the first are dropped here. A supervisor
reconnects with capped, jittered backoff and re-subscribes everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
import secrets
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from hub.brokers import redis_scripts
from hub.brokers.base import Broker, BrokerSink, stored_position
from hub.brokers.command_link import CommandLink, LinkDown, LinkLost, LinkTimeout
from hub.brokers.redis_keys import RedisKeys
from hub.brokers.refusals import Refusals
from hub.brokers.reply_reader import ReplyReader, hold
from hub.brokers.resp import pack
from hub.brokers.script_args import (
    HistoryBounds,
    ScriptCall,
    ScriptEvent,
    history_start,
    publish_call,
    snapshot_call,
)
from hub.brokers.topic_ttl import TopicSweeper
from hub.config import HistoryConfig, RedisConfig
from hub.errors import BrokerUnavailable, OutcomeUnknown, idempotency_key_reused
from hub.redact import redact_url
from hub.wire.event import Draft, EnvelopeError, Event, envelope_id, open_envelope
from hub.wire.idempotency import Idempotency
from hub.wire.ids import (
    HistoryPage,
    Position,
    Since,
    SinceKind,
    Snapshot,
    merge,
    parse_id,
    seq_of,
)
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

# A call retried after a lost connection is answered from its token, so retrying is exactly-once.
PUBLISH_TOKEN_TTL = 120
PUBLISH_RETRIES = 3
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
BACKOFF_MIN = 0.05
BACKOFF_MAX = 5.0
CLOSE_TIMEOUT = 2.0
PUBLISH_SHA = hashlib.sha1(redis_scripts.PUBLISH.encode()).hexdigest().encode()


class RedisBroker(Broker[Position]):
    name = "redis"

    def __init__(self, config: RedisConfig, history: HistoryConfig, idempotency_window: float) -> None:
        self._config = config
        self._history = history
        self._idempotency_window = idempotency_window
        self._keys = RedisKeys(config.prefix)
        self._bounds = HistoryBounds.of(history)
        # A bounded pool that makes callers wait for a connection: a burst of subscribers queues for
        # a few milliseconds instead of opening a connection each (or failing past a limit).
        pool = aioredis.BlockingConnectionPool.from_url(
            config.url,
            max_connections=config.max_connections,
            timeout=config.connect_timeout,
            socket_connect_timeout=config.connect_timeout,
            socket_timeout=config.connect_timeout,
            retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), PUBLISH_RETRIES),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
        self._client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it
        self._snapshot_script = self._client.register_script(redis_scripts.SNAPSHOT)
        self._sweeper = TopicSweeper(self._client, [self._keys], history)
        self.node = secrets.token_hex(6)
        # A publish's token, for its exactly-once retry: unique per process and publish, and cheap.
        self._publishes = itertools.count()
        # Publishes go over a connection of their own, pipelined: concurrent ones share round trips.
        setup = [pack(b"CLIENT", b"SETNAME", f"{config.prefix}-pub-{self.node}")]
        db = int(pool.connection_kwargs.get("db") or 0)
        if db:
            setup.append(pack(b"SELECT", db))
        self._link = CommandLink(self._connect, setup=setup, timeout=config.connect_timeout)
        self._tick_channel = self._keys.tick(self.node)
        self._sink: BrokerSink | None = None
        # name -> selectors subscribed under it, with their counts (`*` and `**` share one glob)
        self._wanted: dict[bytes, dict[Selector, int]] = {}
        # name -> one entry per SUBSCRIBE sent and not yet confirmed, each entry the futures it serves
        self._waiters: dict[bytes, deque[list[asyncio.Future[None]]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reading_held = False  # the fan-out asked for no reading from the subscriber connection
        self._subscribed = False  # every wanted name is confirmed on the current connection
        self._live = False  # ...and caught up from history: ready
        self._catch_up_task: asyncio.Task[None] | None = None
        # The last event received: where a reconnect catches up from, and this hub's high-water mark.
        self._last_id = b""
        self._published: tuple[str, int] = ("", 0)  # the newest id this process's publishes were given
        # While catching up after a reconnect, live messages wait here so they follow the history.
        self._held: list[bytes] | None = None
        # Snapshot tokens awaited on the subscriber connection (see `_snapshot`); a subscriber's token
        # that arrives while catching up is answered only once the held messages are delivered.
        self._syncs: dict[bytes, tuple[asyncio.Future[None], bool]] = {}
        self._deferred: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._refusals = Refusals(self._probe_publish)

    async def start(self, sink: BrokerSink) -> None:
        self._sink = sink
        self._task = asyncio.create_task(self._supervise(), name="hub-redis-subscriber")
        self._sweeper.start()

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
        await self._refusals.close()
        await self._sweeper.close()
        await self._link.close()
        await self._client.aclose()
        self._sink = None

    @property
    def ready(self) -> bool:
        return self._live and not self._refusals.refused

    # publishing

    async def publish(self, drafts: Sequence[Draft], idempotency: Idempotency | None = None) -> list[str]:
        events = [ScriptEvent(draft.topics, draft.body(), draft.retain) for draft in drafts]
        try:
            reply = await self._run_publish(self._publish_call(events, idempotency))
        except (BrokerUnavailable, OutcomeUnknown):
            self._refusals.failed()  # not ready until a publish goes through again (the probe)
            raise
        if isinstance(reply, hiredis.ReplyError):
            log.error("redis refused a publish: %s", reply)
            self._refusals.failed()
            raise BrokerUnavailable("redis refused the publish; the event was not accepted")
        self._refusals.succeeded()
        if reply == b"!reused":
            raise idempotency_key_reused()
        ids: list[str] = reply.decode().split(" ")
        # The script's own ids, the last the newest: split, not parsed (this is once per publish).
        epoch, _, seq = ids[-1].rpartition("-")
        published = self._published
        if published[0] != epoch or published[1] < int(seq):
            self._published = (epoch, int(seq))
        return ids

    def _evidence(self) -> tuple[str, int]:
        """The newest position this hub had from Redis, received or answered to its own publishes: the
        only evidence on which the scripts start a new epoch (Redis holds less than that). ('', 0): none."""
        epoch_bytes, _, seq = self._last_id.rpartition(b"-")
        try:
            received = (epoch_bytes.decode(), int(seq)) if epoch_bytes else ("", 0)
        except ValueError:  # the id of a malformed message someone else wrote to a channel
            received = ("", 0)
        published = self._published
        if published[0] and (not received[0] or (published[0] == received[0] and published[1] > received[1])):
            return published
        return received

    def _publish_call(self, events: list[ScriptEvent], idempotency: Idempotency | None) -> ScriptCall:
        keys = self._keys
        if idempotency is None:
            token_key = keys.publish_token(f"{self.node}.{next(self._publishes)}")
            token_ttl, fingerprint = PUBLISH_TOKEN_TTL, ""
        else:
            token_key = keys.idempotency(idempotency.name)
            token_ttl, fingerprint = int(self._idempotency_window), idempotency.fingerprint
        return publish_call(
            keys,
            self._bounds,
            events,
            token_key=token_key,
            token_ttl=token_ttl,
            fingerprint=fingerprint,
            evidence=self._evidence(),
            sharded=False,
        )

    async def _probe_publish(self) -> None:
        """The publish script with no event: raises while Redis refuses what a publish writes."""
        reply = await self._run_publish(self._publish_call([], None))
        if isinstance(reply, hiredis.ReplyError):
            raise BrokerUnavailable()

    async def _run_publish(self, call: ScriptCall) -> Any:
        """The publish script's reply. A call whose connection was lost is sent again: its token
        makes the script answer a repeat from what the first run did, so it runs exactly once.

        Raises `BrokerUnavailable` when no attempt was written to Redis, and `OutcomeUnknown` when one
        was and no answer came: a paused Redis runs it when it goes on, connection closed or not."""
        backoff = 0.02
        sent = False
        failure: Exception | None = None
        loop = asyncio.get_running_loop()
        args = [len(call.keys), *call.keys, *call.args]
        # Retried while quick: a connection that timed out opening would make each retry wait as long.
        deadline = loop.time() + self._config.connect_timeout
        for attempt in range(PUBLISH_RETRIES + 1):
            if attempt:
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 0.5)
            try:
                reply = await self._link.call(pack(b"EVALSHA", PUBLISH_SHA, *args))
                if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
                    reply = await self._link.call(pack(b"EVAL", redis_scripts.PUBLISH, *args))
                return reply
            except LinkDown as exc:
                failure = exc
            except LinkLost as exc:
                sent, failure = True, exc
            except LinkTimeout:
                # Not sent again: a Redis that is slow or paused would keep the publisher waiting as long
                # again, and the answer would still be unknown.
                raise OutcomeUnknown("redis did not answer in time") from None
        log.debug("publish failed: %s", failure)
        if sent:
            raise OutcomeUnknown("the connection to redis was lost before its answer")
        raise BrokerUnavailable()

    def parse_position(self, text: str) -> Position | None:
        return parse_id(text)

    async def snapshot(self, selectors: Sequence[Selector], since: Since[Position]) -> Snapshot:
        return await self._snapshot(selectors, since, catch_up=False)

    async def _snapshot(
        self, selectors: Sequence[Selector], since: Since[Position], *, catch_up: bool
    ) -> Snapshot:
        token = secrets.token_hex(8).encode()
        synced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncs[token] = (synced, catch_up)
        try:
            snapshot = await self._read_snapshot(selectors, since, token)
            # Wait until the subscriber connection has read every message older than the snapshot,
            # so none of them can arrive after the subscriber has gone live.
            async with asyncio.timeout(self._config.connect_timeout):
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
        current = parse_id(self._last_id.decode())
        if current is None or current.epoch != position.epoch or current.seq < position.seq:
            self._last_id = str(position).encode()

    async def _read_snapshot(
        self, selectors: Sequence[Selector], since: Since[Position], token: bytes
    ) -> Snapshot:
        call = snapshot_call(
            self._keys,
            self._bounds,
            selectors,
            mode=since.kind,
            after=since.position,
            token=token,
            channel=self._tick_channel,
            evidence=self._evidence(),
            sharded=False,
        )
        try:
            reply = await self._snapshot_script(keys=call.keys, args=call.args)
        except _REDIS_DOWN as exc:
            log.debug("snapshot failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        except redis.exceptions.ResponseError as exc:
            log.error("redis refused a snapshot: %s", exc)
            raise BrokerUnavailable("the broker refused the read") from None
        epoch, seq, reset, *messages = reply
        return Snapshot(
            Position(epoch.decode(), int(seq)), merge([_open_all(messages)]), redis_scripts.RESETS[reset]
        )

    async def history_page(self, topic: str, after: Position | None, limit: int) -> HistoryPage:
        # An `after` beyond every possible id reads nothing (and the engine answers that it names no place).
        start = history_start(after)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hmget(self._keys.sequence, "epoch", "seq")
                pipe.xrange(self._keys.history(topic), start, "+", count=limit)
                (epoch, seq), entries = await pipe.execute()
        except _REDIS_DOWN as exc:
            log.debug("history read failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        except redis.exceptions.ResponseError as exc:
            log.error("redis refused a history read: %s", exc)
            raise BrokerUnavailable("the broker refused the read") from None
        # No epoch yet: Redis has no history at all, so no position a reader holds names a place in it.
        position = stored_position(epoch, seq)
        return HistoryPage.of(position, _open_all([fields[b"m"] for _, fields in entries]))

    async def tick(self) -> None:
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                await self._client.publish(self._tick_channel, b"")
        except (*_REDIS_DOWN, TimeoutError):
            raise BrokerUnavailable() from None

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

    # the subscriber connection

    async def _supervise(self) -> None:
        backoff = BACKOFF_MIN
        while not self._closed:
            writer: asyncio.StreamWriter | None = None
            was_live = False
            failed = ""  # why an attempt that never went live failed, for its one warning
            try:
                reader, writer = await self._connect()
                await self._serve(reader, writer)
            except (OSError, EOFError, hiredis.ProtocolError, TimeoutError, RedisReplyError) as exc:
                if self._live:
                    log.warning("redis subscription lost: %s; reconnecting", exc)
                else:
                    failed = str(exc) or type(exc).__name__
            except Exception:
                # A bug here must not end fan-out for good: log it, reconnect, catch up.
                log.exception("redis subscription failed; reconnecting")
            finally:
                was_live, self._live = self._live, False
                self._subscribed = False
                self._writer = None
                self._held = None
                self._fail_syncs()
                if self._catch_up_task is not None:
                    self._catch_up_task.cancel()
                    self._catch_up_task = None
                if writer is not None:
                    writer.close()
            if was_live:
                self.reconnects += 1
                backoff = BACKOFF_MIN
            delay = backoff * random.uniform(0.5, 1.5)
            if failed:
                log.warning(
                    "redis %s not reachable: %s; retrying in %.1f s",
                    redact_url(self._config.url),
                    failed,
                    delay,
                )
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kwargs = self._client.connection_pool.connection_kwargs
        timeout = self._config.connect_timeout
        async with asyncio.timeout(timeout):
            if "path" in kwargs:
                reader, writer = await asyncio.open_unix_connection(kwargs["path"])
            else:
                tls = None
                if self._config.url.startswith("rediss://"):
                    tls = ssl.create_default_context()
                reader, writer = await asyncio.open_connection(
                    kwargs.get("host", "localhost"), kwargs.get("port", 6379), ssl=tls
                )
            await authenticate(reader, writer, kwargs)
        return reader, writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        # Re-subscribe everything wanted; whoever waits on a name is served by its first confirmation.
        # The tick channel goes last: its confirmation means every other one is confirmed too.
        commands = [pack(b"CLIENT", b"SETNAME", f"{self._config.prefix}-sub-{self.node}")]
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
        reading = ReplyReader.take_over(reader, writer, self._on_reply, held=self._reading_held)
        writer.write(b"".join(commands))
        await reading.ended  # raises why the connection ended

    def hold_reading(self, held: bool) -> None:
        self._reading_held = held
        hold(self._writer, held)

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise RedisReplyError(str(reply))
        if not isinstance(reply, list):
            return  # +OK to CLIENT SETNAME
        kind = reply[0]
        if kind == b"message":
            if reply[1] == self._tick_channel:
                if reply[2]:
                    self._on_sync(reply[2])
                elif self._sink is not None:
                    self._sink.on_tick()
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
        if id_ == self._last_id:
            return  # the same event through another of its channels, or through a pattern
        self._last_id = id_
        try:
            event = open_envelope(message)
        except EnvelopeError as exc:
            log.warning("dropped a malformed message from redis: %s", exc)
            return
        if self._sink is not None:
            self._sink.on_event(event)

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
        last = parse_id(self._last_id.decode())
        selectors = [selector for wanted in self._wanted.values() for selector in wanted]
        since = Since(SinceKind.AFTER, last) if last else Since(SinceKind.NEW)
        try:
            snapshot = await self._snapshot(selectors if last else [], since, catch_up=True)
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
            if last is not None and self._sink is not None:
                log.warning("redis lost events (%s): closing streams so they resync", snapshot.reset)
                self._sink.on_lost(snapshot.reset)
            self._advance(_position(snapshot))
            held = [m for m in held if envelope_id(m).startswith(_position(snapshot).epoch.encode() + b"-")]
            events = []
        else:
            events = snapshot.events
        floor = last.seq if last and snapshot.reset is None else 0
        for event in merge([events, _open_all(held)]):
            if seq_of(event.id) > floor and self._sink is not None:
                self._sink.on_event(event)
                self._last_id = event.id.encode()
        self._advance(_position(snapshot))
        log.info(
            "redis subscription live: caught up %d events after %s to %s, then %d live",
            len(events),
            last,
            snapshot.position,
            len(held),
        )
        self._live = True
        for future in self._deferred:
            if not future.done():
                future.set_result(None)
        self._deferred.clear()


def _position(snapshot: Snapshot) -> Position:
    assert isinstance(snapshot.position, Position)  # one Redis: one counter
    return snapshot.position


def _open_all(messages: Sequence[bytes]) -> list[Event]:
    """Envelopes from Redis, skipping (and logging) any this hub did not write."""
    events = []
    for message in messages:
        try:
            events.append(open_envelope(message))
        except EnvelopeError as exc:
            log.warning("dropped a malformed message from redis: %s", exc)
    return events


class RedisReplyError(Exception):
    """Redis refused a command on the subscriber connection."""


async def authenticate(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kwargs: dict[str, Any]
) -> None:
    """AUTH on a raw connection with the credentials of redis-py's connection kwargs, if any."""
    password = kwargs.get("password")
    if password:
        username = kwargs.get("username")
        writer.write(pack(b"AUTH", *((username, password) if username else (password,))))
        await _expect_ok(reader)


async def _expect_ok(reader: asyncio.StreamReader) -> None:
    parser = hiredis.Reader()
    while True:
        data = await reader.read(4096)
        if not data:
            raise EOFError("redis closed the connection during AUTH")
        parser.feed(data)
        reply = parser.gets()
        if reply is False:
            continue
        if isinstance(reply, hiredis.ReplyError):
            raise RedisReplyError(f"AUTH refused: {reply}")
        return
