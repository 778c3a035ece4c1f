"""Turning a streamed request body into drafts as it arrives, for `POST /publish/stream`. Pure.

Four readers, one per media type, each fed the body's bytes as they come and answering the drafts that
are complete so far; nothing is kept but an unfinished line or character:

    text/plain               each chunk received is one event (split where it is over the data limit)
    application/octet-stream each chunk received is one event of bytes (split so too): a file, audio
    application/x-ndjson     each line is one publish object, as `POST /publish` takes
    text/event-stream        each SSE event is relayed with its type and data (an LLM API's stream as
                             is; a hub's own stream with its binary events as bytes again)
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Protocol

import orjson

from hub.errors import BadRequest, HttpError, PayloadTooLarge, UnsupportedMediaType
from hub.wire import binary
from hub.wire.event import Draft
from hub.wire.publish_request import (
    OCTET_STREAM,
    PublishLimits,
    media_type,
    parse_draft,
    validate_event_name,
)
from hub.wire.sse_parser import EventTooLarge, ServerSentEvent, SseParser

MEDIA_TYPES = ("text/plain", OCTET_STREAM, "application/x-ndjson", "text/event-stream")


class BodyReader(Protocol):
    def feed(self, chunk: bytes) -> list[Draft]: ...

    def end(self) -> list[Draft]: ...


def reader_for(
    content_type: str, topics: tuple[str, ...], event: str | None, limits: PublishLimits
) -> BodyReader:
    kind = media_type(content_type)
    if kind == "text/plain":
        return TextChunks(topics, event, limits)
    if kind == OCTET_STREAM:
        return ByteChunks(topics, event, limits)
    if kind == "application/x-ndjson":
        return NdjsonLines(topics, event, limits)
    if kind == "text/event-stream":
        return SseEvents(topics, event, limits)
    raise UnsupportedMediaType(
        "unsupported_media_type",
        f"a streamed publish takes {', '.join(MEDIA_TYPES)}" + (f", not {kind}" if kind else ""),
    )


class TextChunks:
    def __init__(self, topics: tuple[str, ...], event: str | None, limits: PublishLimits) -> None:
        self._topics = topics
        self._event = event
        self._max = limits.max_data_bytes
        # A character split between two chunks is completed by the next one, not mangled.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> list[Draft]:
        return self._drafts(self._decoder.decode(chunk))

    def end(self) -> list[Draft]:
        return self._drafts(self._decoder.decode(b"", final=True))

    def _drafts(self, text: str) -> list[Draft]:
        return [Draft(self._topics, piece, self._event) for piece in _pieces(text, self._max)]


class ByteChunks:
    def __init__(self, topics: tuple[str, ...], event: str | None, limits: PublishLimits) -> None:
        self._topics = topics
        self._event = event
        self._max = limits.max_data_bytes

    def feed(self, chunk: bytes) -> list[Draft]:
        step = self._max
        return [Draft(self._topics, chunk[i : i + step], self._event) for i in range(0, len(chunk), step)]

    def end(self) -> list[Draft]:
        return []


def _pieces(text: str, max_bytes: int) -> Iterator[str]:
    """`text` in pieces of at most `max_bytes` of UTF-8, cut between characters."""
    while text:
        encoded = text.encode("utf-8")
        if len(encoded) <= max_bytes:
            yield text
            return
        piece = encoded[:max_bytes].decode("utf-8", errors="ignore")  # drops a cut character's head
        yield piece
        text = text[len(piece) :]


class _Failing(Protocol):
    _error: HttpError | None


def _until_error(reader: _Failing, drafts: Iterator[Draft]) -> list[Draft]:
    """The drafts up to a bad one; the error is raised on the next call, once those are published.

    So a body that goes bad halfway has everything before the bad part relayed, in order, whichever
    chunk the bad part arrived in."""
    if reader._error is not None:
        raise reader._error
    out: list[Draft] = []
    try:
        out.extend(drafts)
    except HttpError as exc:
        reader._error = exc
        if not out:
            raise
    return out


class _Lines:
    """Complete lines of a body, bounded: a line may not grow past `max_line` bytes."""

    def __init__(self, max_line: int) -> None:
        self._buffer = b""
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > self._max_line:
            raise PayloadTooLarge("line_too_long", f"a line of the body is over {self._max_line} bytes")
        return lines

    def end(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        return [rest] if rest else []


class NdjsonLines:
    def __init__(self, topics: tuple[str, ...], event: str | None, limits: PublishLimits) -> None:
        self._topics = topics
        self._event = event
        self._limits = limits
        # A line holds one event's data, its topics and fields, JSON-escaped: room for all of it.
        self._lines = _Lines(2 * limits.max_data_bytes + 64 * 1024)
        self._count = 0

        self._error: HttpError | None = None

    def feed(self, chunk: bytes) -> list[Draft]:
        return _until_error(self, self._drafts(self._lines.feed(chunk)))

    def end(self) -> list[Draft]:
        return _until_error(self, self._drafts(self._lines.end()))

    def _drafts(self, lines: list[bytes]) -> Iterator[Draft]:
        for line in lines:
            self._count += 1
            if not line.strip():
                continue
            where = f"line {self._count}: "
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BadRequest("invalid_json", f"{where}not valid UTF-8 JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise BadRequest("invalid_event", f"{where}each line must be a JSON object")
            if "topic" not in doc and "topics" not in doc:
                doc["topics"] = list(self._topics)
            if "event" not in doc and self._event is not None:
                doc["event"] = self._event
            yield parse_draft(doc, self._limits, where)


class SseEvents:
    """Each SSE event of the body, with its type and data; the upstream's ids and retry are its own."""

    def __init__(self, topics: tuple[str, ...], event: str | None, limits: PublishLimits) -> None:
        self._topics = topics
        self._default_event = event
        self._max = limits.max_data_bytes
        # A hub's binary event comes as base64, 4 characters for 3 bytes: its decoded size is checked after.
        self._parser = SseParser(max_size=4 * ((limits.max_data_bytes + 2) // 3))
        self._error: HttpError | None = None

    def feed(self, chunk: bytes) -> list[Draft]:
        try:
            events = self._parser.feed(chunk)
        except EventTooLarge:
            raise PayloadTooLarge("data_too_large", f"an event's data is over {self._max} bytes") from None
        return _until_error(self, (self._draft(e) for e in events))

    def end(self) -> list[Draft]:
        # A last event without its blank line was cut short: the SSE grammar drops it, and so do we.
        return _until_error(self, iter(()))

    def _draft(self, event: ServerSentEvent) -> Draft:
        data: str | bytes = event.data
        if event.encoding == binary.ENCODING:
            data = binary.decode(event.data)
        elif event.encoding:
            raise BadRequest("invalid_data", f"an event's encoding {event.encoding!r} is not base64")
        if len(data) > self._max if type(data) is bytes else len(event.data.encode("utf-8")) > self._max:
            raise PayloadTooLarge("data_too_large", f"an event's data is over {self._max} bytes")
        # `message` is the default type, which the wire leaves out: the query's event fills it in.
        if event.event != "message":
            name = validate_event_name(event.event, binary=type(data) is bytes)
        else:
            name = self._default_event
        return Draft(self._topics, data, name)
