"""History paging: one topic's retained events read from the broker a page at a time, for a download.

Nothing here holds more than one page, and nothing here knows about HTTP: the route streams each page
as it comes. What it must guarantee is that every page belongs to the same history (one epoch).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from hub.brokers.base import Broker
from hub.errors import BadRequest, Conflict
from hub.wire.event import Event
from hub.wire.ids import RESET_EPOCH, Position

HISTORY_PAGE = 1000  # events read from the broker at a time for a history download


async def history_pages(
    broker: Broker[Any], topic: str, after_id: str | None, limit: int | None, page_size: int = HISTORY_PAGE
) -> AsyncGenerator[list[Event], None]:
    """`topic`'s retained events after `after_id`, oldest first, at most `limit`, page by page. Raises
    `Conflict` when `after_id` is from another epoch (or later than anything issued), and when the broker
    loses its data between two pages: the pages read so far then belong to a history that is gone.
    Raises `BadRequest` for an id this hub did not issue."""
    after: Position | None = None
    if after_id is not None:
        after = await broker.resolve_after(topic, after_id)
        if after is None:
            raise BadRequest("invalid_parameter", f"after {after_id!r} is not an event id of this hub")
    epoch = None
    left = limit
    while left is None or left > 0:
        want = page_size if left is None else min(page_size, left)
        page = await broker.history_page(topic, after, want)
        position = page.position
        if epoch is None:
            epoch = position.epoch
            if after is not None and (after.epoch != epoch or after.seq > position.seq):
                raise Conflict("history_lost", RESET_EPOCH)
        elif position.epoch != epoch:
            raise Conflict("history_lost", "the broker lost its history during the read")
        if page.events:
            yield page.events
            after = page.last
            if left is not None:
                left -= len(page.events)
        if len(page.events) < want:
            return
