"""Ids on a Redis Cluster: one position per partition a subscription reads. Pure.

Each partition has its own counter and epoch (see `hub.brokers.cluster.partitions`), and no clock orders
two of them. So the id a subscriber gets names, for every partition its selectors involve, the seq up to
which it has received everything: `<digest>_<p>.<seq>_<q>.<seq>...`, partitions ascending. The digest
stands for the epochs of the partitions listed (six base-32 characters), so the id stays short while a
resume still notices that any of them lost its data. A single-topic subscriber's id names one partition:
`k2d7qa_5.1042`.

The broker hands each event it receives to the engine with a `Stamp` beside it: what the hub has received
of every partition so far; a subscriber's id for that event is the stamp restricted to its partitions.
While a subscriber reads its replay, the live events held for it are placed after its snapshot by
`VectorCursor`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from hub.wire.event import Event
from hub.wire.ids import ContinuityLost, parse_seq
from hub.wire.topics import Selector

MAX_VECTOR_ID = 1200  # 64 partitions of 18 characters each, and the digest
DIGEST_LENGTH = 6


def digest(epochs: Iterable[tuple[int, str]]) -> str:
    text = ";".join(f"{p}:{epoch}" for p, epoch in epochs).encode()
    raw = hashlib.blake2b(text, digest_size=5).digest()
    return base64.b32encode(raw).decode().lower()[:DIGEST_LENGTH]


def format_vector(entries: Sequence[tuple[int, str, int]]) -> str:
    """The id for (partition, epoch, seq) entries, given in ascending partition order."""
    head = _digest_of(tuple((p, epoch) for p, epoch, _ in entries))
    return head + "".join(f"_{p}.{seq}" for p, _, seq in entries)


@functools.lru_cache(maxsize=4096)
def _digest_of(epochs: tuple[tuple[int, str], ...]) -> str:
    # Epochs change only when Redis loses data, and a process sees few sets of partitions: hash once.
    return digest(epochs)


@dataclass(frozen=True, slots=True)
class VectorId:
    digest: str
    seqs: dict[int, int]  # partition -> seq, ascending


def parse_vector(text: str, partitions: int) -> VectorId | None:
    """The positions an id names, or None if it is not a cluster id of a hub with this many partitions."""
    if len(text) > MAX_VECTOR_ID or not text.isascii():
        return None
    head, *entries = text.split("_")
    if len(head) != DIGEST_LENGTH or not head.isalnum() or head != head.lower() or not entries:
        return None
    seqs: dict[int, int] = {}
    last = -1
    for entry in entries:
        p, dot, seq_text = entry.partition(".")
        seq = parse_seq(seq_text)
        if not dot or not p.isdigit() or len(p) > 3 or seq is None:
            return None
        partition = int(p)
        if not last < partition < partitions:
            return None
        last = partition
        seqs[partition] = seq
    return VectorId(head, seqs)


class Stamp:
    """What the hub had received of each partition when an event arrived (the event's own partition
    included): the positions a subscriber's id for that event names. Made by the broker for every event
    it passes on, beside the event (which carries nothing of the cluster's).

    `cross`: the event's topics that live in other partitions (it reaches the hub once per partition,
    each copy with that partition's topics only)."""

    __slots__ = ("_ids", "cross", "epochs", "partition", "seqs")

    def __init__(
        self, partition: int, epochs: tuple[str, ...], seqs: tuple[int, ...], cross: tuple[str, ...] = ()
    ) -> None:
        self.partition = partition
        self.epochs = epochs
        self.seqs = seqs
        self.cross = cross
        self._ids: dict[tuple[int, ...], str] = {}

    def id_for(self, mask: tuple[int, ...]) -> str:
        """The id for subscribers reading `mask`: encoded once per event and mask, however many there are."""
        found = self._ids.get(mask)
        if found is None:
            epochs, seqs = self.epochs, self.seqs
            found = self._ids[mask] = format_vector([(p, epochs[p], seqs[p]) for p in mask])
        return found


class VectorCursor:
    """A subscriber's position after its snapshot: the floor its live events are placed above.

    `relabels`: the subscriber reads several partitions, so each event needs the id for its mask rather
    than the event's own (single-partition) id."""

    __slots__ = ("epochs", "mask", "partition_of", "relabels", "selectors", "seqs")

    def __init__(
        self,
        mask: tuple[int, ...],
        epochs: dict[int, str],
        seqs: dict[int, int],
        selectors: Sequence[Selector],
        partition_of: Callable[[str], int],
    ) -> None:
        self.mask = mask
        self.epochs = epochs
        self.seqs = seqs
        self.selectors = selectors
        self.partition_of = partition_of
        self.relabels = len(mask) > 1

    def __str__(self) -> str:
        return format_vector([(p, self.epochs[p], self.seqs[p]) for p in self.mask])

    def place(self, event: Event, stamp: Stamp | None = None) -> str | None:
        """The id to send `event` under, or None when the snapshot covered it already.

        Raises `ContinuityLost` when the event is from another epoch than the snapshot (or came with no
        stamp: not from a cluster)."""
        if stamp is None:
            raise ContinuityLost
        own = stamp.partition
        if stamp.epochs[own] != self.epochs.get(own):
            raise ContinuityLost
        if stamp.seqs[own] <= self.seqs[own] or self.duplicate(own, stamp.cross):
            return None
        entries = []
        for p in self.mask:
            epoch, seq = stamp.epochs[p], stamp.seqs[p]
            floor_epoch, floor = self.epochs[p], self.seqs[p]
            if epoch and epoch != floor_epoch:
                raise ContinuityLost
            # Received before the snapshot's sync arrived: the replay covered that partition up to the floor.
            entries.append((p, floor_epoch, max(seq, floor)))
        return format_vector(entries)

    def duplicate(self, partition: int, cross: tuple[str, ...]) -> bool:
        """An event published to topics of several partitions arrives once per partition (its copy from
        `partition` naming the others' topics, `cross`); a subscriber of more than one of them takes it
        from the lowest, wherever it reads."""
        if not cross:
            return False
        return any(
            self.partition_of(topic) < partition and any(s.matches(topic) for s in self.selectors)
            for topic in cross
        )
