"""Taking a live stream's connection over from aiohttp.

Once a subscriber's headers and replay are out, everything else it gets is written by the fan-out straight
to its transport (see `Outbox`). Keeping aiohttp's side of the connection alive for that (request handler,
parser, request, response, handler task and frames, keep-alive timer) costs about 10 KiB per idle stream,
so the route installs `StreamProtocol` on the transport instead and lets aiohttp finish the request.
From then on aiohttp must never write to, close or reuse that transport, and nothing of it may stay in
aiohttp's bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from hub.engine.fanout import Fanout
from hub.engine.outbox import Outbox
from hub.http.expiry import StreamExpiry
from hub.http.limits import Lease

log = logging.getLogger("hub.http.routes")


def log_stream(what: str, client: str, target: str = "") -> None:
    # One line per connection, never one per event; the target is redacted, its query may hold a token.
    log.debug("stream %s %s %s", what, client, target)


class StreamProtocol(asyncio.Protocol):
    """A detached stream's protocol: it only has to notice that the client went away.

    Flow control stays with the outbox, which cuts a client off by its transport's buffer size, so
    pause/resume_writing are the base class's no-ops; and `eof_received` returns None, which makes the
    transport close, as aiohttp's protocol does."""

    __slots__ = ("_expiry", "_fanout", "_lease", "_outbox")

    def __init__(
        self, fanout: Fanout, outbox: Outbox, lease: Lease, expiry: StreamExpiry | None = None
    ) -> None:
        self._fanout = fanout
        self._outbox = outbox
        self._lease = lease  # counted against the connection limits until the socket is gone
        self._expiry = expiry  # its token's timers, if it expires

    def data_received(self, data: bytes) -> None:
        # An SSE client has nothing to say once its stream is open, and a request pipelined behind a
        # stream would never have been answered by aiohttp either: dropped, never buffered.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._fanout.unsubscribe(self._outbox)
        self._lease.release()
        log_stream("closed", self._lease.client)


class DetachableResponse(web.StreamResponse):
    """A stream response whose end is written by the hub, not aiohttp, once its connection is detached."""

    _detached = False

    async def write_eof(self, data: bytes = b"") -> None:
        if self._detached:
            # aiohttp ends every response it is handed back; this one's connection is not its own.
            return
        await super().write_eof(data)


def detach(request: web.Request, response: DetachableResponse, protocol: StreamProtocol) -> None:
    """Hand the connection of `request`, with its response prepared and written, over to `protocol`.

    The handler must return `response` right after, without awaiting: aiohttp then finishes the request
    without touching the transport and, once its task is done, forgets the connection."""
    handler = request.protocol
    transport = request.transport
    assert transport is not None, "detach a live connection only"
    # Closing on aiohttp's side, for its own sake: with keep-alive, it would wait on the connection for
    # a next request, keeping the handler and its keep-alive timer alive.
    assert not response.keep_alive, "a detached stream's connection closes when the stream ends"
    transport.set_protocol(protocol)
    response._detached = True
    # aiohttp closes its transport when its task ends and on shutdown: it must not have one any more.
    handler.transport = None
    # As if the client had gone: out of the server's connections (which graceful shutdown waits on),
    # parser and request released. Not before the handler's task is done, since `connection_lost`
    # would cancel it.
    request.task.add_done_callback(lambda _task: handler.connection_lost(None))
