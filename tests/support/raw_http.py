"""One HTTP/1.1 request on a bare socket, any bytes at all: undecodable header values, raw bytes in the
request target, bodies that lie about their type. aiohttp's client refuses or normalises such requests;
a hostile client does not.

A stream (`/events` or `/stats/stream` answering 200) is read until it has opened: its preamble and, for
an SSE `/events`, its position line, so that a `reset` written before it is seen. Then the client hangs
up, as the fuzz does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

from tests.support.raw_stream import parse_head

STREAM_TYPES = ("text/event-stream", "application/x-ndjson", "text/plain")
# An SSE block holding nothing but an id line: the position every stream sends after its replay.
_POSITION_LINE = re.compile(rb"(?:^|\n\n)id: [^\n]*\n\n")


@dataclass(frozen=True)
class RawRequest:
    method: bytes
    target: bytes  # path and query, as they go on the request line
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    # Topics this request publishes to if it is accepted: the keys it may then write in Redis.
    writes: tuple[str, ...] = ()
    note: str = ""  # what it is, for a failure's message

    def wire(self, host: str) -> bytes:
        lines = [self.method + b" " + self.target + b" HTTP/1.1", b"Host: " + host.encode()]
        lines += [name + b": " + value for name, value in self.headers]
        lines.append(b"Connection: close")
        if self.body or self.method == b"POST":
            lines.append(b"Content-Length: %d" % len(self.body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints examples with this: keep it short

    def __repr__(self) -> str:
        head = f"{self.method.decode()} {self.target[:300]!r} headers={list(self.headers)!r}"[:1200]
        return f"<{self.note}: {head} body={self.body[:200]!r}{'...' if len(self.body) > 200 else ''}>"


@dataclass
class RawAnswer:
    status: int  # 0: the hub closed the connection without answering
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    cut_short: bool = False  # the connection broke before the body's end, or with less than its length

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def reset(self) -> bool:
        """Whether a stream's first blocks held an `event: reset` (SSE) or a reset line (NDJSON)."""
        return b"event: reset\n" in self.body or b'"event":"reset"' in self.body


async def send(
    base_url: str, request: RawRequest, local_host: str | None = None, timeout: float = 10.0
) -> RawAnswer:
    host, _, port = base_url.removeprefix("http://").partition(":")
    local = (local_host, 0) if local_host else None
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=local)
    try:
        writer.write(request.wire(host))
        async with asyncio.timeout(timeout):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return RawAnswer(0)
            status, headers = parse_head(head)
            answer = RawAnswer(status, headers)
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            stream = answer.status == 200 and answer.content_type in STREAM_TYPES
            try:
                if stream and request.target.startswith((b"/events", b"/stats/stream")):
                    sse = answer.content_type == "text/event-stream" and request.target.startswith(b"/events")
                    answer.body = await _stream_head(reader, chunked, until_position=sse)
                else:
                    raw = await reader.read()  # Connection: close, so the body ends with the connection
                    answer.body = _dechunk(raw) if chunked else raw
                    length = headers.get("content-length", "")
                    answer.cut_short = length.isdigit() and len(answer.body) < int(length)
            except ConnectionError:
                answer.cut_short = True  # reset: what the hub sent may be lost
            return answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _stream_head(reader: asyncio.StreamReader, chunked: bool, until_position: bool) -> bytes:
    """An SSE stream of events up to its position line; any other stream: what arrives in a short while
    (a reset line comes at once, events only when published)."""
    raw = b""
    wait = 5.0 if until_position else 0.2
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                raw += data
                body = _dechunk(raw) if chunked else raw
                if until_position and _POSITION_LINE.search(body):
                    break
    return _dechunk(raw) if chunked else raw


def _dechunk(raw: bytes) -> bytes:
    out = bytearray()
    while raw:
        size_line, sep, rest = raw.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        raw = rest[size + 2 :]
    return bytes(out)
