"""An HTTP/1.1 response as bytes, for the answers the hub writes to a transport itself
(`hub.http.fast_publish`): the status line and headers aiohttp would write for the same response."""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus


def http_date(seconds: float) -> str:
    """The `Date` header's value (RFC 9110 IMF-fixdate) for a time in seconds since the epoch."""
    return formatdate(seconds, usegmt=True)


def head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """The status line and `headers` in their order, each line ended: what a response starts with,
    before its Content-Length and the blank line.

    Header names and values come from the hub, never from a client; a line break in one would split
    the response, so it is refused rather than written."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"]
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n"):
            raise ValueError(f"a line break in the {name!r} header")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def with_body(head_bytes: bytes, body: bytes) -> bytes:
    """A whole response: its `head`, Content-Length, the blank line, `body`."""
    return b"%bContent-Length: %d\r\n\r\n%b" % (head_bytes, len(body), body)


def response(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A whole response with `body`: status line, `headers` in their order, Content-Length, body."""
    return with_body(head(status, headers), body)
