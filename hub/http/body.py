"""Reading a request body, never waiting on a client for ever.

A request whose headers are in is being answered: no header timeout applies and the connection limits
never close it. So a body sent a byte at a time, or never, is bounded here: a whole body must arrive
within `server.body_timeout` seconds of its handler's start, and a streamed one may go that long between
two pieces. Past that the client gets a 408 and its connection is closed, without aiohttp lingering
over the rest. A client that leaves mid-body is `ClientLeft`: the client's doing, not an error of ours.

While the hub drains (SIGTERM, `hub.http.drain`), a body must also keep coming: one that stalls for a
second, or is not in by the drain's answer deadline, gets a 503 `shutting_down` (nothing of it was
published) instead of holding the drain up.

This must cost nothing when the body is already there (a publish usually arrives in one packet): a
timer is set only when a read has to wait.
"""

from __future__ import annotations

from aiohttp import web

from hub.errors import RequestTimeout, ShuttingDown
from hub.http.state import DRAIN


class ClientLeft(Exception):
    """The client hung up before its request body was in: nobody to answer."""


async def read_body(request: web.Request, within: float) -> bytes:
    """The whole body of `request`, within `within` seconds."""
    if request.content.is_eof():
        return await _read(request)
    drain = request.app[DRAIN]
    try:
        async with drain.body_clock(request.content, within):
            return await _read(request)
    except TimeoutError:
        if drain.begun:
            raise _shutting_down() from None
        raise _give_up(request, f"the request body did not arrive within {within:g} s") from None


async def next_piece(request: web.Request, gap: float) -> bytes:
    """What of a streamed body has come since the last piece, waiting at most `gap` seconds for it;
    b"" at its end."""
    content = request.content
    try:
        piece = content.read_nowait()
        if piece or content.is_eof():
            return piece
        drain = request.app[DRAIN]
        try:
            async with drain.body_clock(content, gap):
                return await content.readany()
        except TimeoutError:
            if drain.begun:
                raise _shutting_down() from None
            raise _give_up(request, f"no piece of the streamed body came for {gap:g} s") from None
    except (ConnectionResetError, RuntimeError) as exc:
        raise _left(request, exc) from exc


async def _read(request: web.Request) -> bytes:
    try:
        return await request.read()
    except (ConnectionResetError, RuntimeError) as exc:
        raise _left(request, exc) from exc


def _left(request: web.Request, exc: Exception) -> Exception:
    # aiohttp's "Connection closed." RuntimeError when the connection went before the read started; any
    # other RuntimeError is ours.
    if isinstance(exc, ConnectionResetError) or request.transport is None:
        return ClientLeft(f"the client left mid-body on {request.method} {request.path}")
    return exc


def _shutting_down() -> ShuttingDown:
    # Not `_give_up`: aiohttp goes on reading what still comes of the body (until the drain's end), so
    # that a client still sending gets this answer rather than a reset.
    return ShuttingDown(
        "the hub is shutting down and the request body was not all in: nothing was published; "
        "send it again (to another replica)"
    )


def _give_up(request: web.Request, message: str) -> RequestTimeout:
    # The connection closes after the 408: no next request is read from it, and the body counts as
    # ended, or aiohttp would wait up to its lingering time (10 s) for the rest before closing.
    request.protocol.close()
    request.content.feed_eof()
    return RequestTimeout("body_timeout", message)
