"""The Redis broker: ids and publishes through one Lua script, fan-out over one pub/sub connection.

Publishing runs a script that assigns each event the next id of the shared counter and PUBLISHes its
envelope to each of its topics' channels, atomically: a batch is accepted whole or not at all. Publishes
go over a pipelined connection of their own (the transport's `CommandLink`); snapshots, history and ticks
through redis-py. Receiving is `hub.brokers.redis_subscription`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
import secrets
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from hub.brokers import redis_scripts
from hub.brokers.base import Broker, BrokerSink, stored_position
from hub.brokers.directory import Directory
from hub.brokers.redis_directory import RedisDirectory
from hub.brokers.redis_keys import RedisKeys
from hub.brokers.redis_subscription import Subscription, open_all
from hub.brokers.refusals import Refusals
from hub.brokers.script_args import (
    HistoryBounds,
    ScriptCall,
    ScriptEvent,
    history_start,
    publish_call,
    publish_record,
    snapshot_call,
)
from hub.brokers.shared_snapshots import SharedSnapshots
from hub.brokers.topic_ttl import TopicSweeper
from hub.brokers.transport.commands import CommandLink, LinkDown, LinkLost, LinkTimeout
from hub.brokers.transport.endpoint import Endpoint
from hub.brokers.transport.resp import pack
from hub.config import HistoryConfig, RedisConfig
from hub.errors import BrokerUnavailable, OutcomeUnknown, idempotency_key_reused
from hub.wire.event import Draft
from hub.wire.idempotency import Idempotency
from hub.wire.ids import HistoryPage, Position, Since, Snapshot, merge, parse_id
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

# A call retried after a lost connection is answered from its token, so retrying is exactly-once.
PUBLISH_RETRIES = 3
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
PUBLISH_SHA = hashlib.sha1(redis_scripts.PUBLISH.encode()).hexdigest().encode()


class RedisBroker(Broker[Position]):
    name = "redis"

    def __init__(self, config: RedisConfig, history: HistoryConfig, idempotency_window: float) -> None:
        self._config = config
        self._history = history
        self._idempotency_window = idempotency_window
        self._loop: asyncio.AbstractEventLoop | None = None
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
        # The raw connections' server and login, as redis-py read them from the URL.
        endpoint = Endpoint.of(pool.connection_class(**pool.connection_kwargs))
        self._sweeper = TopicSweeper(self._client, [self._keys], history)
        self.node = secrets.token_hex(6)
        # A publish's token, for its exactly-once retry: unique per process and publish, and cheap.
        self._publishes = itertools.count()
        # Publishes go over a connection of their own, pipelined: concurrent ones share round trips.
        publisher = f"{config.prefix}-pub-{self.node}"
        self._link = CommandLink(
            lambda: endpoint.connect(publisher, config.connect_timeout), timeout=config.connect_timeout
        )
        self._tick_channel = self._keys.tick(self.node)
        self._subscription = Subscription(
            endpoint,
            config.url,
            config.connect_timeout,
            self._keys,
            f"{config.prefix}-sub-{self.node}",
            self._tick_channel,
            self._read_snapshot,
            self._reconnected,
        )
        # A burst of new streams of the same topics reads one snapshot, not one each (a pool's worth).
        self._snapshots = SharedSnapshots(self._snapshot)
        self._published: tuple[str, int] = ("", 0)  # the newest id this process's publishes were given
        self._refusals = Refusals(self._probe_publish)

    def directory(self, interval: float) -> Directory:
        return RedisDirectory(self._client, self._config.prefix, self.node, interval)

    async def start(self, sink: BrokerSink) -> None:
        self._subscription.start(sink)
        self._sweeper.start()

    async def close(self) -> None:
        await self._subscription.close()
        await self._refusals.close()
        await self._sweeper.close()
        await self._link.close()
        await self._client.aclose()

    @property
    def ready(self) -> bool:
        return self._subscription.live and not self._refusals.refused

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
        epoch_bytes, _, seq = self._subscription.last_id.rpartition(b"-")
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
        one_off = f"{self.node}.{next(self._publishes)}" if idempotency is None else ""
        record = publish_record(keys, idempotency, self._idempotency_window, one_off)
        return publish_call(
            keys,
            self._bounds,
            events,
            record=record,
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
        loop = self._loop
        if loop is None:
            # Kept: asyncio.get_running_loop() costs a getpid() syscall on Python 3.11.
            loop = self._loop = asyncio.get_running_loop()
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
        return await self._snapshots.snapshot(selectors, since)

    async def _snapshot(self, selectors: Sequence[Selector], since: Since[Position]) -> Snapshot:
        return await self._subscription.snapshot(selectors, since, catch_up=False)

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
            Position(epoch.decode(), int(seq)), merge([open_all(messages)]), redis_scripts.RESETS[reset]
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
        return HistoryPage.of(position, open_all([fields[b"m"] for _, fields in entries]))

    async def tick(self) -> None:
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                await self._client.publish(self._tick_channel, b"")
        except (*_REDIS_DOWN, TimeoutError):
            raise BrokerUnavailable() from None

    # subscribing

    # subscribing

    def subscribe(self, selector: Selector) -> asyncio.Future[None]:
        return self._subscription.subscribe(selector)

    def unsubscribe(self, selector: Selector) -> None:
        self._subscription.unsubscribe(selector)

    def hold_reading(self, held: bool) -> None:
        self._subscription.hold_reading(held)

    def _reconnected(self) -> None:
        self.reconnects += 1
