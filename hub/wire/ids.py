"""Event ids, resume positions and snapshots: the vocabulary of lossless delivery. Pure.

An id is `<epoch>-<seq>`. `seq` comes from one counter per broker (per Redis), so ids are ordered across
topics and a single Last-Event-ID resumes a multi-topic subscription; ordering never depends on a clock.
`epoch` changes when the broker loses its data, so an id from before the loss is recognised and the
client is sent a `reset` instead of a silent gap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from hub.wire.event import EPOCH_ALPHABET, Event

if TYPE_CHECKING:
    from hub.wire.cluster_ids import Stamp

_EPOCH = re.compile(f"[{EPOCH_ALPHABET}]+")

MAX_LAST_EVENT_ID = 1200  # a cluster id names a position per partition (see `hub.wire.cluster_ids`)
MAX_EPOCH_LENGTH = 16  # `hub.wire.event.new_epoch` makes 6 characters; room for what an older hub wrote
# The largest seq an id may name: Lua holds numbers as doubles, exact up to 2**53, and no counter gets
# there (a million events a second for 285 years). A client's number past it names no position of ours.
MAX_SEQ = 2**53 - 1
_MAX_SEQ_DIGITS = len(str(MAX_SEQ))


class ContinuityLost(Exception):
    """An event is from another epoch than the position it is compared with: the broker lost data."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    epoch: str
    seq: int

    # One counter orders every event, so a live event's own id is the id every subscriber gets.
    relabels = False

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"

    def place(self, event: Event, stamp: Stamp | None = None) -> str | None:
        """The id to send `event` under after a snapshot at this position, or None when the snapshot
        covered it. Raises `ContinuityLost` for an event of another epoch. (One counter: no stamp.)"""
        position = parse_id(event.id)
        if position is None or position.epoch != self.epoch:
            raise ContinuityLost
        return event.id if position.seq > self.seq else None


def newest(current: Position | None, position: Position) -> Position:
    """The later of two positions a hub was told of: within an epoch, the greater; a new epoch replaces
    the old (Redis lost data since)."""
    if current is None or position.epoch != current.epoch or position.seq > current.seq:
        return position
    return current


def parse_id(text: str) -> Position | None:
    """The position an id names, or None if it is not in the shape of an id this hub issues: an epoch of
    its alphabet, short, and a seq written as the hub writes it (no sign, no leading zero) within
    `MAX_SEQ`. Whether that position exists is for the broker to judge; the shape alone keeps what a
    client sends bounded before it reaches a script."""
    epoch, sep, seq = text.rpartition("-")
    if not sep or len(epoch) > MAX_EPOCH_LENGTH or not _EPOCH.fullmatch(epoch):
        return None
    number = parse_seq(seq)
    return None if number is None else Position(epoch, number)


def parse_seq(text: str) -> int | None:
    """A seq as ids write it: decimal ASCII digits, no leading zero, at most `MAX_SEQ`."""
    if (
        not text
        or len(text) > _MAX_SEQ_DIGITS
        or not text.isascii()
        or not text.isdigit()
        or (text[0] == "0" and len(text) > 1)
    ):
        return None
    number = int(text)
    return number if number <= MAX_SEQ else None


def seq_of(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


class SinceKind(Enum):
    NEW = "new"  # no Last-Event-ID: retained state, then live
    EARLIEST = "earliest"  # everything still retained
    AFTER = "after"  # everything after a position
    UNKNOWN = "unknown"  # an id this broker did not issue: the client must resync


P = TypeVar("P")


# Not slots: a frozen, slotted generic dataclass cannot be made as `Since[Position](...)` (Python 3.11).
@dataclass(frozen=True)
class Since(Generic[P]):
    """Where a subscriber resumes, as its broker reads the Last-Event-ID: `position` is that broker's
    own kind (`Position` for one counter, `hub.wire.cluster_ids.VectorId` on a cluster), set for AFTER."""

    kind: SinceKind
    position: P | None = None


def parse_since(last_event_id: str | None, parse: Callable[[str], P | None]) -> Since[P]:
    """A Last-Event-ID (or `?lastEventId=`) read once, with the broker's own id parser (see
    `Broker.parse_since`): nothing downstream looks at the text again."""
    if last_event_id is None or last_event_id == "":
        return Since(SinceKind.NEW)
    if last_event_id == "earliest":
        return Since(SinceKind.EARLIEST)
    position = parse(last_event_id)
    if position is None:
        return Since(SinceKind.UNKNOWN)
    return Since(SinceKind.AFTER, position)


class Cursor(Protocol):
    """Where a subscriber's snapshot ends: `Position`, or on a cluster `hub.wire.cluster_ids.VectorCursor`."""

    relabels: bool

    def place(self, event: Event, stamp: Stamp | None = None) -> str | None:
        """The id to send `event` under (its broker's `stamp` beside it), or None: the snapshot had it."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a subscriber gets before live events, read atomically with the broker's position.

    Live events up to `position` are covered by `events` (or predate the subscription); live events
    after it follow. With `reset` set, `events` is the retained state to resync from."""

    position: Cursor
    events: list[Event] = field(default_factory=list)
    reset: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Some of one topic's retained events, oldest first, read atomically with the broker's position:
    its epoch says whether a position the reader holds still names a place in this history."""

    position: Position
    events: list[Event]
    last: Position | None = None  # the last event's position, where the next page starts; None: empty

    @classmethod
    def of(cls, position: Position, events: list[Event]) -> HistoryPage:
        """A page of events whose ids are plain positions (one counter per broker)."""
        return cls(position, events, parse_id(events[-1].id) if events else None)


def merge(batches: list[list[Event]]) -> list[Event]:
    """Events of several topics in id order, each once (an event of two topics is in both)."""
    seen: dict[str, Event] = {}
    for batch in batches:
        for event in batch:
            seen.setdefault(event.id, event)
    return sorted(seen.values(), key=lambda e: seq_of(e.id))


RESET_EPOCH = "the broker lost its history since that id was issued"
RESET_TRIMMED = "events after that id are no longer retained"
RESET_UNKNOWN = "that id was not issued by this hub"
RESET_TOO_MUCH = "more events were missed than one replay carries"
RESET_PARTIAL = "that id names no position for some of these topics"
