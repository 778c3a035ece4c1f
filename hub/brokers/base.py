"""The broker interface: the one seam between the fan-out engine and what carries events.

A broker assigns ids, accepts events (the publish returns only once they are accepted), and calls its
sink with every event of every selector some local subscriber holds, each event once, in id order. It
knows nothing of HTTP, connections or encodings.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from hub.brokers.directory import Directory, LocalDirectory
from hub.wire.event import Draft, Event
from hub.wire.idempotency import Idempotency
from hub.wire.ids import HistoryPage, Position, Since, Snapshot, parse_id, parse_seq, parse_since
from hub.wire.topics import Selector

if TYPE_CHECKING:
    from hub.wire.cluster_ids import Stamp

# A broker's own resume position: `Position` (one counter), or `VectorId` on a cluster.
P = TypeVar("P")


class BrokerSink(Protocol):
    def on_event(self, event: Event, stamp: Stamp | None = None) -> None:
        """An event for the local subscribers; on a cluster, with what the hub had received of each
        partition when it came (`stamp`), which their ids are made of."""

    def on_tick(self) -> None: ...

    def on_lost(self, reason: str) -> None:
        """The broker cannot prove that every event reached the sink (it lost its data)."""


class Broker(ABC, Generic[P]):
    name: str
    reconnects = 0  # times a live connection to the broker was lost and sought again
    # Its publish never waits, so it may run outside a task (`hub.http.eager`): no timeouts, no I/O.
    publishes_at_once = False

    @abstractmethod
    def parse_position(self, text: str) -> P | None:
        """The position an id of this broker's names, or None if it issued no such id."""

    def parse_since(self, last_event_id: str | None) -> Since[P]:
        """Where a subscriber resumes: its Last-Event-ID, read once into this broker's own position."""
        return parse_since(last_event_id, self.parse_position)

    @abstractmethod
    async def start(self, sink: BrokerSink) -> None:
        """Connect and start delivering to `sink`."""

    def hold_reading(self, held: bool) -> None:
        """Stop reading events from the broker's connections for a while (`held`), or read on. What
        arrives meanwhile waits in the socket, in order, and is delivered once reading goes on."""
        return  # the memory broker reads no connection: nothing to hold

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, drafts: Sequence[Draft], idempotency: Idempotency | None = None) -> list[str]:
        """Accept all drafts or none, atomically; return their ids. Raises `BrokerUnavailable` only when
        nothing was published (nothing reached the broker, or it refused it), and `OutcomeUnknown` when
        something may have been (sent, and no answer came): the same call under the same key settles it.

        A key seen within the idempotency window answers the first call's ids and publishes nothing, or
        raises `Unprocessable` when it came with another request."""

    @abstractmethod
    async def snapshot(self, selectors: Sequence[Selector], since: Since[P]) -> Snapshot:
        """What a subscriber that is already subscribed needs before live events (see `Snapshot`)."""

    @abstractmethod
    async def history_page(self, topic: str, after: Position | None, limit: int) -> HistoryPage:
        """At most `limit` of `topic`'s retained events with a seq above `after.seq` (all retained when
        None), oldest first. `after`'s epoch is the caller's to compare with the page's. Raises
        `BrokerUnavailable`."""

    async def resolve_after(self, topic: str, text: str) -> Position | None:
        """The place in `topic`'s history that an id a client holds names, or None if it is no id of
        this broker's. A position from a lost history comes back in an epoch no page will have."""
        return parse_id(text)

    @abstractmethod
    def subscribe(self, selector: Selector) -> asyncio.Future[None]:
        """Start receiving `selector`'s events. The future resolves once no later event can be missed.

        Called once per selector while it has local subscribers (the engine counts them)."""

    @abstractmethod
    def unsubscribe(self, selector: Selector) -> None: ...

    @abstractmethod
    async def tick(self) -> None:
        """Send a heartbeat tick through the broker; it comes back as `sink.on_tick()`."""

    def directory(self, interval: float) -> Directory:
        """Who is subscribed across the processes this broker joins (`interval`: seconds between a
        process's writes of its own). One process alone: its own roster."""
        return LocalDirectory()

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Events can be published and the subscription is live."""


def stored_position(epoch: bytes | None, seq: bytes | None) -> Position:
    """The position a sequence hash holds. No epoch yet, or a counter no script of ours wrote (the
    scripts repair it at their next run): no position a reader holds names a place in it."""
    number = parse_seq(seq.decode()) if seq else 0
    if not epoch or number is None:
        return Position("", 0)
    return Position(epoch.decode(), number)
