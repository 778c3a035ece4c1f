"""Reads of a Redis Cluster's partitions: a subscriber's snapshot (each partition's retained state or
history after its position, and a sync token through the partition's channel), history pages, and the
positions a cluster id names."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from hub.brokers import redis_scripts
from hub.brokers.base import stored_position
from hub.brokers.cluster.catch_up import Last, PartitionReceiver, envelope_epoch, envelope_seq
from hub.brokers.cluster.publishing import REDIS_DOWN
from hub.brokers.redis_keys import RedisKeys
from hub.config import HistoryConfig, RedisConfig
from hub.errors import BrokerUnavailable
from hub.wire.cluster_ids import VectorCursor, digest, format_vector, parse_vector
from hub.wire.event import Event, new_epoch
from hub.wire.ids import (
    RESET_EPOCH,
    RESET_PARTIAL,
    RESET_UNKNOWN,
    HistoryPage,
    Position,
    Since,
    SinceKind,
    Snapshot,
)
from hub.wire.partitions import Partitions
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

SNAPSHOT_RETRY_MIN = 0.1  # seconds between snapshot reads while a shard fails over...
SNAPSHOT_RETRY_MAX = 1.0  # ...doubling up to this
# KEYS: the partition's sequence hash, a topic's history. ARGV: exclusive start, count.
HISTORY_PAGE = """
local position = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
return {position[1], position[2], redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])}
"""


class PartitionReads:
    def __init__(
        self,
        client: RedisCluster,
        commands: asyncio.Semaphore,
        config: RedisConfig,
        history: HistoryConfig,
        parts: Partitions,
        node: str,
        receiver: PartitionReceiver,
        wanted: dict[int, dict[Selector, int]],
    ) -> None:
        self._client = client
        self._commands = commands  # the broker's bound on concurrent commands
        self._config = config
        self._history = history
        self._parts = parts
        self._keys = [RedisKeys(prefix) for prefix in parts.prefixes]
        self.node = node
        self._receiver = receiver
        self._wanted = wanted
        self.snapshot_script: AsyncScript = client.register_script(redis_scripts.SNAPSHOT)
        self._history_script = client.register_script(HISTORY_PAGE)
        self.closed = False

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
            reads.append(self.read_partition(p, chosen, mode, position, None, sync=True))
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
            event = self._receiver.open(p, message)
            if event is None:
                continue
            seq = envelope_seq(message)
            found.setdefault(seq, event)
        return sorted(found.items())

    async def _current_epochs(self, partitions: Iterable[int]) -> dict[int, str]:
        listed = list(partitions)
        try:
            async with self._commands:
                found = await asyncio.gather(
                    *(self._client.hget(self._keys[p].sequence, "epoch") for p in listed)
                )
        except REDIS_DOWN as exc:
            log.debug("redis cluster call failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        return {p: text_of(e) for p, e in zip(listed, found, strict=True)}

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
                    return await self.snapshot_script(keys=keys, args=args)
            except REDIS_DOWN:
                if self.closed or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, SNAPSHOT_RETRY_MAX)

    async def read_partition(
        self,
        p: int,
        selectors: Sequence[Selector],
        mode: str,
        after: Position | None,
        check: Last | None,
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
            *self._receiver.evidence(p),
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
            self._receiver.syncs[token] = (p, synced)
        try:
            reply = await self._run_snapshot(keys, args)
            epoch, seq, reset, *messages = reply
            position = Position(epoch.decode(), int(seq))
            if sync:
                async with asyncio.timeout(self._config.connect_timeout):
                    await synced
        except TimeoutError:  # first: asyncio's timeout is an OSError, which REDIS_DOWN holds
            raise BrokerUnavailable("the redis cluster subscription did not keep up") from None
        except REDIS_DOWN as exc:
            log.debug("redis cluster call failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        finally:
            self._receiver.syncs.pop(token, None)
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
        except REDIS_DOWN as exc:
            log.debug("redis cluster call failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        position = stored_position(epoch, seq)
        events = []
        last = None
        for entry_id, fields in entries:
            message = dict(zip(fields[::2], fields[1::2], strict=True))[b"m"]
            event = self._receiver.open(p, message, stamped=False)
            if event is not None:
                last = Position(position.epoch, int(entry_id.split(b"-")[0]))
                event.id = format_vector([(p, envelope_epoch(message), last.seq)])
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


def text_of(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return value or ""
