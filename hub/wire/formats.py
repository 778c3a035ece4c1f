"""The stream formats other than SSE, and choosing one: pure functions from values to bytes, no I/O.

- `ndjson`: one compact JSON object per line, `{"id", "topic", "event", "data"}`. orjson escapes every
  line break inside strings, so an event is always exactly one line and a reader may split on `\\n`.
  A heartbeat is an empty line (skip empty lines), or `{"event": "heartbeat"}` when asked for.
- `text`: each event's data and nothing else, no separator, so that a stream of LLM tokens concatenates
  to exactly the text published. Nothing else can be written in-band: no ids, no reset, no heartbeats.
  Binary events are not text and are left out.
- `bytes`: the bytes of each binary event, back to back (`application/octet-stream`), and nothing else:
  a file streamed in chunks arrives as the file, with no text event (a stream's `done`) inside it.
  Resumed by offset (`hub/wire/binary.py`); a lost history is refused up front.

A binary event in SSE, NDJSON or a history download is base64 and marked (`hub/wire/binary.py`).

SSE itself lives in `hub/wire/sse.py`. This module must never know about connections or outboxes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum
from urllib.parse import quote

import orjson

from hub.wire import binary, sse
from hub.wire.event import Event
from hub.wire.topics import Selector


class Format(Enum):
    SSE = "sse"
    NDJSON = "ndjson"
    TEXT = "text"
    BYTES = "bytes"


CONTENT_TYPES = {
    Format.SSE: "text/event-stream; charset=utf-8",
    Format.NDJSON: "application/x-ndjson",
    Format.TEXT: "text/plain; charset=utf-8",
    Format.BYTES: "application/octet-stream",
}
_MEDIA_TYPES = {
    "text/event-stream": Format.SSE,
    "application/x-ndjson": Format.NDJSON,
    "text/plain": Format.TEXT,
    "application/octet-stream": Format.BYTES,
}

NDJSON_HEARTBEAT = b"\n"
NDJSON_HEARTBEAT_EVENT = b'{"event":"heartbeat"}\n'


def from_accept(accept: str | None) -> Format:
    """The format an `Accept` header asks for (RFC 9110 §12.5.1, simplified).

    The most specific range naming a format gives its quality; the highest quality wins, and a tie goes
    to SSE, then NDJSON: `application/json, text/plain, */*` (axios' default) or a browser's `*/*;q=0.8`
    still get SSE. Nothing acceptable, or a header that does not parse, also gets SSE: a stream nobody
    asked for in another shape is more useful than a 406."""
    if not accept:
        return Format.SSE
    best: dict[Format, tuple[int, float]] = {}  # format -> (specificity, quality) of its best range
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        quality = _quality(params)
        if quality is None:
            continue
        for name, fmt in _MEDIA_TYPES.items():
            kind = name.partition("/")[0]
            if media == name:
                specificity = 2
            elif media == kind + "/*":
                specificity = 1
            elif media == "*/*":
                specificity = 0
            else:
                continue
            if fmt not in best or best[fmt][0] < specificity:
                best[fmt] = (specificity, quality)
    chosen, top = Format.SSE, 0.0
    for fmt in Format:  # in preference order: a tie keeps the earlier one
        quality = best[fmt][1] if fmt in best else 0.0
        if quality > top:
            chosen, top = fmt, quality
    return chosen


def _quality(params: Sequence[str]) -> float | None:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return None
            return quality if 0.0 <= quality <= 1.0 else None
    return 1.0


def first_topic(event: Event, selectors: Sequence[Selector]) -> str:
    """The first of the event's topics that one of `selectors` matches: the `topic` an NDJSON reader
    sees, so that it can tell which of its subscriptions brought the event."""
    topics = event.topics
    if len(topics) > 1:
        for topic in topics:
            if any(selector.matches(topic) for selector in selectors):
                return topic
    return topics[0]


def json_event(event: Event, topic: str) -> bytes:
    """An event as one compact JSON object (the NDJSON line without its newline; a history array item)."""
    data = event.data
    if type(data) is bytes:
        return orjson.dumps(
            {
                "id": event.id,
                "topic": topic,
                "event": binary.event_name(event.event),
                "data": binary.encode(data),
                "encoding": binary.ENCODING,
            }
        )
    return orjson.dumps({"id": event.id, "topic": topic, "event": event.event or "message", "data": data})


def ndjson_event(event: Event, topic: str) -> bytes:
    return json_event(event, topic) + b"\n"


def ndjson_reset(reason: str) -> bytes:
    return orjson.dumps({"event": "reset", "data": {"reason": reason}}) + b"\n"


def text_event(event: Event) -> bytes:
    """The event's data as it was published, a JSON value as compact JSON: nothing added. Nothing for
    a binary event."""
    data = event.data
    if type(data) is bytes:
        return b""
    return sse.data_text(data).encode("utf-8")


def bytes_event(event: Event) -> bytes:
    """A binary event's bytes as published; nothing for any other."""
    data = event.data
    return data if type(data) is bytes else b""


def encode(fmt: Format, event: Event, topic: str) -> bytes:
    """One event in `fmt`; `topic` is used by NDJSON only (see `first_topic`)."""
    if fmt is Format.NDJSON:
        return ndjson_event(event, topic)
    if fmt is Format.TEXT:
        return text_event(event)
    if fmt is Format.BYTES:
        return bytes_event(event)
    return sse.encode_data_event(event.data, id=event.id, event=event.event, retry=event.retry)


def json_array_items(events: Sequence[Event], topic: str, first: bool) -> bytearray:
    """Items of a JSON array of events, one per line, written a page at a time between `[` and
    `json_array_end`; `first` when no item was written before these."""
    # Appended as they come: orjson's result keeps a buffer of ~4 KiB however short the JSON, so
    # holding a page of them until a join would cost ten times the page.
    out = bytearray()
    for event in events:
        out += b"\n" if first else b",\n"
        out += json_event(event, topic)
        first = False
    return out


def json_array_end(empty: bool) -> bytes:
    return b"]\n" if empty else b"\n]\n"


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def attachment(topic: str, extension: str) -> str:
    """A Content-Disposition that downloads as `<topic>.<extension>`, whatever the topic holds.

    The plain `filename` is ASCII with anything else (quotes, `/`, `\\`, `;`, non-ASCII) replaced, so no
    topic can end the quoted string or the header; `filename*` (RFC 6266/8187) gives clients that read
    it the topic itself, percent-encoded, with `/` as `_`."""
    name = topic.replace("/", "_")
    fallback = _UNSAFE_FILENAME.sub("_", name).lstrip(".") or "topic"
    return (
        f'attachment; filename="{fallback}.{extension}"; '
        f"filename*=UTF-8''{quote(name, safe='')}.{extension}"
    )
