"""What this process has received of each partition of a Redis Cluster, and the catch-up of a partition
whose subscription was away (a lost link, a moved slot).

A partition that comes back is read from its history after the last position this process received,
with a continuity check: a promoted replica that lacks events this process already delivered starts a
new epoch, and the streams resync with a `reset`. Live messages that arrive meanwhile are held and
delivered after the history. Never talks to Redis itself: the broker's read does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from hub.brokers.base import BrokerSink
from hub.brokers.cluster.partitions import Partitions
from hub.brokers.script_args import Received
from hub.errors import BrokerUnavailable
from hub.wire.cluster_ids import Stamp, digest
from hub.wire.event import EnvelopeError, Event, open_envelope
from hub.wire.ids import RESET_EPOCH, Position, newest, parse_id
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

# Reads partition p's history after a position: (the partition's position, a reset or None, envelopes).
CatchUpRead = Callable[
    [int, list[Selector], Position, "Received | None"], Awaitable[tuple[Position, str | None, list[bytes]]]
]


class PartitionReceiver:
    def __init__(
        self,
        parts: Partitions,
        node: str,
        wanted: dict[int, dict[Selector, int]],
        read: CatchUpRead,
        bounce: Callable[[int], None],
    ) -> None:
        self._parts = parts
        self._node = node
        self._wanted = wanted  # the broker's: partition -> the selectors subscribed in it, with counts
        self._read = read
        self._bounce = bounce  # drops partition p's link: it subscribes again and catches up once more
        self.sink: BrokerSink | None = None
        n = parts.count
        # What this process has received of each partition: the stamp of every event it passes on.
        self.epochs: list[str] = [""] * n
        self.seqs: list[int] = [0] * n
        self.published: list[Position | None] = [None] * n  # the newest id each partition's publishes got
        self._epoch_tuple: tuple[str, ...] = ("",) * n
        self._own_digest: list[str] = [""] * n
        self.last: list[Received | None] = [None] * n
        self.live: set[int] = set()  # subscribed and caught up
        self.known: set[int] = set()  # received continuously since first subscribed: catch up on return
        self._held: dict[int, list[bytes]] = {}  # live messages of a partition that is catching up
        self.waiters: list[tuple[set[int], asyncio.Future[None]]] = []
        self.syncs: dict[bytes, tuple[int, asyncio.Future[Position]]] = {}
        self._deferred: dict[int, list[tuple[asyncio.Future[Position], Position]]] = {}
        self.catch_ups: dict[int, asyncio.Task[None]] = {}
        self._tick_round = 0
        self._tick_pending: set[int] = set()

    def evidence(self, p: int) -> tuple[str, int]:
        """The newest position this hub had of partition p, received or answered to its own publishes:
        the only evidence on which the scripts start a new epoch (the partition holds less than that)."""
        epoch, seq = self.epochs[p], self.seqs[p]
        published = self.published[p]
        if published is not None and (not epoch or (published.epoch == epoch and published.seq > seq)):
            return published.epoch, published.seq
        return epoch, seq

    def note_published(self, p: int, position: Position) -> None:
        self.published[p] = newest(self.published[p], position)

    def begin_tick(self, partitions: list[int]) -> bytes:
        """The payload of a new tick round through these partitions."""
        self._tick_round += 1
        self._tick_pending = set(partitions)
        return f"!t{self._node}.{self._tick_round}".encode()

    def close(self) -> None:
        for _, future in self.waiters:
            future.cancel()
        self.waiters.clear()

    def lose(self, p: int) -> None:
        """Partition p's subscription is gone (a lost link, a moved slot): it catches up on its return."""
        self.live.discard(p)
        self._held.pop(p, None)
        task = self.catch_ups.pop(p, None)
        if task is not None:
            task.cancel()
        for future, _ in self._deferred.pop(p, []):
            if not future.done():
                future.set_exception(BrokerUnavailable("the redis cluster subscription was lost"))
                future.add_done_callback(lambda f: f.exception())
        for token, (q, future) in list(self.syncs.items()):
            if q == p and not future.done():
                future.set_exception(BrokerUnavailable("the redis cluster subscription was lost"))
                future.add_done_callback(lambda f: f.exception())
                del self.syncs[token]

    # what the links read

    def on_subscribed(self, p: int) -> None:
        # A partition this process never received anything from has nothing to resume: no stream has
        # read it either (a stream's read sets the epoch). Only the home partition's tick comes to that;
        # catching up there would find no epoch to match and reset every stream of the hub.
        if p in self.known and self.epochs[p]:
            self._held[p] = []
            self.catch_ups[p] = asyncio.create_task(self._catch_up(p), name=f"hub-cluster-catch-up-{p}")
        else:
            self.known.add(p)
            self._go_live(p)

    def on_message(self, p: int, message: bytes) -> None:
        if message[:1] == b"!":
            self._on_control(p, message)
            return
        held = self._held.get(p)
        if held is not None:
            held.append(message)
            return
        self._deliver(p, message)

    def _deliver(self, p: int, message: bytes) -> None:
        seq = envelope_seq(message)
        epoch = envelope_epoch(message)
        if epoch == self.epochs[p] and seq <= self.seqs[p]:
            return  # delivered already (a catch-up overlaps the live stream it ran beside)
        self.advance(p, epoch, seq)
        opened = self.open(p, message, f"{self._own_digest[p]}_{p}.{self.seqs[p]}")
        if opened is None:
            return
        event, cross = opened
        self.last[p] = (event.topics[0], seq, message)
        if self.sink is not None:
            self.sink.on_event(event, Stamp(p, self._epoch_tuple, tuple(self.seqs), cross))

    def advance(self, p: int, epoch: str, seq: int) -> None:
        """Move partition p's received position. A partition that changes epoch under a live
        subscription may have lost events this process delivered: its streams are told to resync."""
        if epoch != self.epochs[p]:
            if self.epochs[p]:
                log.warning("partition %d changed epoch under a live subscription: resyncing streams", p)
                if self.sink is not None:
                    self.sink.on_lost(RESET_EPOCH)
            self.epochs[p] = epoch
            self._epoch_tuple = tuple(self.epochs)
            self._own_digest[p] = digest([(p, epoch)])
            self.last[p] = None
            self.seqs[p] = seq
        elif seq > self.seqs[p]:
            self.seqs[p] = seq

    def open(self, p: int, message: bytes, id: str | None = None) -> tuple[Event, tuple[str, ...]] | None:
        """The event an envelope of partition p carries, under `id` (or the envelope's own), with the
        partition's topics only; and its topics in other partitions. None for a malformed envelope."""
        try:
            event = open_envelope(message, id)
        except EnvelopeError as exc:
            log.warning("dropped a malformed message from redis: %s", exc)
            return None
        if len(event.topics) > 1:
            of_topic = self._parts.of_topic
            own = tuple(t for t in event.topics if of_topic(t) == p)
            if len(own) < len(event.topics):
                return event.relabeled(event.id, own), tuple(t for t in event.topics if of_topic(t) != p)
        return event, ()

    def _on_control(self, p: int, message: bytes) -> None:
        if message.startswith(b"!t" + self._node.encode() + b"."):
            if int(message.rpartition(b".")[2]) == self._tick_round:
                self._tick_pending.discard(p)
                if not self._tick_pending and self.sink is not None:
                    self.sink.on_tick()
            return
        token, _, position_text = message.partition(b" ")
        entry = self.syncs.get(token)
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
        self.advance(p, position.epoch, position.seq)
        if not future.done():
            future.set_result(position)

    async def _catch_up(self, p: int) -> None:
        """Deliver what partition p published while this process was not subscribed, then what arrived
        meanwhile, then go live."""
        since = Position(self.epochs[p], self.seqs[p])
        selectors = list(self._wanted.get(p, {}))
        try:
            position, reset, messages = await self._read(p, selectors, since, self.last[p])
        except BrokerUnavailable as exc:
            log.warning("partition %d catch-up failed: %s; retrying", p, exc)
            self.catch_ups.pop(p, None)
            self._bounce(p)
            return
        held = self._held.pop(p, [])
        self.catch_ups.pop(p, None)
        if reset is not None:
            log.warning("partition %d lost events (%s): closing streams so they resync", p, reset)
            if self.sink is not None:
                self.sink.on_lost(reset)
            self.epochs[p] = ""  # so the new epoch is taken without a second alarm
            self.advance(p, position.epoch, position.seq)
            messages = []
        caught = 0
        for message in sorted(_dedupe(messages), key=envelope_seq):
            if envelope_seq(message) > self.seqs[p]:
                self._deliver(p, message)
                caught += 1
        self.advance(p, position.epoch, position.seq)
        for message in held:
            self._deliver(p, message)
        log.info("partition %d live: caught up %d events to %s, then %d live", p, caught, position, len(held))
        self._go_live(p)

    def _go_live(self, p: int) -> None:
        self.live.add(p)
        for future, position in self._deferred.pop(p, []):
            self._settle(p, future, position)
        still = []
        for pending, waiter in self.waiters:
            pending.discard(p)
            if not pending:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((pending, waiter))
        self.waiters = still


def envelope_seq(message: bytes) -> int:
    return int(message[message.index(b"-") + 1 : message.index(b" ")])


def envelope_epoch(message: bytes) -> str:
    return message[: message.index(b"-")].decode()


def _dedupe(messages: Iterable[bytes]) -> list[bytes]:
    return list({envelope_seq(m): m for m in messages}.values())
