"""The drain: what a hub process does with the connections and requests it holds once told to stop.

1. Connections whose handshake was done before the signal are accepted; then the listening socket
   closes, and a new connection is refused at once (a load balancer can send it elsewhere: nothing of
   it was sent).
2. From then on every response says `Connection: close`, and its connection closes after it; a new
   stream is refused with a 503 `shutting_down` (it would have to be closed again at once).
3. Live streams get their last `retry:`, each its own (hub.http.app), and close.
4. A connection waiting for a request is closed once the loop has had the chance to read what it sent
   before the signal (it must look idle twice, `DRAIN_POLL` apart); one holding only part of a request's
   headers, or none yet of its first (a client sends one as soon as it has connected, but a thread of
   it can be kept from the CPU for milliseconds), after `HEADER_GRACE`. A request whose headers are in
   is answered.
5. A body still arriving is read while it keeps coming: one that stalls for `BODY_GAP`, or is not in by
   the answer deadline (`shutdown_timeout` less `answer_margin`), is refused with a 503 `shutting_down`
   (nothing of it published; a streamed publish's answer says what of it was).
6. Whatever is left at `shutdown_timeout` is cut off: aiohttp's own shutdown, with a short grace.

Why not aiohttp's own graceful shutdown: its `Server.pre_shutdown` marks every connection as closing, and
from then its protocol drops every byte that arrives (`RequestHandler.data_received` returns at once).
A publish whose headers were in and whose body was still on its way waited for that body until
`shutdown_timeout` (10 s), then its connection was closed unanswered; a request sent on a keep-alive
connection just before the signal was dropped unread.

Nothing here must hold a drain past `shutdown_timeout`, or cut short a request that can still be
answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from typing import Protocol

from aiohttp import hdrs, web
from aiohttp.streams import StreamReader

from hub.config import SseConfig
from hub.wire import sse

log = logging.getLogger(__name__)

# How often the drain looks at its connections; an idle one is closed at the second look that finds it
# idle, so that bytes which arrived before the signal have been read (a poll of the loop lies between).
DRAIN_POLL = 0.005
# A connection holding part of a request's headers when the drain starts: time for the rest. A client
# sends its headers at once; a slower one is slowloris or not worth holding the drain for.
HEADER_GRACE = 0.5
# During a drain, the longest wait for the next bytes of a request body: a body that stalls longer is
# refused (503; a streamed publish already partly published, 408) rather than waited for until
# `shutdown_timeout`.
BODY_GAP = 1.0
# Past `shutdown_timeout`, how long a request cut off is given to finish (twice: once to end on its own,
# once after its cancel). Small: by then it has had its answer, if it could have one.
FORCE_GRACE = 0.05


def answer_margin(timeout: float) -> float:
    """How long before the end of a drain a request still under way is refused: time for the answer to
    go out, and for the rest of its body to be read (the client gets the answer, not a reset)."""
    return min(1.0, timeout / 4)


class Drain:
    """The drain as requests see it; begun once, by the runner (`hub.http.connections.HubRunner`)."""

    def __init__(self) -> None:
        self.deadline: float | None = None  # loop time: everything still open is cut off
        self.answer_by: float | None = None  # loop time: requests under way are refused
        self._clocks: set[_BodyClock] = set()

    @property
    def begun(self) -> bool:
        return self.deadline is not None

    def begin(self, timeout: float) -> None:
        if self.begun:
            return
        now = asyncio.get_running_loop().time()
        self.deadline = now + timeout
        self.answer_by = self.deadline - answer_margin(timeout)
        for clock in list(self._clocks):
            clock.drain(self)

    async def close_after_response(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: during the drain no connection is kept alive, and the client is told."""
        if self.begun:
            response.force_close()
            # aiohttp wrote its Connection header before this hook runs: the header is set here too.
            response.headers[hdrs.CONNECTION] = "close"

    @contextlib.asynccontextmanager
    async def body_clock(self, content: StreamReader, within: float) -> AsyncIterator[None]:
        """Read `content` within `within` seconds; during a drain, also within `BODY_GAP` of its last
        bytes and by the answer deadline. Raises TimeoutError past either: `self.begun` tells which."""
        async with asyncio.timeout(within) as timeout:
            clock = _BodyClock(content, timeout)
            if self.begun:
                clock.drain(self)
            self._clocks.add(clock)
            try:
                yield
            finally:
                self._clocks.discard(clock)
                clock.stop()


class _BodyClock:
    """One body being read, and the timeout that bounds its read."""

    __slots__ = ("_content", "_loop", "_seen", "_timeout", "_timer")

    def __init__(self, content: StreamReader, timeout: asyncio.Timeout) -> None:
        self._content = content
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._seen = 0

    def drain(self, drain: Drain) -> None:
        assert drain.answer_by is not None
        when = self._timeout.when()
        self._timeout.reschedule(drain.answer_by if when is None else min(when, drain.answer_by))
        self._watch()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _watch(self) -> None:
        self._seen = self._content.total_bytes
        self._timer = self._loop.call_later(BODY_GAP, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._content.total_bytes == self._seen and not self._content.is_eof():
            self._timeout.reschedule(self._loop.time())  # stalled: give up now
        else:
            self._watch()


class Drainable(Protocol):
    """A connection, as the drain sees it (`hub.http.connections.GuardedRequestHandler`)."""

    @property
    def idle(self) -> bool:
        """Nothing of a request on it: waiting for one with no byte of it come, or lingering after
        a refusal."""

    @property
    def partial(self) -> bool:
        """Waiting for the rest of a request's headers."""

    @property
    def fresh(self) -> bool:
        """Idle, and never sent a request: just connected."""

    def close_waiting(self, why: str) -> None: ...


async def close_connections(connections: Callable[[], Collection[Drainable]], drain: Drain) -> None:
    """Close connections as they come to hold no request, until none is left or the drain's deadline.

    The connections with requests under way close themselves after their answers (`Connection: close`);
    those are waited for."""
    assert drain.deadline is not None
    loop = asyncio.get_running_loop()
    header_grace_until = loop.time() + HEADER_GRACE
    idle_before: set[Drainable] = set()
    while (conns := connections()) and loop.time() < drain.deadline:
        idle_now: set[Drainable] = set()
        for conn in conns:
            if conn.partial or conn.fresh:
                # Closed now, a connection accepted a moment ago would reset the request its client is
                # about to send, which a proxy may not send again.
                if loop.time() >= header_grace_until:
                    conn.close_waiting("the hub is shutting down; no request's headers all in")
            elif conn.idle:
                if conn in idle_before:
                    conn.close_waiting("the hub is shutting down")
                else:
                    idle_now.add(conn)
        idle_before = idle_now
        await asyncio.sleep(DRAIN_POLL)


class Listening(Protocol):
    """A listening socket as an event loop's server shows it (asyncio's TransportSocket, uvloop's
    PseudoSocket): it hides accept(), but gives a duplicate."""

    def dup(self) -> socket.socket: ...


async def accept_backlog(
    listening_sockets: Iterable[Listening],
    factory: Callable[[], asyncio.Protocol],
    close: Callable[[], None] = lambda: None,
) -> int:
    """Accept the connections waiting on listening sockets, as their loop would have, once the loop's
    server is closed (`close`), and stop listening.

    Closing a listening socket resets the connections the kernel completed for it and nobody accepted:
    clients that sent a request on one a moment before a SIGTERM would get a reset for an answer. So
    each socket is duplicated before the loop's server closes (the duplicate keeps it listening), its
    waiting connections are accepted from the duplicate, and the duplicate is closed right after the last
    accept: a connection completed in between, a few microseconds, is the only one reset."""
    loop = asyncio.get_running_loop()
    duplicates = [listening.dup() for listening in listening_sockets]
    close()
    accepted = [conn for sock in duplicates for conn in _take_waiting(sock)]
    results = await asyncio.gather(
        *(loop.connect_accepted_socket(factory, conn) for conn in accepted), return_exceptions=True
    )
    for conn, result in zip(accepted, results, strict=True):
        if isinstance(result, BaseException):
            conn.close()
    return len(accepted)


def _take_waiting(sock: socket.socket) -> list[socket.socket]:
    """Accept what waits on `sock` (a duplicate: the loop's wrapper hides accept()), then close it."""
    accepted: list[socket.socket] = []
    with sock:
        sock.setblocking(False)
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return accepted  # closing `sock` on the way out, nothing between
            except OSError as exc:  # out of descriptors, say: the rest stay for the kernel to reset
                log.warning("drain: could not accept a waiting connection: %s", exc)
                return accepted
            conn.setblocking(False)
            accepted.append(conn)


def last_retry(config: SseConfig) -> bytes:
    """A draining stream's last block: a `retry:` of its own, drawn evenly over the window, so that the
    clients of a replica going away come back spread out rather than all in the same instant."""
    return sse.encode_retry(random.randint(0, config.shutdown_retry_window or config.retry))
