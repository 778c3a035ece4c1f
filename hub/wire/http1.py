"""An HTTP/1.1 response as bytes, for the answers the hub writes to a transport itself
(`hub.http.fast_publish`): the status line and headers aiohttp would write for the same response."""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus


def http_date(seconds: float) -> str:
    """The `Date` header's value (RFC 9110 IMF-fixdate) for a time in seconds since the epoch."""
    return formatdate(seconds, usegmt=True)


def response(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A whole response with `body`: status line, `headers` in their order, Content-Length, body.

    Header names and values come from the hub, never from a client; a line break in one would split
    the response, so it is refused rather than written."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n"):
            raise ValueError(f"a line break in the {name!r} header")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
