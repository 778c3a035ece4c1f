"""The Server-Sent Events wire format: pure functions from values to bytes, no I/O.

The SSE grammar ends a line at `\\r\\n`, `\\n` or a lone `\\r`, so data is split at all three; anything
else would let a publisher inject fields. Field values other than data (id, event) are validated upstream
never to contain a line break; this module still refuses them rather than emit a broken stream.
"""

from __future__ import annotations

import re

import orjson

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def data_text(data: object) -> str:
    """How event data is written: a string as is, any other JSON value as compact JSON."""
    if isinstance(data, str):
        return data
    return orjson.dumps(data).decode()


def encode_event(
    data: str, *, id: str | None = None, event: str | None = None, retry: int | None = None
) -> bytes:
    """One SSE event, terminated by its blank line."""
    parts: list[bytes] = []
    if id is not None:
        parts.append(b"id: " + _field_value(id) + b"\n")
    if event is not None and event != "message":
        parts.append(b"event: " + _field_value(event) + b"\n")
    if retry is not None:
        parts.append(b"retry: %d\n" % retry)
    raw = data.encode("utf-8")
    # Tested on the str: UTF-8 writes these bytes for these characters only. And `"\n" in str` costs
    # a tenth of `b"\n" in bytes` on CPython 3.11 (45 against 450 ns), five times per event.
    if "\r" in data or "\n" in data:
        parts.extend(b"data: " + line + b"\n" for line in _LINE_BREAK.split(raw))
    else:
        parts.append(b"data: " + raw + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def encode_comment(text: str = "") -> bytes:
    """A comment block: ignored by parsers, keeps proxies and idle timers from closing the stream."""
    lines = _LINE_BREAK.split(text.encode("utf-8"))
    return b"".join(b":" + (b" " + line if line else b"") + b"\n" for line in lines) + b"\n"


def encode_position(id: str) -> bytes:
    """A block that only sets the client's last event id: where it resumes from, without an event."""
    return b"id: " + _field_value(id) + b"\n\n"


def encode_retry(ms: int) -> bytes:
    """A block that only sets the client's reconnection delay."""
    return b"retry: %d\n\n" % ms


def preamble(retry_ms: int, comment: str) -> bytes:
    """The first bytes of every stream, sent at once so proxies and browsers see it open."""
    return b"retry: %d\n" % retry_ms + encode_comment(comment)


def _field_value(value: str) -> bytes:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"SSE field value {value!r} contains a line break or NUL")
    return value.encode("utf-8")
