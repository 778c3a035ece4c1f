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
from hub.brokers.cluster.catch_up import PartitionReceiver, envelope_epoch, envelope_seq
from hub.brokers.cluster.partitions import Partitions
from hub.brokers.cluster.publishing import REDIS_DOWN
from hub.brokers.script_args import HistoryBounds, Received, ScriptCall, history_page_call, snapshot_call
from hub.config import HistoryConfig, RedisConfig
from hub.errors import BrokerUnavailable
from hub.wire.cluster_ids import VectorCursor, VectorId, digest, format_vector, parse_vector
from hub.wire.event import Event
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
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

SNAPSHOT_RETRY_MIN = 0.1  # seconds between snapshot reads while a shard fails over...
SNAPSHOT_RETRY_MAX = 1.0  # ...doubling up to this
# A partition's read: (its position, the reset its script answered or None, envelopes).
PartitionRead = tuple[Position, str | None, list[bytes]]


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
        self._bounds = HistoryBounds.of(history)
        self._parts = parts
        self._keys = parts.keys
        self.node = node
        self._receiver = receiver
        self._wanted = wanted
        self.snapshot_script: AsyncScript = client.register_script(redis_scripts.SNAPSHOT)
        self._history_script = client.register_script(redis_scripts.HISTORY_PAGE)
        self.closed = False

    async def snapshot(self, selectors: Sequence[Selector], since: Since[VectorId]) -> Snapshot:
        mask = self._parts.of_selectors(selectors)
        reset, after = await self._resume_from(since, mask)
        modes = {p: _mode(since.kind, reset, after, p) for p in mask}
        reads = [
            self.read_partition(
                p, [s for s in selectors if p in self._parts.of_selector(s)], *modes[p], None, sync=True
            )
            for p in mask
        ]
        results = await asyncio.gather(*reads, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        replies = [r for r in results if not isinstance(r, BaseException)]
        return self._assemble(selectors, mask, modes, reset, replies)

    async def _resume_from(
        self, since: Since[VectorId], mask: tuple[int, ...]
    ) -> tuple[str | None, dict[int, Position]]:
        """The reset a subscriber resuming from `since` gets before anything is read (None: none yet),
        and the position it resumes from in each partition it reads."""
        if since.kind is SinceKind.UNKNOWN:
            return RESET_UNKNOWN, {}
        vector = since.position
        if vector is None:
            return None, {}
        known = await self._current_epochs(vector.seqs)
        if digest(sorted(known.items())) != vector.digest:
            return RESET_EPOCH, {}
        if not set(mask) <= vector.seqs.keys():
            # An id of another subscription (or a publish id): it cannot say what this one missed in the
            # partitions it does not name.
            return RESET_PARTIAL, {}
        return None, {p: Position(known[p], seq) for p, seq in vector.seqs.items() if p in mask}

    def _assemble(
        self,
        selectors: Sequence[Selector],
        mask: tuple[int, ...],
        modes: dict[int, tuple[SinceKind, Position | None]],
        reset: str | None,
        replies: list[PartitionRead],
    ) -> Snapshot:
        """The partitions' reads as one snapshot: each event once, under the id that names, for every
        partition read, what was sent before it."""
        cursor = VectorCursor(mask, {}, {}, selectors, self._parts.of_topic)
        running: dict[int, int] = {}  # partition -> the seq sent up to, so far
        for p, (position, reset_p, _) in zip(mask, replies, strict=True):
            cursor.epochs[p] = position.epoch
            cursor.seqs[p] = position.seq
            reset = reset or reset_p
            mode, after = modes[p]
            if reset_p is None and mode is SinceKind.EARLIEST:
                running[p] = 0
            elif reset_p is None and after is not None:
                running[p] = after.seq
            else:
                running[p] = position.seq
        events: list[Event] = []
        # Partition by partition: each event's id names, for the others, what was sent before it.
        for p, (_, _, messages) in zip(mask, replies, strict=True):
            for seq, event, cross in self._copies(p, messages):
                if cursor.duplicate(p, cross):
                    continue
                running[p] = max(running[p], seq)
                events.append(
                    event.relabeled(format_vector([(q, cursor.epochs[q], running[q]) for q in mask]))
                )
        return Snapshot(cursor, events, reset)

    def _copies(self, p: int, messages: Iterable[bytes]) -> list[tuple[int, Event, tuple[str, ...]]]:
        """Envelopes of one partition as its events (with their topics in other partitions), in seq
        order, each once (an event of two topics is in both histories)."""
        found: dict[int, tuple[Event, tuple[str, ...]]] = {}
        for message in messages:
            opened = self._receiver.open(p, message)
            if opened is not None:
                found.setdefault(envelope_seq(message), opened)
        return [(seq, event, cross) for seq, (event, cross) in sorted(found.items())]

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

    async def _run_snapshot(self, call: ScriptCall) -> Any:
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
                    return await self.snapshot_script(keys=call.keys, args=call.args)
            except REDIS_DOWN:
                if self.closed or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, SNAPSHOT_RETRY_MAX)

    async def read_partition(
        self,
        p: int,
        selectors: Sequence[Selector],
        mode: SinceKind,
        after: Position | None,
        received: Received | None,
        *,
        sync: bool,
    ) -> PartitionRead:
        """Run the snapshot script on partition p; with `sync`, return once this process's link has read
        every message published before the read (the script publishes a token after it)."""
        token = f"!s{self.node}.{secrets.token_hex(6)}".encode()
        keys = self._keys[p]
        call = snapshot_call(
            keys,
            self._bounds,
            selectors,
            mode=mode,
            after=after,
            token=token,
            channel=keys.shard_channel,
            evidence=self._receiver.evidence(p),
            received=received,
            sharded=True,
        )
        synced: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        if sync:
            if p not in self._wanted:  # given up already (its stream closed): no token would reach us
                raise BrokerUnavailable("the redis cluster subscription was lost")
            self._receiver.syncs[token] = (p, synced)
        try:
            reply = await self._run_snapshot(call)
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
        call = history_page_call(self._keys[p], topic, after, limit)
        try:
            async with self._commands:
                epoch, seq, entries = await self._history_script(keys=call.keys, args=call.args)
        except REDIS_DOWN as exc:
            log.debug("redis cluster call failed: %s", exc)
            raise BrokerUnavailable("the broker is unavailable") from None
        position = stored_position(epoch, seq)
        events = []
        last = None
        for entry_id, fields in entries:
            message = dict(zip(fields[::2], fields[1::2], strict=True))[b"m"]
            entry_seq = int(entry_id.split(b"-")[0])
            opened = self._receiver.open(p, message, format_vector([(p, envelope_epoch(message), entry_seq)]))
            if opened is not None:
                last = Position(position.epoch, entry_seq)
                events.append(opened[0])
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


def _mode(
    kind: SinceKind, reset: str | None, after: dict[int, Position], p: int
) -> tuple[SinceKind, Position | None]:
    """How partition p is read for a subscriber: from its position in it, everything retained, or (new,
    or told to reset) its retained state."""
    if reset is not None:
        return SinceKind.NEW, None
    if kind is SinceKind.EARLIEST:
        return SinceKind.EARLIEST, None
    if p in after:
        return SinceKind.AFTER, after[p]
    return SinceKind.NEW, None  # no Last-Event-ID: retained state, then live
