"""An event as a stream's bytes: the frame each format and framing gets, heartbeats, and the block a
subscriber reads before going live. Pure: values in, bytes out.

Chunked framing is applied here, once per event and kind of stream, so the engine can append the same
bytes to every outbox that wants them. This module must never know about outboxes or connections: a
stream is described by its format, its framing and its selectors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import orjson

from hub.wire import chunked, formats, sse
from hub.wire.event import Event
from hub.wire.formats import Format
from hub.wire.ids import Snapshot
from hub.wire.topics import Selector

HEARTBEAT_COMMENT = sse.encode_comment()
HEARTBEAT_EVENT = sse.encode_event("", event="heartbeat")


def wire(body: bytes, is_chunked: bool) -> bytes:
    """`body` as written to a transport. Empty stays empty: an empty chunk would end the stream."""
    if not body:
        return b""
    return chunked.frame(body) if is_chunked else body


# format -> heartbeat kind -> chunked? -> bytes, so the tick picks without encoding anything. A text
# stream gets none: anything written there would become part of the text.
_HEARTBEAT_BODIES = {
    (Format.SSE, False): HEARTBEAT_COMMENT,
    (Format.SSE, True): HEARTBEAT_EVENT,
    (Format.NDJSON, False): formats.NDJSON_HEARTBEAT,
    (Format.NDJSON, True): formats.NDJSON_HEARTBEAT_EVENT,
    (Format.TEXT, False): b"",
    (Format.TEXT, True): b"",
    (Format.BYTES, False): b"",
    (Format.BYTES, True): b"",
}
HEARTBEATS = {
    (fmt, event, is_chunked): wire(body, is_chunked)
    for (fmt, event), body in _HEARTBEAT_BODIES.items()
    for is_chunked in (True, False)
}
RESYNC = sse.encode_retry(500)


def relabeled(event: Event, event_id: str) -> Event:
    """`event` under the id one subscriber gets (on a cluster, its partitions' positions)."""
    return event if event_id == event.id else event.relabeled(event_id)


def event_body(event: Event) -> bytes:
    return sse.encode_data_event(event.data, id=event.id, event=event.event, retry=event.retry)


def event_frame(event: Event) -> bytes:
    return chunked.frame(event_body(event))


def encoded_for(fmt: Format, is_chunked: bool, selectors: Sequence[Selector], event: Event) -> bytes:
    """`event` as a stream of format `fmt`, chunked or not, subscribed to `selectors` gets it on the
    wire (the slow path: the engine appends one chunked SSE frame to most streams)."""
    if fmt is Format.SSE:
        return event_frame(event) if is_chunked else event_body(event)
    return wire(_other_body(fmt, event, selectors), is_chunked)


def _other_body(fmt: Format, event: Event, selectors: Sequence[Selector]) -> bytes:
    topic = formats.first_topic(event, selectors) if fmt is Format.NDJSON else ""
    return formats.encode(fmt, event, topic)


def snapshot_bodies(
    snapshot: Snapshot,
    batch: int = 64 * 1024,
    fmt: Format = Format.SSE,
    selectors: Sequence[Selector] = (),
) -> Iterator[bytes]:
    """The bytes a subscriber gets before live events, in batches: a reset if any, the replayed or
    retained events, then (SSE only) a position line so even a quiet client resumes from here.

    NDJSON carries the reset as a line and ids in its objects; text carries the events' data only.
    Takes the events out of `snapshot` as it goes, so that none is held once written."""
    parts: list[bytes] = []
    size = 0
    if snapshot.reset is not None:
        if fmt is Format.SSE:
            reset = orjson.dumps({"reason": snapshot.reset}).decode()
            parts.append(sse.encode_event(reset, event="reset"))
        elif fmt is Format.NDJSON:
            parts.append(formats.ndjson_reset(snapshot.reset))
    events = snapshot.events
    events.reverse()  # popped from the end: each in O(1)
    position = str(snapshot.position)
    del snapshot
    while events:
        event = events.pop()
        body = event_body(event) if fmt is Format.SSE else _other_body(fmt, event, selectors)
        parts.append(body)
        size += len(body)
        if size >= batch:
            yield b"".join(parts)
            parts, size = [], 0
    if fmt is Format.SSE:
        parts.append(sse.encode_position(position))
    yield b"".join(parts)


AUTH_EXPIRING = "auth-expiring"


def auth_expiring(fmt: Format, is_chunked: bool, seconds: int) -> bytes:
    """The notice a stream gets before its token expires: an event of its own type whose data is the
    seconds left. A text stream gets nothing: anything written there would become part of the text."""
    if fmt is Format.SSE:
        body = sse.encode_event(str(seconds), event=AUTH_EXPIRING)
    elif fmt is Format.NDJSON:
        body = orjson.dumps({"event": AUTH_EXPIRING, "data": seconds}) + b"\n"
    else:
        body = b""
    return wire(body, is_chunked)


def auth_expired(retry_ms: int) -> bytes:
    """The last block of an SSE stream whose token expired: why it ends, and when to come back (with a
    fresh token, and the last id, to lose nothing)."""
    return sse.encode_comment("the token expired: reconnect with a fresh one") + sse.encode_retry(retry_ms)


DISCONNECT = "disconnect"


def disconnected(reason: str, retry_ms: int) -> bytes:
    """The last block of an SSE stream closed through the control API: why, and when to come back (a
    client whose token still allows it may)."""
    return sse.encode_event(orjson.dumps({"reason": reason}).decode(), event=DISCONNECT, retry=retry_ms)
