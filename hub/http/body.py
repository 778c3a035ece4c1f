"""Reading a request body, never waiting on a client for ever.

A request whose headers are in is being answered: no header timeout applies and the connection limits
never close it. So a body sent a byte at a time, or never, is bounded here: a whole body must arrive
within `server.body_timeout` seconds of its handler's start, and a streamed one may go that long between
two pieces. Past that the client gets a 408 and its connection is closed, without aiohttp lingering
over the rest. A client that leaves mid-body is `ClientLeft`: the client's doing, not an error of ours.

This must cost nothing when the body is already there (a publish usually arrives in one packet): a
timer is set only when a read has to wait.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from hub.errors import RequestTimeout


class ClientLeft(Exception):
    """The client hung up before its request body was in: nobody to answer."""


async def read_body(request: web.Request, within: float) -> bytes:
    """The whole body of `request`, within `within` seconds."""
    if request.content.is_eof():
        return await _read(request)
    try:
        async with asyncio.timeout(within):
            return await _read(request)
    except TimeoutError:
        raise _give_up(request, f"the request body did not arrive within {within:g} s") from None


async def next_piece(request: web.Request, gap: float) -> bytes:
    """What of a streamed body has come since the last piece, waiting at most `gap` seconds for it;
    b"" at its end."""
    content = request.content
    try:
        piece = content.read_nowait()
        if piece or content.is_eof():
            return piece
        try:
            async with asyncio.timeout(gap):
                return await content.readany()
        except TimeoutError:
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


def _give_up(request: web.Request, message: str) -> RequestTimeout:
    # The connection closes after the 408: no next request is read from it, and the body counts as
    # ended, or aiohttp would wait up to its lingering time (10 s) for the rest before closing.
    request.protocol.close()
    request.content.feed_eof()
    return RequestTimeout("body_timeout", message)
