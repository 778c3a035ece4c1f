"""One subscriber connection's outbox: frames waiting for its socket, bounded in bytes.

The fan-out appends the same pre-encoded frame to every matching outbox, and writes what an outbox holds
with a single `transport.write` in its next flush round (paced: `hub/engine/pacing.py`). Nothing here
awaits: a client that stops reading only grows its own transport buffer, and past `max_buffer` it is cut
off (it resumes from history).
Once live, the outbox owns its transport: closing the outbox ends the stream on the wire.
"""

from __future__ import annotations

import asyncio
from enum import Enum

from hub.wire import chunked
from hub.wire.cluster_ids import Stamp, VectorCursor
from hub.wire.event import Event
from hub.wire.formats import Format
from hub.wire.presence import Member
from hub.wire.topics import Selector


class CloseReason(Enum):
    CLIENT_GONE = "client_gone"
    SLOW_CONSUMER = "slow_consumer"
    SHUTDOWN = "shutdown"
    RESYNC = "resync"  # the broker lost events: reconnecting gets the client a `reset`
    AUTH_EXPIRED = "auth_expired"  # its token's exp came: the client reconnects with a fresh one
    DISCONNECTED = "disconnected"  # the control API closed it


class Outbox:
    __slots__ = (
        "chunked",
        "close_reason",
        "cursor",
        "format",
        "heartbeat_event",
        "held",
        "held_bytes",
        "max_buffer",
        "member",
        "pending",
        "selectors",
        "transport",
    )

    def __init__(
        self,
        selectors: tuple[Selector, ...],
        *,
        heartbeat_event: bool,
        max_buffer: int,
        chunked: bool = True,
        format: Format = Format.SSE,
    ) -> None:
        self.selectors = selectors
        self.format = format
        # HTTP/1.1 streams are chunked and get pre-framed bytes; HTTP/1.0 ones (an nginx upstream left
        # at its default) get the bare SSE.
        self.chunked = chunked
        self.heartbeat_event = heartbeat_event
        self.max_buffer = max_buffer
        self.pending: list[bytes] = []
        # Live events that arrive while the subscriber's snapshot is read (each with its broker's stamp, on a
        # cluster); merged in by id after it.
        self.held: list[tuple[Event, Stamp | None]] | None = []
        self.held_bytes = 0  # their `Event.size`: past max_buffer, it is a slow consumer
        self.transport: asyncio.Transport | None = None  # None until the stream is live
        self.close_reason: CloseReason | None = None
        # On a cluster, for a subscriber of several partitions: its snapshot's cursor, which names the
        # id each live event gets for it (None: every event's own id will do).
        self.cursor: VectorCursor | None = None
        self.member: Member | None = None  # who holds it, as presence shows it

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def flush(self) -> CloseReason | None:
        """Write what is pending. Returns why the outbox closed, if writing closed it."""
        transport = self.transport
        if transport is None or self.close_reason is not None:
            return None
        pending = self.pending
        if not pending:
            return None
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if transport.is_closing():
            return self.close(CloseReason.CLIENT_GONE)
        transport.write(data)
        if transport.get_write_buffer_size() > self.max_buffer:
            transport.abort()
            return self.close(CloseReason.SLOW_CONSUMER)
        return None

    def close(self, reason: CloseReason) -> CloseReason | None:
        if self.close_reason is not None:
            return None
        self.close_reason = reason
        self.pending.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # A clean end, so that a client can tell it from a broken connection. The connection is
            # closed rather than kept alive: it was handed over to the hub (hub/http/detach.py). Not for
            # a byte stream, which never ends of itself: a clean end would pass for a complete
            # download, where the client should resume from its offset.
            if self.chunked and self.format is not Format.BYTES:
                transport.write(chunked.LAST_CHUNK)
            transport.close()
        return reason
