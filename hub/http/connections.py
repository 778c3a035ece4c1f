"""Every connection aiohttp holds, bounded in time and in number.

On its own, aiohttp waits for a request's headers as long as its keep-alive timeout, and counts its
connections toward nothing: sockets that send half a request and stop (slowloris), or nothing at all,
could hold every file descriptor. Here a connection must finish its request's headers within
`server.header_timeout` of connecting, of that request's first byte, or of the response before it (a
request pipelined behind another arrives before its turn); it waits at most `server.idle_timeout`
between requests; and it counts toward the open-file budget (with the streams) and toward its peer's
`limits.max_http_connections_per_ip` (an IPv6 peer's /64, see `hub.http.limits.client_key`). A new
connection over either closes the oldest connection that is idle or still sending headers or, with
none, is refused itself. (Bodies are bounded by the routes that read them: `hub.http.body`.)

A detached stream (`hub.http.detach`) leaves the table once aiohttp forgets its connection: its
`Lease` counts it from then on, and no timeout here applies to it.

On SIGTERM the runner drains these connections as `hub.http.drain` says, in place of aiohttp's own
graceful shutdown (which drops the bytes of requests still arriving).

aiohttp has no API for what this needs to know of a connection, so it reads four attributes of
`RequestHandler` (checked on import; tests/test_connections.py pins the behaviour, and
tests/test_aiohttp_internals.py the code, for the aiohttp versions pyproject.toml admits): `_waiter` (a
pending future while it waits for the bytes of a request), `_messages` (requests parsed, not yet
handled), `_request_in_progress` and `_parser`; and it extends `_handle_request`, to linger after a
malformed request. It must never close a connection that is being answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from hub.http.drain import FORCE_GRACE, Drain, Listening, accept_backlog, close_connections
from hub.http.errors import error_response, malformed
from hub.http.limits import Connections, budget_for, client_key, is_trusted, parse_networks

if TYPE_CHECKING:
    from aiohttp.http_parser import RawRequestMessage

    from hub.http.fast_publish import FastPublish

log = logging.getLogger(__name__)

# The `Server` header of every response: no version for anyone to look up.
SERVER_NAME = "broadcast-hub"

RELIED_ON = (
    "_waiter",
    "_messages",
    "_request_in_progress",
    "_parser",
    # the publish fast path: a request taken out of aiohttp's hands, and the keep-alive it then owes
    "_manager",
    "_keepalive",
    "_keepalive_timeout",
    "_keepalive_handle",
    "_next_keepalive_close_time",
)
_slots = {name for cls in RequestHandler.__mro__ for name in getattr(cls, "__slots__", ())}
if not _slots.issuperset(RELIED_ON):  # pragma: no cover - an aiohttp this module was not written for
    raise ImportError(f"aiohttp's RequestHandler lacks {sorted(set(RELIED_ON) - _slots)}; see {__name__}")
for _method in ("_handle_request", "_process_keepalive"):
    if not callable(getattr(RequestHandler, _method, None)):  # pragma: no cover - as above
        raise ImportError(f"aiohttp's RequestHandler lacks {_method}; see {__name__}")

# Bytes a connection may hold for the fast path: pipelined behind a publish being answered, or answers
# its client has not read yet. Past it the fast path waits: aiohttp's path bounds what it holds itself.
HELD_LIMIT = 64 * 1024

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_REFUSAL_BODY = (
    b'{"error":{"code":"too_many_connections","message":"this hub process holds all the connections '
    b'it can; retry, maybe on another replica"}}'
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: " + SERVER_NAME.encode() + b"\r\n"
    b"Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


class ConnectionTable:
    """The connections aiohttp holds, oldest first, in all and per peer (`client_key` of its address)."""

    def __init__(
        self, budget: int, per_peer: int, streams: Connections, exempt: Sequence[_Network] = ()
    ) -> None:
        self.budget = budget
        self.per_peer = per_peer
        self._streams = streams  # detached streams hold descriptors too
        self._exempt = tuple(exempt)
        self._all: dict[GuardedRequestHandler, None] = {}
        self._by_peer: dict[str, dict[GuardedRequestHandler, None]] = {}
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._all)

    def held_by(self, peer: str) -> int:
        return len(self._by_peer.get(peer, ()))

    def admit(self, conn: GuardedRequestHandler, peer: str, address: str) -> bool:
        """Count `conn` from `address` in under `peer`, its key, making room by closing an older waiting
        one if need be; False: no room."""
        if len(self._all) + self._streams.open >= self.budget and not self._evict(self._all):
            self.refused += 1
            return False
        mine = self._by_peer.get(peer)
        if (
            self.per_peer
            and mine is not None
            and len(mine) >= self.per_peer
            and not is_trusted(address, self._exempt)
            and not self._evict(mine)
        ):
            self.refused += 1
            return False
        self._all[conn] = None
        self._by_peer.setdefault(peer, {})[conn] = None
        return True

    def forget(self, conn: GuardedRequestHandler, peer: str) -> None:
        if self._all.pop(conn, False) is False:
            return
        mine = self._by_peer[peer]
        del mine[conn]
        if not mine:
            del self._by_peer[peer]

    def _evict(self, conns: dict[GuardedRequestHandler, None]) -> bool:
        # Oldest first: a slowloris socket has waited longer than a client that just connected.
        victim = next((conn for conn in conns if conn.waiting), None)
        if victim is None:
            return False
        self.evicted += 1
        victim.close_waiting("over the connection limit")
        return True


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol, with a header timeout, a place in the table, and malformed
    requests answered in the hub's JSON shape and logged in one line without their bytes."""

    __slots__ = (
        "_address",
        "_answering",
        "_closed",
        "_fast",
        "_header_deadline",
        "_header_timeout",
        "_header_timer",
        "_held",
        "_lingering",
        "_malformed",
        "_owed",
        "_partial",
        "_peer",
        "_table",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        table: ConnectionTable,
        header_timeout: float,
        fast: FastPublish | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._table = table
        self._fast = fast
        self._answering = False  # a publish taken by the fast path is being answered
        self._held: list[bytes] = []  # what came meanwhile, read once it is answered
        self._address: str | None = None
        self._header_timeout = header_timeout
        # One timer per connection, moved on lazily as aiohttp does its keep-alive timer: a request
        # costs no timer of its own. No deadline: 0.
        self._header_deadline = 0.0
        self._header_timer: asyncio.TimerHandle | None = None
        # A request is owed by the deadline (the connection is new, or one's first byte came): then it
        # closes without looking at what the parser holds.
        self._owed = True
        self._peer = "unknown"
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._malformed = False  # a request on it was refused as malformed
        self._lingering = False
        self._partial = False  # bytes of a request came while it waited, and its headers are not all in

    @property
    def waiting(self) -> bool:
        """aiohttp waits for the bytes of a request (idle, or still being sent its headers), or the
        connection lingers after a malformed one: nothing of ours is under way. Not merely "no request
        in progress": a request just parsed is neither queued nor in progress until its task starts."""
        if self._answering:
            return False
        if self._lingering:
            return True
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    @property
    def idle(self) -> bool:
        """Waiting, with no byte of a next request come: closing it loses nothing (for the drain)."""
        return self.waiting and not self._partial

    @property
    def partial(self) -> bool:
        """Waiting for the rest of a request's headers (for the drain)."""
        return self.waiting and self._partial

    @property
    def fresh(self) -> bool:
        """Connected, and no byte of its first request come yet (for the drain)."""
        return self.idle and self._owed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        self._address = str(peername[0]) if isinstance(peername, tuple) else None  # as request.remote
        address = self._address or "unix"
        self._peer = client_key(address)
        if not self._table.admit(self, self._peer, address):
            log.debug("refused a connection from %s: over the connection limit", self._peer)
            if self.transport is not None:
                self.transport.write(REFUSAL)
            self.force_close()
            return
        self._arm_header_clock()

    def data_received(self, data: bytes) -> None:
        if self._answering:
            self._hold(data)
            return
        between_requests = bool(data) and self.waiting
        next_request = not self._owed and between_requests
        if next_request:
            # The first byte of the next request: its headers are on the clock from now (or from the
            # response before, if that is sooner), and aiohttp's idle timer stops (it starts again
            # after the response; a publish answered at once leaves it running, `_answered`).
            self._owed = True
            if not self._header_deadline:
                self._arm_header_clock()
        if self._fast is not None and data.startswith(self._fast.prefix) and self._parked():
            if self._feed_fast(data, stop_idle_timer=next_request):
                self._partial = False
                return
        else:
            if next_request:
                self.keep_alive(True)
            super().data_received(data)
        if between_requests:
            # A request whose headers are all in is queued; the rest of its body does not come here.
            self._partial = not self._messages
        if self._header_deadline and self._messages:
            # The headers are in: the request is being answered. The timer, if any, finds no deadline.
            self._header_deadline = 0.0
            self._owed = False

    # --- the publish fast path (hub.http.fast_publish) ---

    def _parked(self) -> bool:
        """aiohttp's task waits for a request, with none queued: a request parsed now would be next."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages and not self._lingering

    def _feed_fast(self, data: bytes, *, stop_idle_timer: bool) -> bool:
        """aiohttp's `data_received`, with a publish it parses taken from it and answered here (True)."""
        assert self._fast is not None
        waiter = self._waiter
        assert waiter is not None
        # aiohttp wakes its task for what it parses: not yet, so that a request taken here never
        # reaches it.
        self._waiter = None
        try:
            super().data_received(data)
        finally:
            self._waiter = waiter
        messages = self._messages
        transport = self.transport
        message, payload = messages[0] if len(messages) == 1 else (None, None)
        if (
            payload is not None
            and transport is not None
            # a client not reading its answers is answered at aiohttp's pace, which waits for it
            and transport.get_write_buffer_size() < HELD_LIMIT
            and self._fast.takes(message, payload)
        ):
            messages.popleft()
            assert self._parser is not None
            assert self._manager is not None
            self._parser.message_consumed()
            self._manager.requests_count += 1
            self._answer_fast(message, payload.read_nowait())
            return True
        if stop_idle_timer:
            self.keep_alive(True)
        if messages and not waiter.done():
            waiter.set_result(None)
        return False

    def _answer_fast(self, message: RawRequestMessage, body: bytes) -> None:
        assert self._fast is not None
        # Its headers are in: it is being answered, no header clock runs.
        self._header_deadline = 0.0
        self._owed = False
        answer = self._fast.start(message, self._address, body, self._loop)
        if answer.done():
            self._answered(answer)
        else:
            self.keep_alive(True)  # aiohttp's idle timer would close a connection waiting on its answer
            self._answering = True
            answer.add_done_callback(self._answered)

    def _answered(self, answer: asyncio.Future[tuple[bytes, bool]]) -> None:
        self._answering = False
        if answer.cancelled() or self.transport is None:
            return  # the loop is closing, or the client left
        response, close = answer.result()
        self.transport.write(response)
        if close:
            self.force_close()
            return
        # What aiohttp's task does after a response it keeps alive, and log_access for the header clock.
        now = self._loop.time()
        self._keepalive = True
        self._next_keepalive_close_time = now + self._keepalive_timeout
        if self._keepalive_handle is None:
            self._keepalive_handle = self._loop.call_at(
                self._next_keepalive_close_time, self._process_keepalive
            )
        self._arm_header_clock()
        if self._held:
            held, self._held = b"".join(self._held), []
            if self._reading_paused:
                self.resume_reading()
            self.data_received(held)

    def _hold(self, data: bytes) -> None:
        # Pipelined behind a publish being answered: its turn comes after that answer.
        self._held.append(data)
        if sum(map(len, self._held)) >= HELD_LIMIT and not self._reading_paused:
            self.pause_reading()

    def log_access(self, request: BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        # aiohttp calls this once a response is out, whether or not it logs: bytes of a next request may
        # already be in the parser, sent before their turn, and no byte to come would start the clock.
        super().log_access(request, response, time)
        if self.transport is not None:
            self._owed = False
            self._arm_header_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._header_deadline = 0.0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._table.forget(self, self._peer)
        if not self._closed.done():
            self._closed.set_result(None)
        super().connection_lost(exc)

    def close_waiting(self, why: str) -> None:
        log.debug("closed a connection from %s: %s", self._peer, why)
        self._table.forget(self, self._peer)  # at once: the transport reports its loss only later
        self.force_close()

    def _arm_header_clock(self) -> None:
        deadline = self._loop.time() + self._header_timeout
        self._header_deadline = deadline
        if self._header_timer is None:
            self._header_timer = self._loop.call_at(deadline, self._header_clock_rings)

    def _header_clock_rings(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if not deadline or self.transport is None:
            return
        if self._loop.time() < deadline:  # moved on since the timer was set
            self._header_timer = self._loop.call_at(deadline, self._header_clock_rings)
            return
        if self.waiting:
            self._header_deadline = 0.0
            if self._owed or self._holds_part_of_a_request():
                self.close_waiting(f"no complete request headers within {self._header_timeout:g} s")
            # else idle between requests: aiohttp's idle timer has it
        elif self._request_in_progress or self._messages:
            self._header_deadline = 0.0  # being answered: its response sets the clock again
            self._owed = False
        else:
            self._arm_header_clock()  # answered, aiohttp still reading the rest of an unread body

    def _holds_part_of_a_request(self) -> bool:
        """Whether the parser holds the start of a request, not yet whole.

        HTTP lets a server skip empty lines before a request line: a parser between requests takes
        them as nothing, while one in the middle of a request line or its headers completes or refuses
        the request. Asked only of a connection to be closed if so, as the lines spoil such a parser."""
        parser = self._parser
        if parser is None:
            return False
        try:
            messages, _, _ = parser.feed_data(b"\r\n\r\n")
        except Exception:  # the parser's refusal (HttpProcessingError), whatever its kind
            return True
        return bool(messages)

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        response, reset = await super()._handle_request(request, start_time, request_handler)
        # Refused in its headers (aiohttp's parser), or in a body that broke off or does not decode:
        # whatever else the client sends is unread.
        if not reset and (self._malformed or request.content.exception() is not None):
            await self._linger()
        return response, reset

    async def _linger(self) -> None:
        # The rest of the body may still be on its way: closing now, with bytes unread, makes the
        # kernel reset the connection, and the client loses the answer. So the answer is ended with a
        # FIN and what else comes is dropped until the client closes its side, for at most aiohttp's
        # own lingering time (it reads a parsed request's unread body as long).
        self.close()  # data_received drops everything from now on
        if self.transport is None or not self.transport.can_write_eof():
            return
        self.transport.write_eof()
        self._lingering = True
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lingering_time):
                    await asyncio.shield(self._closed)
        finally:
            self._lingering = False

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), web.RequestPayloadError):
            return  # the rest of a malformed body, met again as aiohttp drains it: answered and logged
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            # Ours, not the client's: aiohttp's answer and its logged traceback are what we want.
            response = super().handle_error(request, status, exc, message)
        else:
            code, text = malformed(exc)
            log.debug("malformed request from %s: %s", self._peer, code)
            if request.writer.output_size > 0:
                raise ConnectionError("a response was under way; nothing more can be sent")
            response = error_response(status, code, text)
            response.force_close()
            self._malformed = True
        response.headers[hdrs.SERVER] = SERVER_NAME
        return response


class GuardedServer(web.Server):
    """aiohttp's protocol factory, making `GuardedRequestHandler`s, and draining them at shutdown."""

    table: ConnectionTable
    header_timeout: float
    drain: Drain
    fast: FastPublish | None

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self,
            loop=self._loop,
            table=self.table,
            header_timeout=self.header_timeout,
            fast=self.fast,
            **self._kwargs,
        )

    def pre_shutdown(self) -> None:
        # aiohttp closes every connection here, and its connections then drop what arrives: the drain
        # (`shutdown`) closes them one by one, as each comes to hold no request.
        pass

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        await close_connections(self._guarded, self.drain)
        # Past the deadline: aiohttp's own end for what is left, cancelled if it does not end at once.
        await super().shutdown(FORCE_GRACE)

    def _guarded(self) -> list[GuardedRequestHandler]:
        return [conn for conn in self.connections if isinstance(conn, GuardedRequestHandler)]


class HubRunner(web.AppRunner):
    """An AppRunner whose server guards its connections (see the module docstring) and drains them."""

    def __init__(
        self,
        app: web.Application,
        *,
        table: ConnectionTable,
        header_timeout: float,
        drain: Drain,
        shutdown_timeout: float,
        fast: FastPublish | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, shutdown_timeout=shutdown_timeout, **kwargs)
        self.table = table
        self.fast = fast
        self._header_timeout = header_timeout
        self.drain = drain
        self._drain_timeout = shutdown_timeout

    async def begin_drain(self) -> None:
        """Start draining (`hub.http.drain`): from now on responses close their connections. The sites
        stop listening in `cleanup`, which does the rest."""
        server = self.server
        if server is None or self.drain.begun:
            return
        self.drain.begin(self._drain_timeout)
        # Before the sites stop listening: what the kernel accepted for them is answered, not reset.
        for site in self.sites:
            listening = getattr(site, "_server", None)
            await accept_backlog(
                _listening_sockets(site), server, listening.close if listening is not None else lambda: None
            )

    async def cleanup(self) -> None:
        await self.begin_drain()
        await super().cleanup()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server with arguments of the application's own; only the protocol it
        # makes differs, so the class is swapped rather than the construction copied.
        server.__class__ = GuardedServer
        assert isinstance(server, GuardedServer)
        server.table = self.table
        server.header_timeout = self._header_timeout
        server.drain = self.drain
        server.fast = self.fast
        return server


def _listening_sockets(site: web.BaseSite) -> Sequence[Listening]:
    # aiohttp keeps a site's server to itself (its own `BaseRunner.addresses` reads it so); the loop's
    # server (asyncio's or uvloop's, which is no asyncio.AbstractServer) lists its sockets.
    server = getattr(site, "_server", None)
    return tuple(getattr(server, "sockets", None) or ())


def descriptor_budget() -> int:
    """`budget_for` this process's open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return budget_for(soft)


def table_for(streams: Connections, per_peer: int, trusted_proxies: Sequence[str]) -> ConnectionTable:
    return ConnectionTable(descriptor_budget(), per_peer, streams, parse_networks(trusted_proxies))


async def name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: aiohttp would name itself and Python, with their versions."""
    response.headers[hdrs.SERVER] = SERVER_NAME
