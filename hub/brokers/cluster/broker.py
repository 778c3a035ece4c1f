"""The Redis Cluster broker itself (see the package's docstring): partitioned publishes, snapshots and
history reads, and the subscriptions, which the links (`links`) and the receiver (`catch_up`) serve."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Sequence

import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from hub.brokers import redis_scripts, sending
from hub.brokers.base import Broker, BrokerSink
from hub.brokers.cluster.catch_up import PartitionReceiver
from hub.brokers.cluster.links import Links
from hub.brokers.cluster.partitions import Partitions
from hub.brokers.cluster.publishing import REDIS_DOWN, PublishCalls, Refused, is_transient
from hub.brokers.cluster.reading import PartitionReads, text_of
from hub.brokers.directory import Directory
from hub.brokers.redis_directory import RedisDirectory
from hub.brokers.refusals import Refusals
from hub.brokers.script_args import (
    HistoryBounds,
    Received,
    ScriptCall,
    ScriptEvent,
    publish_call,
    publish_record,
)
from hub.brokers.topic_ttl import TopicSweeper
from hub.config import HistoryConfig, RedisConfig
from hub.errors import BrokerUnavailable, OutcomeUnknown, idempotency_key_reused
from hub.wire.cluster_ids import VectorId, format_vector, parse_vector
from hub.wire.event import Draft
from hub.wire.idempotency import Idempotency
from hub.wire.ids import HistoryPage, Position, Since, SinceKind, Snapshot, parse_id
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0


def cluster_url(url: str) -> str:
    """The URL redis-py's cluster client takes: `redis+cluster://h:p` names a node as `redis://h:p`."""
    for scheme in ("redis", "rediss"):
        if url.startswith(f"{scheme}+cluster://"):
            return f"{scheme}://" + url.split("://", 1)[1]
    return url


class RedisClusterBroker(Broker[VectorId]):
    name = "redis-cluster"

    def __init__(self, config: RedisConfig, history: HistoryConfig, idempotency_window: float) -> None:
        self._config = config
        self._bounds = HistoryBounds.of(history)
        self._idempotency_window = idempotency_window
        self._parts = parts = Partitions(config.partitions, config.prefix)
        self._keys = parts.keys
        self._client = RedisCluster.from_url(
            cluster_url(config.url),
            socket_connect_timeout=config.connect_timeout,
            socket_timeout=config.connect_timeout,
            max_connections=config.max_connections,
        )
        sending.mark_sends(self._client)
        self._publish_script = self._client.register_script(redis_scripts.PUBLISH)
        # redis-py's cluster client retries a node that does not answer ten times over, a connect timeout
        # each: a publish gives up sooner, so that a paused shard fails its publishes (and readiness) in
        # seconds. Room for one connection to open and one round trip, and the replicas' WAIT.
        waiting = config.wait_timeout if config.wait_replicas else 0
        self._publish_timeout = 2 * config.connect_timeout + waiting
        # redis-py's cluster pool fails past max_connections instead of waiting: callers queue here.
        self._commands = asyncio.Semaphore(config.max_connections)
        self._sweeper = TopicSweeper(self._client, self._keys, history, self._commands)
        self.node = secrets.token_hex(6)
        self._publishing = PublishCalls(self._client, self._publish_script, config, self._publish_timeout)
        # partition -> the selectors subscribed in it, with their counts
        self._wanted: dict[int, dict[Selector, int]] = {}
        # The tick goes through this partition even when no subscriber wants any.
        self._home = random.randrange(parts.count)
        self._receiver = PartitionReceiver(parts, self.node, self._wanted, self._catch_up_read, self._bounce)
        self._reads = PartitionReads(
            self._client, self._commands, config, history, parts, self.node, self._receiver, self._wanted
        )
        self._links = Links(
            self._client, config, parts, self.node, self._wanted, self._receiver, self._reconnected
        )
        self._refusals = Refusals(self._probe_publish)

    # lifecycle

    def directory(self, interval: float) -> Directory:
        return RedisDirectory(self._client, self._config.prefix, self.node, interval)

    async def start(self, sink: BrokerSink) -> None:
        self._receiver.sink = sink
        try:
            await self._client.initialize()
        except REDIS_DOWN as exc:
            # Not fatal: the links retry, and readiness says whether the cluster is reachable.
            log.warning("redis cluster not reachable yet: %s", exc)
        self._links.want(self._home)
        self._sweeper.start()

    async def close(self) -> None:
        self._reads.closed = True
        self._links.close()
        tasks = self._links.tasks() + list(self._receiver.catch_ups.values())
        for task in tasks:
            task.cancel()
        # Bounded, and the loops also check `closed`: on Python 3.11 a cancellation can be lost inside
        # the Redis client (a timeout expiring at the same moment), and the loop would go round again.
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a link that failed while closing is no news
        self._links.clear()
        self._receiver.close()
        await self._refusals.close()
        await self._sweeper.close()
        await self._client.aclose()
        self._receiver.sink = None

    @property
    def ready(self) -> bool:
        return not self._refusals.refused and all(p in self._receiver.live for p in self._wanted)

    # publishing

    async def publish(self, drafts: Sequence[Draft], idempotency: Idempotency | None = None) -> list[str]:
        of_topic = self._parts.of_topic
        bodies = [draft.body() for draft in drafts]
        # partition -> (draft index, that draft's topics in the partition)
        groups: dict[int, list[tuple[int, list[str]]]] = {}
        for i, draft in enumerate(drafts):
            mine: dict[int, list[str]] = {}
            for topic in draft.topics:
                mine.setdefault(of_topic(topic), []).append(topic)
            for p, topics in mine.items():
                groups.setdefault(p, []).append((i, topics))
        calls = [
            self._publish_call(p, items, drafts, bodies, idempotency) for p, items in sorted(groups.items())
        ]
        if idempotency is not None:
            # The key's own partition holds its record too, whichever partitions the request touches, so
            # that a request reusing the key for other topics finds it there. The price of a key on a
            # cluster: a round trip to read the records first, and sometimes one more script call.
            home = int(idempotency.name[:8], 16) % self._parts.count
            await self._check_reuse(sorted({*groups, home}), idempotency)
            if home not in groups:
                calls.append(self._publish_call(home, [], [], [], idempotency))
        try:
            async with self._commands:
                # Shielded: a client hanging up must not cancel the calls half-way through their replies.
                replies = await asyncio.shield(self._publishing.run(calls))
        except OutcomeUnknown:
            self._refusals.failed()
            raise
        except (Refused, *REDIS_DOWN) as exc:  # nothing was published
            error = exc.reply if isinstance(exc, Refused) else exc
            refused = isinstance(error, redis.exceptions.ResponseError)
            if isinstance(error, redis.exceptions.ResponseError) and is_transient(error):
                log.debug("publish failed: %s", error)  # a slot moving, a failover: not a refusal
            else:
                if refused:
                    log.error("redis refused a publish: %s", error)
                else:
                    log.debug("publish failed: %s", error)
                self._refusals.failed()
            raise BrokerUnavailable() from None
        self._refusals.succeeded()
        if b"!reused" in replies:
            raise idempotency_key_reused()
        entries: list[list[tuple[int, str, int]]] = [[] for _ in drafts]
        # The key's own partition answered last, if it was called for its record alone: no ids of ours.
        for (p, items), reply in zip(sorted(groups.items()), replies[: len(groups)], strict=True):
            for (i, _), id_ in zip(items, reply.decode().split(" "), strict=True):
                position = parse_id(id_)
                assert position is not None
                entries[i].append((p, position.epoch, position.seq))
                self._receiver.note_published(p, position)
        return [format_vector(e) for e in entries]

    async def _check_reuse(self, partitions: list[int], idempotency: Idempotency) -> None:
        """Refuse a key that answered another request, before anything is published: each partition's
        script checks only its own record, and a request that reuses a key for other partitions would
        otherwise be published in those and refused in the others. (Two requests racing with one key
        can still get past this; the scripts then refuse the second where the first has written.)"""
        try:
            async with self._commands, asyncio.timeout(self._publish_timeout):
                found = await asyncio.gather(
                    *(self._client.get(self._keys[p].idempotency(idempotency.name)) for p in partitions)
                )
        except REDIS_DOWN as exc:  # asyncio's TimeoutError among them
            log.debug("idempotency check failed: %s", exc)
            self._refusals.failed()
            raise BrokerUnavailable() from None
        for record in found:
            fingerprint, bar, _ = text_of(record).partition("|")
            if bar and fingerprint != idempotency.fingerprint:
                raise idempotency_key_reused()

    async def _probe_publish(self) -> None:
        """The publish script with no event, on the home partition: raises while Redis refuses it."""
        call = self._publish_call(self._home, [], [], [], None)
        async with self._commands:
            await self._publishing.run([call])

    def _publish_call(
        self,
        p: int,
        items: list[tuple[int, list[str]]],
        drafts: Sequence[Draft],
        bodies: list[bytes],
        idempotency: Idempotency | None,
    ) -> ScriptCall:
        """The publish script's call for partition p's share of a publish."""
        keys = self._keys[p]
        one_off = secrets.token_hex(12) if idempotency is None else ""
        record = publish_record(keys, idempotency, self._idempotency_window, one_off)
        return publish_call(
            keys,
            self._bounds,
            [ScriptEvent(topics, bodies[i], drafts[i].retain) for i, topics in items],
            record=record,
            evidence=self._receiver.evidence(p),
            sharded=True,
        )

    async def tick(self) -> None:
        partitions = sorted(self._receiver.live | {self._home})
        payload = self._receiver.begin_tick(partitions)
        try:
            channels = self._parts.channels
            async with self._commands, asyncio.timeout(self._config.connect_timeout):
                await asyncio.gather(*(self._client.spublish(channels[p], payload) for p in partitions))
        except (*REDIS_DOWN, TimeoutError):
            raise BrokerUnavailable() from None

    # reading

    def parse_position(self, text: str) -> VectorId | None:
        return parse_vector(text, self._parts.count)

    async def snapshot(self, selectors: Sequence[Selector], since: Since[VectorId]) -> Snapshot:
        return await self._reads.snapshot(selectors, since)

    async def history_page(self, topic: str, after: Position | None, limit: int) -> HistoryPage:
        return await self._reads.history_page(topic, after, limit)

    async def resolve_after(self, topic: str, text: str) -> Position | None:
        return await self._reads.resolve_after(topic, text)

    # subscribing

    def hold_reading(self, held: bool) -> None:
        self._links.hold_reading(held)

    def subscribe(self, selector: Selector) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = set()
        for p in self._parts.of_selector(selector):
            wanted = self._wanted.get(p)
            if wanted is None:
                wanted = self._wanted[p] = {}
                self._links.want(p)
            wanted[selector] = wanted.get(selector, 0) + 1
            if p not in self._receiver.live:
                pending.add(p)
        if pending:
            self._receiver.waiters.append((pending, future))
        else:
            future.set_result(None)
        return future

    def unsubscribe(self, selector: Selector) -> None:
        for p in self._parts.of_selector(selector):
            wanted = self._wanted.get(p)
            if wanted is None or selector not in wanted:
                continue
            wanted[selector] -= 1
            if wanted[selector] == 0:
                del wanted[selector]
            if not wanted and p != self._home:
                del self._wanted[p]
                # A read still waiting for its sync token (a stream closed while it opened) fails now:
                # the token will not come once the partition is unsubscribed.
                self._receiver.lose(p)
                self._receiver.known.discard(p)
                self._links.unwant(p)

    # what the receiver asks for

    async def _catch_up_read(
        self, p: int, selectors: list[Selector], since: Position, last: Received | None
    ) -> tuple[Position, str | None, list[bytes]]:
        return await self._reads.read_partition(p, selectors, SinceKind.AFTER, since, last, sync=False)

    def _bounce(self, p: int) -> None:
        self._links.bounce(p)

    def _reconnected(self) -> None:
        self.reconnects += 1
