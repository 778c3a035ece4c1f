"""POST /publish/stream: a request body relayed live, each piece published as it arrives, ended by a
`done` (or an `error`) event on the stream's topics. How a body is cut into events is
`hub/wire/streamed_body.py`'s; this module reads, rate-limits and publishes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiohttp import web

from hub.engine.fanout import Fanout
from hub.errors import (
    BadRequest,
    BrokerUnavailable,
    HttpError,
    OutcomeUnknown,
    ShuttingDown,
    StreamCutShort,
    TooManyRequests,
)
from hub.http.admission import Guard, Publisher
from hub.http.body import next_piece
from hub.http.state import CONFIG, FANOUT, GUARD
from hub.wire.event import Draft
from hub.wire.publish_request import OCTET_STREAM, PublishLimits, media_type, validate_event_name
from hub.wire.streamed_body import reader_for
from hub.wire.topics import validate_published_topic


async def publish_stream(request: web.Request) -> web.Response:
    """Relay a body as it arrives: each piece is published before the next is read, in order.

    The body ends with `done` on the stream's topics; a body that breaks off (or turns out bad halfway)
    with `error`, after what came before it was published: a stream cannot be taken back."""
    config = request.app[CONFIG]
    guard = request.app[GUARD]
    fanout = request.app[FANOUT]
    limits = config.limits
    topics = _topics(request.query.getall("topic", []), limits.max_topics)
    content_type = request.headers.get("Content-Type", "")
    event = request.query.get("event")
    if event is not None:
        binary = media_type(content_type) == OCTET_STREAM
        event = validate_event_name(event, "the query's ", binary=binary)
    reader = reader_for(
        content_type, topics, event, PublishLimits(limits.max_data_bytes, limits.max_batch, limits.max_topics)
    )
    publisher = guard.publisher(request)
    guard.check_publish(publisher, [Draft(topics, None)])  # refused before a byte of the body is read
    count = 0
    last_id: str | None = None

    async def send(drafts: Sequence[Draft]) -> None:
        nonlocal count, last_id
        # Batches the rate limiter can take at once, so that waiting always ends.
        step = min(limits.max_batch, guard.publish_rate.max_at_once)
        for start in range(0, len(drafts), step):
            batch = drafts[start : start + step]
            await _within_rate(guard, publisher, batch)
            ids = await fanout.publish(batch)
            count += len(ids)
            last_id = ids[-1]

    gap = config.server.body_timeout
    try:
        while chunk := await next_piece(request, gap):
            drafts = reader.feed(chunk)
            if drafts:
                await send(drafts)
        await send(reader.end())
        reader.end()  # raises what went bad in the last chunk, now that what came before it is out
    except ShuttingDown:
        # Cut by the drain: what came is published and cannot be taken back; the answer says how far
        # (a 503 only when that is nowhere: it promises that nothing was).
        await _end(fanout, topics, "error", {"error": "the hub shut down mid-stream", "events": count})
        if count:
            raise StreamCutShort(count, last_id) from None
        raise
    except HttpError as exc:
        await _end(fanout, topics, "error", {"error": exc.message, "events": count})
        raise _broken_off(exc, count, last_id) from None
    except asyncio.CancelledError:
        # The client went away mid-body (aiohttp cancels the handler): say so, then let the cancel go on.
        await _end(fanout, topics, "error", {"error": "the request body broke off", "events": count})
        raise
    except Exception:
        await _end(fanout, topics, "error", {"error": "the request body broke off", "events": count})
        raise
    end_id = await _end(fanout, topics, "done", {"events": count})
    return web.json_response({"events": count, "last_id": last_id, "done_id": end_id})


def _broken_off(exc: HttpError, count: int, last_id: str | None) -> HttpError:
    """A stream the broker failed part-way. A 503 promises that nothing was published, which holds only
    before the first piece went through and when the broker refused it."""
    if isinstance(exc, BrokerUnavailable) and count == 0:
        return exc
    if isinstance(exc, BrokerUnavailable | OutcomeUnknown):
        return OutcomeUnknown(
            f"the broker failed after {count} events of the stream",
            advice="those up to last_id were published, the next one may or may not be, none after it was",
            details={"events": count, "last_id": last_id},
        )
    return exc


def _topics(raw: list[str], max_topics: int) -> tuple[str, ...]:
    if not raw:
        raise BadRequest("missing_topic", "a streamed publish needs at least one ?topic=")
    if len(raw) > max_topics:
        raise BadRequest("too_many_topics", f"at most {max_topics} topics, got {len(raw)}")
    return tuple(dict.fromkeys(validate_published_topic(t) for t in raw))


async def _within_rate(guard: Guard, publisher: Publisher, drafts: Sequence[Draft]) -> None:
    # A stream over its publisher's rate is slowed down, not cut off: the body waits in the socket.
    while True:
        try:
            guard.check_publish(publisher, drafts)
            return
        except TooManyRequests as exc:
            await asyncio.sleep(exc.retry_after)


async def _end(fanout: Fanout, topics: tuple[str, ...], event: str, data: dict[str, object]) -> str | None:
    # Shielded: when the client's leaving cancelled the handler, this still has to reach subscribers.
    task = asyncio.ensure_future(fanout.publish([Draft(topics, data, event)]))
    with contextlib.suppress(Exception, asyncio.CancelledError):
        ids = await asyncio.shield(task)
        return ids[0]
    return None
