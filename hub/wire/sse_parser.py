"""Reading the Server-Sent Events wire format: bytes in, events out, no I/O.

The client side of `hub/wire/sse.py`, after the WHATWG event-stream grammar: a line ends at `\\r\\n`, `\\n`
or a lone `\\r`, even when a chunk boundary falls between the `\\r` and the `\\n`; `data:` lines join with
`\\n`; one space after the colon is dropped; a comment starts with `:`. A block without data dispatches
nothing, but its `id:` still moves the last event id (the hub's position lines rely on it) and its
`retry:` still sets the reconnection delay. It must never do I/O or wait: the client feeds it chunks.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any

import orjson

from hub.wire import binary

_LINE_END = re.compile(r"\r\n|\r|\n")


class EventTooLarge(ValueError):
    """A line, or an event's data, grew past the parser's bound: a stream that would exhaust memory."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. `id` is the last event id when it was dispatched, as a browser reports it."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None
    # The event's `encoding:` field: "base64" for data the hub sent as bytes (`hub/wire/binary.py`).
    encoding: str = ""

    def json(self) -> Any:
        """The data read as JSON (the hub writes any non-string value as compact JSON)."""
        return orjson.loads(self.data)

    @property
    def is_binary(self) -> bool:
        return self.encoding == binary.ENCODING

    def data_bytes(self) -> bytes:
        """The data of a binary event as the publisher sent it; ValueError for a text event."""
        if not self.is_binary:
            raise ValueError(f"event {self.id!r} carries text, not bytes")
        return binary.decode(self.data)


class LineDecoder:
    """Text chunks in, complete lines out (without their line ends)."""

    def __init__(self) -> None:
        self._buffer = ""
        # A chunk that ended in `\r` may be followed by the `\n` of the same `\r\n`.
        self._skip_lf = False

    @property
    def pending_size(self) -> int:
        return len(self._buffer)

    def decode(self, text: str) -> list[str]:
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        if not text:
            return []
        self._skip_lf = text.endswith("\r")
        self._buffer += text
        lines = _LINE_END.split(self._buffer)
        self._buffer = lines.pop()
        return lines


class EventDecoder:
    """Lines in, events out; keeps the last event id and reconnection delay the stream has set."""

    def __init__(self, last_event_id: str = "") -> None:
        # Carried over from the connection before, as EventSource does: a reset event has no id of its own.
        self.last_event_id = last_event_id
        self.retry: int | None = None
        self._data: list[str] = []
        self._event = ""
        self._encoding = ""
        self._block_retry: int | None = None

    @property
    def pending_size(self) -> int:
        """Characters of data gathered for the event not yet dispatched."""
        return sum(len(d) + 1 for d in self._data)

    def decode(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "encoding":
            self._encoding = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = self._block_retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, retry, encoding = self._data, self._event, self._block_retry, self._encoding
        self._data, self._event, self._block_retry, self._encoding = [], "", None, ""
        if not data:
            return None
        return ServerSentEvent("\n".join(data), event or "message", self.last_event_id, retry, encoding)


class SseParser:
    """Bytes in, events out: UTF-8 decoding (a sequence split across chunks included), lines, events."""

    def __init__(self, last_event_id: str = "", max_size: int | None = None) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lines = LineDecoder()
        self._events = EventDecoder(last_event_id)
        self._started = False
        # Characters a line, or one event's data, may hold; None: unbounded.
        self._max_size = max_size

    @property
    def last_event_id(self) -> str:
        return self._events.last_event_id

    @property
    def retry(self) -> int | None:
        """The newest `retry:` the stream sent, in milliseconds."""
        return self._events.retry

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._text.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        events = []
        limit = self._max_size
        for line in self._lines.decode(text):
            event = self._events.decode(line)
            if event is not None:
                events.append(event)
            elif limit is not None and self._events.pending_size > limit:
                raise EventTooLarge(f"an event's data is over {limit} characters")
        if limit is not None and self._lines.pending_size > limit:
            raise EventTooLarge(f"a line is over {limit} characters")
        return events


def parse(stream: bytes) -> list[ServerSentEvent]:
    """Every event a whole stream dispatches (an unterminated last block dispatches nothing)."""
    return SseParser().feed(stream)
