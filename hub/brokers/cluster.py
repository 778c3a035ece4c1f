"""The Redis Cluster broker: the Redis broker's scripts, run per partition, over sharded pub/sub.

Topics are hashed into partitions (`hub.wire.partitions`), each one hash slot: its counter, topic registry,
retained state, histories and one sharded channel, so the publish script stays atomic on one shard. An
event of topics in several partitions is published once in each (its copy there carries that
partition's topics), and a subscriber of several takes it from the lowest (`VectorCursor.duplicate`).

Receiving: one raw RESP connection per cluster node this process needs (`_Link`), holding an SSUBSCRIBE
for each partition channel that node serves and some local subscriber reads. When a slot moves
(resharding: Redis sends `sunsubscribe`; or a `MOVED` reply), or a node's connection is lost (failover),
the partition is subscribed again wherever the refreshed slot map says, and caught up from its history
from the last position this process received, with a continuity check: a promoted replica that lacks
events this process already delivered starts a new epoch, and the streams resync with a `reset`.

Commands (publish, snapshots, history) go through redis-py's cluster client, which follows the slot map.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import ssl
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from hub.brokers import redis_scripts, sending
from hub.brokers.base import Broker, BrokerSink, stored_position
from hub.brokers.redis import RedisReplyError, authenticate
from hub.brokers.redis_keys import RedisKeys
from hub.brokers.refusals import Refusals
from hub.brokers.reply_reader import ReplyReader, hold
from hub.brokers.resp import pack
from hub.brokers.topic_ttl import TopicSweeper, ttl_ms
from hub.config import HistoryConfig, RedisConfig
from hub.errors import BrokerUnavailable, OutcomeUnknown, idempotency_key_reused
from hub.wire.cluster_ids import Stamp, VectorCursor, digest, format_vector, parse_vector
from hub.wire.event import Draft, EnvelopeError, Event, new_epoch, open_envelope
from hub.wire.idempotency import Idempotency
from hub.wire.ids import (
    RESET_EPOCH,
    RESET_PARTIAL,
    RESET_UNKNOWN,
    HistoryPage,
    Position,
    Since,
    SinceKind,
    Snapshot,
    newest,
    parse_id,
)
from hub.wire.partitions import Partitions
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

PUBLISH_TOKEN_TTL = 120
_REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.ResponseError,  # TRYAGAIN and "non local key" while a slot migrates, among others
    OSError,
)
BACKOFF_MIN = 0.05
BACKOFF_MAX = 5.0
CLOSE_TIMEOUT = 2.0
REFRESH_INTERVAL = 0.25  # slot map reads while a partition has no working link
SNAPSHOT_RETRY_MIN = 0.1  # seconds between snapshot reads while a shard fails over...
SNAPSHOT_RETRY_MAX = 1.0  # ...doubling up to this
# KEYS: the partition's sequence hash, a topic's history. ARGV: exclusive start, count.
HISTORY_PAGE = """
local position = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
return {position[1], position[2], redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])}
"""


def cluster_url(url: str) -> str:
    """The URL redis-py's cluster client takes: `redis+cluster://h:p` names a node as `redis://h:p`."""
    for scheme in ("redis", "rediss"):
        if url.startswith(f"{scheme}+cluster://"):
            return f"{scheme}://" + url.split("://", 1)[1]
    return url


class RedisClusterBroker(Broker):
    name = "redis-cluster"

    def __init__(self, config: RedisConfig, history: HistoryConfig, idempotency_window: float) -> None:
        self._config = config
        self._history = history
        self._idempotency_window = idempotency_window
        self._parts = parts = Partitions(config.partitions, config.prefix)
        self._keys = [RedisKeys(prefix) for prefix in parts.prefixes]
        self._client = RedisCluster.from_url(
            cluster_url(config.url),
            socket_connect_timeout=config.connect_timeout,
            socket_timeout=config.connect_timeout,
            max_connections=config.max_connections,
        )
        sending.mark_sends(self._client)
        self._publish_script = self._client.register_script(redis_scripts.PUBLISH)
        self._snapshot_script = self._client.register_script(redis_scripts.SNAPSHOT)
        self._history_script = self._client.register_script(HISTORY_PAGE)
        # redis-py's cluster client retries a node that does not answer ten times over, a connect timeout
        # each: a publish gives up sooner, so that a paused shard fails its publishes (and readiness) in
        # seconds. Room for one connection to open and one round trip, and the replicas' WAIT.
        waiting = config.wait_timeout if config.wait_replicas else 0
        self._publish_timeout = 2 * config.connect_timeout + waiting
        # redis-py's cluster pool fails past max_connections instead of waiting: callers queue here.
        self._commands = asyncio.Semaphore(config.max_connections)
        self._sweeper = TopicSweeper(self._client, self._keys, history, self._commands)
        self._ttl_ms = ttl_ms(history)
        self.node = secrets.token_hex(6)
        self._sink: BrokerSink | None = None
        n = parts.count
        # What this process has received of each partition: the stamp of every event it passes on.
        self._epochs: list[str] = [""] * n
        self._seqs: list[int] = [0] * n
        self._published: list[Position | None] = [None] * n  # the newest id each partition's publishes got
        self._epoch_tuple: tuple[str, ...] = ("",) * n
        self._own_digest: list[str] = [""] * n
        # The last event received per partition (topic, seq, envelope): the continuity check's subject.
        self._last: list[tuple[str, int, bytes] | None] = [None] * n
        self._wanted: dict[int, dict[Selector, int]] = {}
        # The tick goes through this partition even when no subscriber wants any.
        self._home = random.randrange(n)
        self._live: set[int] = set()  # subscribed and caught up
        self._known: set[int] = set()  # received continuously since first subscribed: catch up on return
        self._held: dict[int, list[bytes]] = {}  # live messages of a partition that is catching up
        self._waiters: list[tuple[set[int], asyncio.Future[None]]] = []
        self._syncs: dict[bytes, tuple[int, asyncio.Future[Position]]] = {}
        self._deferred: dict[int, list[tuple[asyncio.Future[Position], Position]]] = {}
        self._links: dict[tuple[str, int], _Link] = {}
        self._route: dict[int, _Link] = {}
        self._catch_ups: dict[int, asyncio.Task[None]] = {}
        self._refresh_task: asyncio.Task[None] | None = None
        self._tick_round = 0
        self._tick_pending: set[int] = set()
        self._closed = False
        self._refusals = Refusals(self._probe_publish)
        self._reading_held = False  # the fan-out asked for no reading from the links for now

    # lifecycle

    async def start(self, sink: BrokerSink) -> None:
        self._sink = sink
        try:
            await self._client.initialize()
        except _REDIS_DOWN as exc:
            # Not fatal: the links retry, and readiness says whether the cluster is reachable.
            log.warning("redis cluster not reachable yet: %s", exc)
        self._want(self._home)
        self._sweeper.start()

    async def close(self) -> None:
        self._closed = True
        tasks = [link.task for link in self._links.values()] + list(self._catch_ups.values())
        if self._refresh_task is not None:
            tasks.append(self._refresh_task)
        for task in tasks:
            task.cancel()
        # Bounded, and the loops also check `_closed`: on Python 3.11 a cancellation can be lost inside
        # the Redis client (a timeout expiring at the same moment), and the loop would go round again.
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a link that failed while closing is no news
        self._links.clear()
        self._route.clear()
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()
        await self._refusals.close()
        await self._sweeper.close()
        await self._client.aclose()
        self._sink = None

    @property
    def ready(self) -> bool:
        return not self._refusals.refused and all(p in self._live for p in self._wanted)

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
            self._script_call(p, items, drafts, bodies, idempotency) for p, items in sorted(groups.items())
        ]
        if idempotency is not None:
            # The key's own partition holds its record too, whichever partitions the request touches, so
            # that a request reusing the key for other topics finds it there. The price of a key on a
            # cluster: a round trip to read the records first, and sometimes one more script call.
            home = int(idempotency.name[:8], 16) % self._parts.count
            await self._check_reuse(sorted({*groups, home}), idempotency)
            if home not in groups:
                calls.append(self._script_call(home, [], [], [], idempotency))
        try:
            async with self._commands:
                # Shielded: a client hanging up must not cancel the calls half-way through their replies.
                replies = await asyncio.shield(self._run_scripts(calls))
        except OutcomeUnknown:
            self._refusals.failed()
            raise
        except (_Refused, *_REDIS_DOWN) as exc:  # nothing was published
            error = exc.reply if isinstance(exc, _Refused) else exc
            refused = isinstance(error, redis.exceptions.ResponseError)
            if isinstance(error, redis.exceptions.ResponseError) and _is_transient(error):
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
                self._published[p] = newest(self._published[p], position)
        return [format_vector(e) for e in entries]

    def _evidence(self, p: int) -> tuple[str, int]:
        """The newest position this hub had of partition p, received or answered to its own publishes:
        the only evidence on which the scripts start a new epoch (the partition holds less than that)."""
        epoch, seq = self._epochs[p], self._seqs[p]
        published = self._published[p]
        if published is not None and (not epoch or (published.epoch == epoch and published.seq > seq)):
            return published.epoch, published.seq
        return epoch, seq

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
        except _REDIS_DOWN as exc:  # asyncio's TimeoutError among them
            log.debug("idempotency check failed: %s", exc)
            self._refusals.failed()
            raise BrokerUnavailable() from None
        for record in found:
            fingerprint, bar, _ = _text(record).partition("|")
            if bar and fingerprint != idempotency.fingerprint:
                raise idempotency_key_reused()

    async def _probe_publish(self) -> None:
        """The publish script with no event, on the home partition: raises while Redis refuses it."""
        call = self._script_call(self._home, [], [], [], None)
        async with self._commands:
            await self._run_scripts([call])

    def _script_call(
        self,
        p: int,
        items: list[tuple[int, list[str]]],
        drafts: Sequence[Draft],
        bodies: list[bytes],
        idempotency: Idempotency | None,
    ) -> tuple[list[str], list[bytes | str | int]]:
        """The keys and arguments of the publish script for partition p's share of a publish."""
        prefix = self._parts.prefixes[p]
        args: list[bytes | str | int] = [
            prefix,
            PUBLISH_TOKEN_TTL if idempotency is None else int(self._idempotency_window),
            new_epoch(),
            *self._evidence(p),
            self._history.max_events,
            int(self._history.max_age * 1000),
            len(items),
            self._parts.channels[p],
            "" if idempotency is None else idempotency.fingerprint,
            self._ttl_ms,
        ]
        histories: dict[str, None] = {}
        for i, topics in items:
            args.append(len(topics))
            args.extend(topics)
            args.append(bodies[i])
            args.append(1 if drafts[i].retain else 0)
            histories.update(dict.fromkeys(self._keys[p].history(t) for t in topics))
        # Every key declared: while the slot migrates, Redis then answers TRYAGAIN before running
        # anything, instead of failing the script half-way through on a key that has already moved.
        keys = self._keys[p]
        if idempotency is None:
            token_key = keys.publish_token(secrets.token_hex(12))
        else:
            token_key = keys.idempotency(idempotency.name)
        return [keys.sequence, keys.topics, keys.retained, token_key, *keys.publish_indexes, *histories], args

    async def _run_scripts(self, calls: list[tuple[list[str], list[bytes | str | int]]]) -> list[bytes]:
        """Every partition's script call of one publish in one pipeline: one round trip per node, not
        one per partition. With `wait_replicas`, a WAIT follows each node's calls on the same connection
        (WAIT counts the replicas that have that connection's writes).

        Raises what redis-py raised, or the `ResponseError` of a partition, only when nothing was
        published; `OutcomeUnknown` when something may have been (see `hub.brokers.sending`)."""
        with sending.watch() as sends:
            try:
                async with asyncio.timeout(self._publish_timeout):
                    return await self._run_rounds(calls)
            except _REDIS_DOWN as exc:  # asyncio's TimeoutError among them
                if sends.sent:
                    raise OutcomeUnknown(_unanswered(exc)) from None
                raise

    async def _run_rounds(self, calls: list[tuple[list[str], list[bytes | str | int]]]) -> list[bytes]:
        config = self._config
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for body in (None, redis_scripts.PUBLISH):  # EVALSHA, then EVAL where a node lacks the script
            pipe = self._client.pipeline(transaction=False)
            nodes = {}
            for k in todo:
                keys, args = calls[k]
                # execute_command: the cluster pipeline refuses its evalsha() method, not the command
                if body is None:
                    pipe.execute_command("EVALSHA", self._publish_script.sha, len(keys), *keys, *args)
                else:
                    pipe.execute_command("EVAL", body, len(keys), *keys, *args)
                if config.wait_replicas:
                    node = self._client.get_node_from_key(keys[0])
                    if node is None:
                        down = redis.exceptions.ClusterDownError("no node serves a partition now")
                        raise _refused(replies, down)
                    nodes[node.name] = node
            for node in nodes.values():
                pipe.execute_command(
                    "WAIT", config.wait_replicas, int(config.wait_timeout * 1000), target_nodes=node
                )
            results = await pipe.execute(raise_on_error=False)
            missing, refusals = [], []
            for k, reply in zip(todo, results, strict=False):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    missing.append(k)
                elif isinstance(reply, redis.exceptions.ResponseError):
                    refusals.append(reply)  # an error reply: the script did not run
                elif isinstance(reply, Exception):
                    raise OutcomeUnknown(_unanswered(reply))
                else:
                    replies[k] = bytes(reply)
            if refusals:
                raise _refused(replies, refusals[0])
            for acked in results[len(todo) :]:
                # The primaries have the event (subscribers may have it too): not a "nothing published".
                if isinstance(acked, Exception) or int(acked) < config.wait_replicas:
                    confirmed = 0 if isinstance(acked, Exception) else int(acked)
                    raise OutcomeUnknown(
                        f"{confirmed} of {config.wait_replicas} replicas confirmed the event within"
                        f" {config.wait_timeout} s (a failover may lose it)"
                    )
            if not missing:
                return replies
            todo = missing
        raise _refused(replies, redis.exceptions.NoScriptError("redis refused the publish script"))

    async def tick(self) -> None:
        self._tick_round += 1
        partitions = sorted(self._live | {self._home})
        self._tick_pending = set(partitions)
        payload = f"!t{self.node}.{self._tick_round}".encode()
        try:
            channels = self._parts.channels
            async with self._commands, asyncio.timeout(self._config.connect_timeout):
                await asyncio.gather(*(self._client.spublish(channels[p], payload) for p in partitions))
        except (*_REDIS_DOWN, TimeoutError):
            raise BrokerUnavailable() from None

    # reading

    async def snapshot(self, selectors: Sequence[Selector], since: Since) -> Snapshot:
        parts = self._parts
        mask = parts.of_selectors(selectors)
        after: dict[int, int] = {}
        epochs: dict[int, str] = {}
        reset = None
        if since.kind is SinceKind.AFTER:
            reset = RESET_UNKNOWN  # a one-Redis id: nothing here to resume from
        elif since.kind is SinceKind.UNKNOWN:
            vector = parse_vector(since.raw, parts.count)
            if vector is None:
                reset = RESET_UNKNOWN
            else:
                known = await self._current_epochs(vector.seqs)
                if digest(sorted(known.items())) != vector.digest:
                    reset = RESET_EPOCH
                elif not set(mask) <= vector.seqs.keys():
                    # An id of another subscription (or a publish id): it cannot say what this one
                    # missed in the partitions it does not name.
                    reset = RESET_PARTIAL
                else:
                    after = {p: s for p, s in vector.seqs.items() if p in mask}
                    epochs = known
        reads = []
        for p in mask:
            chosen = [s for s in selectors if p in parts.of_selector(s)]
            if reset is not None:
                mode, position = "new", None
            elif since.kind is SinceKind.EARLIEST:
                mode, position = "earliest", None
            elif p in after:
                mode, position = "after", Position(epochs[p], after[p])
            else:
                mode, position = "new", None  # no Last-Event-ID: retained state, then live
            reads.append(self._read_partition(p, chosen, mode, position, None, sync=True))
        results = await asyncio.gather(*reads, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        cursor = VectorCursor(mask, {}, {}, selectors, parts.of_topic)
        events: list[Event] = []
        running: dict[int, int] = {}
        replies = [r for r in results if not isinstance(r, BaseException)]
        for p, (position, reset_p, _) in zip(mask, replies, strict=True):
            cursor.epochs[p] = position.epoch
            cursor.seqs[p] = position.seq
            reset = reset or reset_p
            running[p] = after.get(p, position.seq) if reset_p is None else position.seq
            if since.kind is SinceKind.EARLIEST and reset_p is None:
                running[p] = 0
        # Partition by partition: each event's id names, for the others, what was sent before it.
        for p, (_, _, messages) in zip(mask, replies, strict=True):
            for seq, event in self._copies(p, messages):
                if cursor.duplicate(event):
                    continue
                running[p] = max(running[p], seq)
                entries = [(q, cursor.epochs[q], running[q]) for q in mask]
                event.id = format_vector(entries)
                events.append(event)
        return Snapshot(cursor, events, reset)

    def _copies(self, p: int, messages: Iterable[bytes]) -> list[tuple[int, Event]]:
        """Envelopes of one partition as its events, in seq order, each once (an event of two topics
        is in both histories)."""
        found: dict[int, Event] = {}
        for message in messages:
            event = self._open(p, message)
            if event is None:
                continue
            seq = _seq(message)
            found.setdefault(seq, event)
        return sorted(found.items())

    async def _current_epochs(self, partitions: Iterable[int]) -> dict[int, str]:
        listed = list(partitions)
        try:
            async with self._commands:
                found = await asyncio.gather(
                    *(self._client.hget(self._keys[p].sequence, "epoch") for p in listed)
                )
        except _REDIS_DOWN as exc:
            log.debug("redis cluster call failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        return {p: _text(e) for p, e in zip(listed, found, strict=True)}

    async def _run_snapshot(self, keys: list[str], args: list[bytes | str | int]) -> Any:
        """The snapshot script's reply. A shard that fails over answers nothing for a few seconds, and
        the client gives up sooner than that: the read is tried again until `connect_timeout` has gone
        by (a repeat changes nothing: an epoch it set up is there already, its sync token comes twice),
        so that a subscriber arriving during a failover waits for the promoted replica, not a 503."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.connect_timeout
        pause = SNAPSHOT_RETRY_MIN
        while True:
            try:
                async with self._commands:
                    return await self._snapshot_script(keys=keys, args=args)
            except _REDIS_DOWN:
                if self._closed or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, SNAPSHOT_RETRY_MAX)

    async def _read_partition(
        self,
        p: int,
        selectors: Sequence[Selector],
        mode: str,
        after: Position | None,
        check: tuple[str, int, bytes] | None,
        *,
        sync: bool,
    ) -> tuple[Position, str | None, list[bytes]]:
        """Run the snapshot script on partition p; with `sync`, return once this process's link has read
        every message published before the read (the script publishes a token after it)."""
        prefix = self._parts.prefixes[p]
        exact = [s.text for s in selectors if not s.is_pattern]
        patterns = [s for s in selectors if s.is_pattern]
        token = f"!s{self.node}.{secrets.token_hex(6)}".encode()
        args: list[bytes | str | int] = [
            prefix,
            new_epoch(),
            mode,
            after.epoch if after else "",
            after.seq if after else 0,
            self._parts.channels[p],
            token,
            self._history.max_replay,
            "SPUBLISH",
            *self._evidence(p),
            check[0] if check else "",
            check[1] if check else 0,
            check[2] if check else "",
            self._history.max_replay_bytes,
            len(exact),
            *exact,
            len(patterns),
        ]
        for pattern in patterns:
            args.extend((len(pattern.segments), "/".join(pattern.segments), 1 if pattern.tail else 0))
        keys = [*self._keys[p].snapshot_keys, *(self._keys[p].history(t) for t in exact)]
        synced: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        if sync:
            if p not in self._wanted:  # given up already (its stream closed): no token would reach us
                raise BrokerUnavailable("the redis cluster subscription was lost")
            self._syncs[token] = (p, synced)
        try:
            reply = await self._run_snapshot(keys, args)
            epoch, seq, reset, *messages = reply
            position = Position(epoch.decode(), int(seq))
            if sync:
                async with asyncio.timeout(self._config.connect_timeout):
                    await synced
        except TimeoutError:  # first: asyncio's timeout is an OSError, which _REDIS_DOWN holds
            raise BrokerUnavailable("the redis cluster subscription did not keep up") from None
        except _REDIS_DOWN as exc:
            log.debug("redis cluster call failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        finally:
            self._syncs.pop(token, None)
        return position, redis_scripts.RESETS[reset], messages

    async def history_page(self, topic: str, after: Position | None, limit: int) -> HistoryPage:
        p = self._parts.of_topic(topic)
        keys = self._keys[p]
        start = "-" if after is None else f"({min(after.seq, 2**63 - 1)}-0"
        try:
            async with self._commands:
                epoch, seq, entries = await self._history_script(
                    keys=[keys.sequence, keys.history(topic)], args=[start, limit]
                )
        except _REDIS_DOWN as exc:
            log.debug("redis cluster call failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        position = stored_position(epoch, seq)
        events = []
        last = None
        for entry_id, fields in entries:
            message = dict(zip(fields[::2], fields[1::2], strict=True))[b"m"]
            event = self._open(p, message, stamped=False)
            if event is not None:
                last = Position(position.epoch, int(entry_id.split(b"-")[0]))
                event.id = format_vector([(p, _epoch(message), last.seq)])
                events.append(event)
        return HistoryPage(position, events, last)

    async def resolve_after(self, topic: str, text: str) -> Position | None:
        vector = parse_vector(text, self._parts.count)
        p = self._parts.of_topic(topic)
        if vector is None or p not in vector.seqs:
            return None
        known = await self._current_epochs(vector.seqs)
        epoch = known[p] if digest(sorted(known.items())) == vector.digest else "~lost"
        return Position(epoch, vector.seqs[p])

    # subscribing

    def hold_reading(self, held: bool) -> None:
        self._reading_held = held
        for link in self._links.values():
            hold(link.writer, held)

    def subscribe(self, selector: Selector) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = set()
        for p in self._parts.of_selector(selector):
            wanted = self._wanted.get(p)
            if wanted is None:
                wanted = self._wanted[p] = {}
                self._want(p)
            wanted[selector] = wanted.get(selector, 0) + 1
            if p not in self._live:
                pending.add(p)
        if pending:
            self._waiters.append((pending, future))
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
                self._unwant(p)

    def _want(self, p: int) -> None:
        self._wanted.setdefault(p, {})
        link = self._link_for(p)
        if link is not None:
            self._route[p] = link
            link.add(p)

    def _unwant(self, p: int) -> None:
        # A read still waiting for its sync token (a stream closed while it opened) fails now: the token
        # will not come once the partition is unsubscribed.
        self._lose(p)
        self._known.discard(p)
        link = self._route.pop(p, None)
        if link is not None:
            link.remove(p)
            if not link.partitions:
                self._drop_link(link)

    def _link_for(self, p: int) -> _Link | None:
        try:
            node = self._client.nodes_manager.get_node_from_slot(self._parts.slots[p])
        except Exception:  # no slot map yet, or the slot uncovered: a refresh will place it
            self._refresh_soon()
            return None
        address = (str(node.host), int(node.port))
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = _Link(self, address)
        return link

    def _drop_link(self, link: _Link) -> None:
        if self._links.get(link.address) is link:
            del self._links[link.address]
        link.task.cancel()

    def _refresh_soon(self) -> None:
        if self._refresh_task is None and not self._closed:
            self._refresh_task = asyncio.create_task(self._refresh(), name="hub-cluster-refresh")

    async def _refresh(self) -> None:
        """Read the slot map again and move every partition whose slot moved to its new node's link.

        Goes on reading it while a partition stays on a link that cannot connect: a failed primary is
        still in the map until its replica is promoted, a few seconds later."""
        backoff = BACKOFF_MIN
        try:
            while not self._closed:
                try:
                    await self._client.nodes_manager.initialize()
                except Exception as exc:
                    log.debug("redis cluster slot map refresh failed: %s", exc)
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                unplaced = False
                for p in list(self._wanted):
                    old = self._route.get(p)
                    link = self._link_for(p)
                    if link is None:
                        unplaced = True
                        continue
                    if link is old:
                        unplaced = unplaced or link.writer is None
                        continue
                    if old is not None:
                        old.remove(p)
                        if not old.partitions:
                            self._drop_link(old)
                    self._lose(p)
                    self._route[p] = link
                    link.add(p)
                if not unplaced:
                    return
                await asyncio.sleep(REFRESH_INTERVAL)
        finally:
            self._refresh_task = None

    def _lose(self, p: int) -> None:
        """Partition p's subscription is gone (a lost link, a moved slot): it catches up on its return."""
        self._live.discard(p)
        self._held.pop(p, None)
        task = self._catch_ups.pop(p, None)
        if task is not None:
            task.cancel()
        for future, _ in self._deferred.pop(p, []):
            if not future.done():
                future.set_exception(BrokerUnavailable("the redis cluster subscription was lost"))
                future.add_done_callback(lambda f: f.exception())
        for token, (q, future) in list(self._syncs.items()):
            if q == p and not future.done():
                future.set_exception(BrokerUnavailable("the redis cluster subscription was lost"))
                future.add_done_callback(lambda f: f.exception())
                del self._syncs[token]

    # what the links read

    def _on_subscribed(self, link: _Link, p: int) -> None:
        if self._route.get(p) is not link or p not in self._wanted:
            return
        # A partition this process never received anything from has nothing to resume: no stream has
        # read it either (a stream's read sets the epoch). Only the home partition's tick comes to that;
        # catching up there would find no epoch to match and reset every stream of the hub.
        if p in self._known and self._epochs[p]:
            self._held[p] = []
            self._catch_ups[p] = asyncio.create_task(self._catch_up(p), name=f"hub-cluster-catch-up-{p}")
        else:
            self._known.add(p)
            self._go_live(p)

    def _on_moved(self, link: _Link, p: int) -> None:
        if self._route.get(p) is link:
            log.info("partition %d left %s:%d (slot moved); following it", p, *link.address)
            self._route.pop(p)
            link.remove(p, tell=False)
            self._lose(p)
        self._refresh_soon()

    def _on_link_down(self, link: _Link) -> None:
        for p in list(link.partitions):
            self._lose(p)
        self._refresh_soon()

    def _on_message(self, p: int, message: bytes) -> None:
        if message[:1] == b"!":
            self._on_control(p, message)
            return
        held = self._held.get(p)
        if held is not None:
            held.append(message)
            return
        self._deliver(p, message)

    def _deliver(self, p: int, message: bytes) -> None:
        seq = _seq(message)
        epoch = _epoch(message)
        if epoch == self._epochs[p] and seq <= self._seqs[p]:
            return  # delivered already (a catch-up overlaps the live stream it ran beside)
        self._advance(p, epoch, seq)
        event = self._open(p, message)
        if event is None:
            return
        self._last[p] = (event.topics[0], seq, message)
        if self._sink is not None:
            self._sink.on_event(event)

    def _advance(self, p: int, epoch: str, seq: int) -> None:
        """Move partition p's received position. A partition that changes epoch under a live
        subscription may have lost events this process delivered: its streams are told to resync."""
        if epoch != self._epochs[p]:
            if self._epochs[p]:
                log.warning("partition %d changed epoch under a live subscription: resyncing streams", p)
                if self._sink is not None:
                    self._sink.on_lost(RESET_EPOCH)
            self._epochs[p] = epoch
            self._epoch_tuple = tuple(self._epochs)
            self._own_digest[p] = digest([(p, epoch)])
            self._last[p] = None
            self._seqs[p] = seq
        elif seq > self._seqs[p]:
            self._seqs[p] = seq

    def _open(self, p: int, message: bytes, *, stamped: bool = True) -> Event | None:
        try:
            event = open_envelope(message)
        except EnvelopeError as exc:
            log.warning("dropped a malformed message from redis: %s", exc)
            return None
        if len(event.topics) > 1:
            of_topic = self._parts.of_topic
            own = tuple(t for t in event.topics if of_topic(t) == p)
            if len(own) < len(event.topics):
                event.cross = tuple(t for t in event.topics if of_topic(t) != p)
                event.topics = own
        if stamped:
            event.stamp = Stamp(p, self._epoch_tuple, tuple(self._seqs))
            event.id = f"{self._own_digest[p]}_{p}.{self._seqs[p]}"
        return event

    def _on_control(self, p: int, message: bytes) -> None:
        if message.startswith(b"!t" + self.node.encode() + b"."):
            if int(message.rpartition(b".")[2]) == self._tick_round:
                self._tick_pending.discard(p)
                if not self._tick_pending and self._sink is not None:
                    self._sink.on_tick()
            return
        token, _, position_text = message.partition(b" ")
        entry = self._syncs.get(token)
        position = parse_id(position_text.decode())
        if entry is None or position is None:
            return
        _, future = entry
        if p in self._held:
            # Caught up first: the subscriber must not go live before the events held before its read.
            self._deferred.setdefault(p, []).append((future, position))
            return
        self._settle(p, future, position)

    def _settle(self, p: int, future: asyncio.Future[Position], position: Position) -> None:
        self._advance(p, position.epoch, position.seq)
        if not future.done():
            future.set_result(position)

    async def _catch_up(self, p: int) -> None:
        """Deliver what partition p published while this process was not subscribed, then what arrived
        meanwhile, then go live."""
        since = Position(self._epochs[p], self._seqs[p])
        selectors = list(self._wanted.get(p, {}))
        try:
            position, reset, messages = await self._read_partition(
                p, selectors, "after", since, self._last[p], sync=False
            )
        except BrokerUnavailable as exc:
            log.warning("partition %d catch-up failed: %s; retrying", p, exc)
            self._catch_ups.pop(p, None)
            link = self._route.get(p)
            if link is not None:
                link.bounce()
            return
        held = self._held.pop(p, [])
        self._catch_ups.pop(p, None)
        if reset is not None:
            log.warning("partition %d lost events (%s): closing streams so they resync", p, reset)
            if self._sink is not None:
                self._sink.on_lost(reset)
            self._epochs[p] = ""  # so the new epoch is taken without a second alarm
            self._advance(p, position.epoch, position.seq)
            messages = []
        caught = 0
        for message in sorted(_dedupe(messages), key=_seq):
            if _seq(message) > self._seqs[p]:
                self._deliver(p, message)
                caught += 1
        self._advance(p, position.epoch, position.seq)
        for message in held:
            self._deliver(p, message)
        log.info("partition %d live: caught up %d events to %s, then %d live", p, caught, position, len(held))
        self._go_live(p)

    def _go_live(self, p: int) -> None:
        self._live.add(p)
        for future, position in self._deferred.pop(p, []):
            self._settle(p, future, position)
        still = []
        for pending, waiter in self._waiters:
            pending.discard(p)
            if not pending:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((pending, waiter))
        self._waiters = still


class _Link:
    """One connection to one cluster node, holding the sharded subscriptions of the partitions it serves."""

    def __init__(self, broker: RedisClusterBroker, address: tuple[str, int]) -> None:
        self.broker = broker
        self.address = address
        self.partitions: set[int] = set()
        self.leaving: set[int] = set()  # SUNSUBSCRIBEd by us: its confirmation is no slot move
        self.writer: asyncio.StreamWriter | None = None
        self.task = asyncio.create_task(self._run(), name=f"hub-cluster-link-{address[0]}:{address[1]}")

    def add(self, p: int) -> None:
        self.partitions.add(p)
        self.leaving.discard(p)
        if self.writer is not None:
            self.writer.write(pack(b"SSUBSCRIBE", self.broker._parts.channels[p]))

    def remove(self, p: int, *, tell: bool = True) -> None:
        self.partitions.discard(p)
        if tell and self.writer is not None:
            self.leaving.add(p)
            self.writer.write(pack(b"SUNSUBSCRIBE", self.broker._parts.channels[p]))

    def bounce(self) -> None:
        """Drop the connection; the partitions subscribe again and catch up."""
        if self.writer is not None:
            self.writer.close()

    async def _run(self) -> None:
        broker = self.broker
        backoff = BACKOFF_MIN
        while self.partitions and not broker._closed:
            writer: asyncio.StreamWriter | None = None
            served = False
            failed = ""
            try:
                reader, writer = await self._connect()
                self.writer = writer
                commands = [pack(b"CLIENT", b"SETNAME", f"{broker._config.prefix}-sub-{broker.node}")]
                commands += [pack(b"SSUBSCRIBE", broker._parts.channels[p]) for p in sorted(self.partitions)]
                reading = ReplyReader.take_over(reader, writer, self._on_reply, held=broker._reading_held)
                writer.write(b"".join(commands))
                try:
                    await reading.ended  # raises why the connection ended
                finally:
                    served = reading.received
            except (OSError, EOFError, hiredis.ProtocolError, TimeoutError) as exc:
                if served:
                    log.warning("link to %s:%d: %s", *self.address, exc)
                else:
                    failed = str(exc) or type(exc).__name__  # warned below, with the delay
            except Exception:
                log.exception("link to %s:%d failed; reconnecting", *self.address)
            finally:
                self.writer = None
                if writer is not None:
                    writer.close()
                self.leaving.clear()
                if not broker._closed:
                    broker._on_link_down(self)
            if served:
                broker.reconnects += 1
                backoff = BACKOFF_MIN
            delay = backoff * random.uniform(0.5, 1.5)
            if failed:
                log.warning(
                    "redis node %s:%d not reachable: %s; retrying in %.1f s", *self.address, failed, delay
                )
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        config = self.broker._config
        kwargs = self.broker._client.connection_kwargs
        async with asyncio.timeout(config.connect_timeout):
            tls = ssl.create_default_context() if config.url.startswith("rediss") else None
            reader, writer = await asyncio.open_connection(*self.address, ssl=tls)
            await authenticate(reader, writer, kwargs)
        return reader, writer

    def _on_reply(self, reply: Any) -> None:
        broker = self.broker
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            if text.startswith("MOVED "):
                p = broker._parts.of_slot(int(text.split()[1]))
                if p is not None:
                    broker._on_moved(self, p)
                    return
            raise RedisReplyError(text)
        if not isinstance(reply, list):
            return  # +OK to CLIENT SETNAME
        kind = reply[0]
        p = broker._parts.of_channel(reply[1])
        if p is None:
            return
        if kind == b"smessage":
            if p in self.partitions:
                broker._on_message(p, reply[2])
        elif kind == b"ssubscribe":
            if p in self.partitions:
                broker._on_subscribed(self, p)
        elif kind == b"sunsubscribe":
            if p in self.leaving:
                self.leaving.discard(p)
            elif p in self.partitions:
                broker._on_moved(self, p)  # Redis unsubscribes us when the slot leaves this node


def _seq(message: bytes) -> int:
    return int(message[message.index(b"-") + 1 : message.index(b" ")])


def _epoch(message: bytes) -> str:
    return message[: message.index(b"-")].decode()


class _Refused(Exception):
    """Every partition a publish was sent to refused it (error replies): nothing was published."""

    def __init__(self, reply: redis.exceptions.ResponseError) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _refused(replies: list[Any], reply: redis.exceptions.ResponseError) -> Exception:
    if any(r is not None for r in replies):
        return OutcomeUnknown("the event was published in some of its partitions only")
    return _Refused(reply)


def _unanswered(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
        return "redis did not answer in time"
    return "the connection to redis was lost before its answer"


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return value or ""


def _dedupe(messages: Iterable[bytes]) -> list[bytes]:
    return list({_seq(m): m for m in messages}.values())


# What a cluster answers while slots move or a shard fails over: no refusal of the hub's writes.
_TRANSIENT = (
    redis.exceptions.TryAgainError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
)


def _is_transient(exc: redis.exceptions.ResponseError) -> bool:
    return isinstance(exc, _TRANSIENT) or "non local key" in str(exc)
