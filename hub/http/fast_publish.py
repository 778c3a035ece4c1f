"""POST /publish answered from the connection's `data_received`, off aiohttp's request path.

The commonest call a hub gets is a backend publishing one event and waiting for its answer. On aiohttp's
general path that request costs a task, a request and a response object, the middleware, the router,
three response signals and a stream writer: more than the publish itself. So when a connection's bytes
hold one whole, plain publish (`FastPublish.takes`), the connection (`GuardedRequestHandler`) hands it
here instead: aiohttp's own C parser has parsed it, the checks are the route's own (`publish_route`),
the broker call runs eagerly (`hub.http.eager`), and the answer is written as bytes. Anything else,
or anything unusual about a publish (a body still arriving, chunked or compressed, `Expect`, a CORS
origin, a cookie or query token, `Connection: close`, HTTP/1.0, the drain under way), goes the general
way, where every case is handled; both give the same answer (tests/test_fast_publish.py). A query string
is taken only on a binary publish (`application/octet-stream`), whose fields it holds: a service sending
frames or chunks one request each is the same commonest call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from http.cookies import SimpleCookie
from types import MappingProxyType
from typing import TypeGuard

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from hub.errors import HttpError
from hub.http.connections import SERVER_NAME
from hub.http.cors import Cors
from hub.http.eager import run_eagerly
from hub.http.errors import CLOSING_STATUSES, INTERNAL_ERROR
from hub.http.publish_route import accept, admit
from hub.http.state import CONFIG, DRAIN, FANOUT, GUARD, METRICS
from hub.wire import http1
from hub.wire.publish_request import OCTET_STREAM, media_type

log = logging.getLogger(__name__)

PATH = "/publish"
# What a connection's bytes start with when they may hold such a publish (GuardedRequestHandler asks).
PREFIX = (b"POST " + PATH.encode() + b" ", b"POST " + PATH.encode() + b"?")
_QUERY_PATH = PATH + "?"
_NO_QUERY: Mapping[str, str] = MappingProxyType({})
# The query parameter a token may come in: the general path's (the guard reads `request.query`).
_TOKEN_PARAMETER = "token"


Answer = tuple[bytes, bool]  # the whole response, and whether the connection closes after it


class PublishView:
    """What the guard reads of a publish on the fast path, as `web.Request` gives it."""

    __slots__ = ("headers", "remote")

    method = "POST"
    query = _NO_QUERY  # the fast path takes only `/publish` with no query: no `?token=`

    def __init__(self, headers: Mapping[str, str], remote: str | None) -> None:
        self.headers = headers
        self.remote = remote

    @property
    def host(self) -> str:
        return self.headers.get(hdrs.HOST, "")

    @property
    def cookies(self) -> Mapping[str, str]:
        cookie = SimpleCookie(self.headers.get(hdrs.COOKIE, ""))
        return {name: morsel.value for name, morsel in cookie.items()}


class FastPublish:
    """The app's publish route, for the publishes a connection can hand over whole."""

    def __init__(self, app: web.Application) -> None:
        self._config = config = app[CONFIG]
        self._guard = app[GUARD]
        self._fanout = app[FANOUT]
        self._metrics = app[METRICS]
        self._drain = app[DRAIN]
        self._max_body = config.limits.max_body_bytes
        cors = Cors(config.cors)
        self._cors = cors.enabled
        self._auth = self._guard.authorizer.enabled
        # What the signals add to every answer: the server's name and, where CORS is on for listed
        # origins, that the answer depends on the Origin (a request with one goes the general way).
        self._headers: tuple[tuple[str, str], ...] = (("Server", SERVER_NAME),)
        if cors.enabled and not cors.any_origin:
            self._headers += (("Vary", "Origin"),)
        self._second = 0
        self._ok_head = b""
        self.taken = 0  # publishes answered here rather than by the route
        self.prefix = PREFIX

    def takes(self, message: object, payload: StreamReader) -> TypeGuard[RawRequestMessage]:
        """Whether a parsed request is a publish the fast path answers as the route would: its body
        all in, plain, and nothing about it that only the general path handles."""
        if not isinstance(message, RawRequestMessage):
            return False  # aiohttp's stand-in for a request its parser refused
        if message.path != PATH and not self._binary_with_query(message):
            return False
        if (
            message.method != "POST"
            or message.version != HttpVersion11
            or message.should_close
            or message.compression is not None
            or message.chunked
            or message.upgrade
            or not payload.is_eof()
            or self._drain.begun
        ):
            return False
        headers = message.headers
        length = headers.get(hdrs.CONTENT_LENGTH)
        if length is None or not length.isdigit() or int(length) > self._max_body:
            return False
        if hdrs.EXPECT in headers or (self._cors and hdrs.ORIGIN in headers):
            return False
        # With auth on, only a Bearer token: the cookie's CSRF checks are the general path's.
        return not self._auth or hdrs.AUTHORIZATION in headers

    @staticmethod
    def _binary_with_query(message: RawRequestMessage) -> bool:
        """A binary publish with its fields in the query, and no token among them."""
        return (
            message.path.startswith(_QUERY_PATH)
            and media_type(message.headers.get(hdrs.CONTENT_TYPE, "")) == OCTET_STREAM
            and _TOKEN_PARAMETER not in message.url.query
        )

    def start(
        self,
        message: RawRequestMessage,
        remote: str | None,
        body: bytes,
        loop: asyncio.AbstractEventLoop,
    ) -> asyncio.Future[Answer]:
        """The answer to a publish: done at once where the broker takes it without waiting, else to
        come from a task of its own."""
        self.taken += 1
        # The query as the route reads it (`request.query` is this URL's), for a binary publish.
        query = list(message.url.query.items()) if message.path != PATH else ()
        answering = self.answer(message.headers, remote, body, query)
        if self._fanout.broker.publishes_at_once:
            return run_eagerly(answering, loop)
        return loop.create_task(answering)

    async def answer(
        self,
        headers: Mapping[str, str],
        remote: str | None,
        body: bytes,
        query: Sequence[tuple[str, str]] = (),
    ) -> Answer:
        """The whole response to a publish, and whether the connection closes after it."""
        try:
            publisher = self._guard.publisher(PublishView(headers, remote))
            admitted = admit(self._guard, self._config, publisher, headers, body, query)
            answer = await accept(self._fanout, self._metrics, admitted)
        except HttpError as exc:
            return self._refusal(exc.status, exc.headers().items(), exc.body())
        except Exception:
            log.exception("unhandled error on POST %s", PATH)
            internal = HttpError(*INTERNAL_ERROR)
            return self._refusal(internal.status, (), internal.body())
        if self._drain.begun:
            # During the drain no connection is kept alive, and the client is told (as the signal does).
            return self._response(200, (), answer, close=True), True
        return self._ok(answer), False

    def _ok(self, body: bytes) -> bytes:
        now = int(time.time())
        if now != self._second:
            # The head up to its length changes only with its Date: made once a second.
            self._second = now
            self._ok_head = http1.head(
                200, (("Content-Type", "application/json"), ("Date", http1.http_date(now)), *self._headers)
            )
        return http1.with_body(self._ok_head, body)

    def _refusal(self, status: int, extra: Iterable[tuple[str, str]], body: bytes) -> Answer:
        close = status in CLOSING_STATUSES or self._drain.begun
        return self._response(status, extra, body, close=close), close

    def _response(self, status: int, extra: Iterable[tuple[str, str]], body: bytes, *, close: bool) -> bytes:
        headers = [
            ("Content-Type", "application/json"),
            ("Date", http1.http_date(time.time())),
            *self._headers,
        ]
        headers += list(extra)
        if close:
            headers.append(("Connection", "close"))
        return http1.response(status, headers, body)
