"""What a request must pass before the engine sees it: its token, its origin, its client's limits."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from hub.config import Config
from hub.errors import Forbidden, Unauthorized
from hub.http.auth import COOKIE, Authorizer, Grants
from hub.http.limits import (
    Connections,
    Lease,
    PublishRate,
    burst_for,
    client_address,
    client_key,
    parse_networks,
    stream_limit,
)
from hub.wire.event import Draft
from hub.wire.topics import Selector

# Methods a browser sends across sites without asking, that must change nothing.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TokenSource(enum.Enum):
    HEADER = "header"
    COOKIE = "cookie"  # the browser sends it by itself, whichever page makes the request
    QUERY = "query"


class RequestLike(Protocol):
    """What the guard reads of a request: aiohttp's, or the publish fast path's view of one."""

    @property
    def remote(self) -> str | None: ...
    @property
    def method(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def query(self) -> Mapping[str, str]: ...
    @property
    def cookies(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class Publisher:
    # Who publishes, whatever the spelling of their token: `sub:<sub claim>` (`sub#<digest>` for a sub
    # over 256 bytes), `claims:<digest of the verified header and payload>` for a token without a sub,
    # or `client:<address>` when auth is off (`hub.http.limits.client_key`: an IPv6 client's /64). It names
    # the publish budget spent and scopes idempotency keys.
    key: str
    grants: Grants | None  # None: auth is off


class Guard:
    def __init__(self, config: Config, connection_budget: int) -> None:
        """`connection_budget`: connections the process's open-file limit allows (`descriptor_budget`)."""
        limits = config.limits
        self.authorizer = Authorizer(config.auth)
        self.connections = Connections(
            stream_limit(limits.max_connections, connection_budget),
            limits.max_connections_per_ip,
            retry_after=math.ceil(config.sse.retry / 1000),
        )
        self.publish_rate = PublishRate(
            limits.publish_rate, burst_for(limits.publish_rate, limits.publish_burst, limits.max_batch)
        )
        self._trusted = parse_networks(config.server.trusted_proxies)
        # Origins whose pages may write with the cookie besides the hub's own: the listed CORS origins.
        # Not "*": that lets any page read, and a cookie write from any page is exactly what CSRF is.
        self._write_origins = frozenset(o for o in config.cors.origins if o != "*")

    def client(self, request: RequestLike) -> str:
        """The client as every per-client limit and scope counts it (see `client_key`)."""
        return client_key(
            client_address(request.remote, request.headers.get("X-Forwarded-For"), self._trusted)
        )

    def check_subscribe(self, request: web.Request, selectors: Sequence[Selector]) -> float | None:
        """Refuses what the request's token does not allow; returns when its right to these selectors
        ends (the token's exp, as time.time()), or None."""
        token, _ = self._token(request)
        return self.authorizer.check_subscribe(token, selectors)

    def granted_topics(self, request: web.Request) -> list[str]:
        """The selectors the request's token grants for subscribing (`/events` with a token and no
        topic subscribes to them, as Mercure does); none without auth or a token."""
        token, _ = self._token(request)
        if token is None:
            return []
        grants = self.authorizer.verify(token)
        return [selector.text for selector in grants.subscribe]

    def subject(self, request: web.Request) -> str | None:
        """The sub of the request's token (`sub#<digest>` past 256 bytes), as presence shows its
        streams; None without auth, a token or a sub."""
        token, _ = self._token(request)
        if token is None:
            return None
        subject = self.authorizer.verify(token).subject
        if subject.startswith("sub:"):
            return subject[4:]
        return subject if subject.startswith("sub#") else None

    def check_control(self, request: web.Request, what: str) -> None:
        token, source = self._token(request)
        if source is TokenSource.COOKIE and request.method not in SAFE_METHODS:
            self._check_origin(request)
        self.authorizer.check_control(token, what)

    def check_reading(self, request: web.Request, topic: str) -> None:
        """A topic's subscribers and presence: for who may subscribe to it, or holds `hub.control`."""
        token, _ = self._token(request)
        if token is not None and self.authorizer.verify(token).control:
            return
        self.authorizer.check_subscribe(token, [Selector.parse(topic)])

    def check_admin(self, request: web.Request) -> None:
        """The hub's own figures: anyone without auth, a token with `hub.admin` with it."""
        token, _ = self._token(request)
        self.authorizer.check_admin(token)

    def publisher(self, request: RequestLike) -> Publisher:
        """Who publishes, checked before the body is read: a missing or bad token costs us no parsing."""
        token, source = self._token(request)
        if source is TokenSource.COOKIE and request.method not in SAFE_METHODS:
            self._check_origin(request)
        grants = self.authorizer.publisher(token)
        key = grants.subject if grants is not None else "client:" + self.client(request)
        return Publisher(key, grants)

    def check_publish(self, publisher: Publisher, drafts: Sequence[Draft]) -> None:
        self.authorizer.check_publish(publisher.grants, drafts)
        # After the topics: a refused publish spends no budget.
        self.publish_rate.take(publisher.key, len(drafts), time.monotonic())

    def open_stream(self, request: web.Request) -> Lease:
        """A place for one more stream, to be released when its connection is gone."""
        return self.connections.acquire(self.client(request))

    def _check_origin(self, request: RequestLike) -> None:
        """A write the cookie authorizes comes from the hub's own page or a listed origin: not CSRF."""
        site = request.headers.get("Sec-Fetch-Site")
        if site in ("same-origin", "none"):  # "none": typed in or bookmarked, no page behind it
            return
        origin = request.headers.get("Origin")
        if origin is None:
            origin = origin_of(request.headers.get("Referer"))
        if origin is None:
            if site is None:
                return  # not a browser (browsers name the page of every cross-site POST): not CSRF
            raise Forbidden(
                "origin_forbidden", "a write with the hub_token cookie must say which page it comes from"
            )
        if origin in self._write_origins or host_of(origin) == request.host:
            return
        raise Forbidden(
            "origin_forbidden",
            f"a write with the hub_token cookie from {origin!r}: only this hub's own pages and the "
            "origins in cors.origins may write with it; others send Authorization: Bearer",
        )

    def _token(self, request: RequestLike) -> tuple[str | None, TokenSource | None]:
        if not self.authorizer.enabled:
            return None, None
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("invalid_token", "the Authorization header must be 'Bearer <token>'")
            return value.strip(), TokenSource.HEADER
        # A token the request names wins over the one the browser adds by itself.
        query = request.query.get("token")
        if query:
            return query, TokenSource.QUERY
        cookie = request.cookies.get(COOKIE)
        if cookie:
            return cookie, TokenSource.COOKIE
        return None, None


def origin_of(url: str | None) -> str | None:
    """`scheme://host[:port]` of a URL (a Referer), or None for what is not one."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def host_of(origin: str) -> str | None:
    """The `host[:port]` of an Origin, to compare with the Host the request was sent to."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return None
    return parts.netloc or None  # `null` (a sandboxed frame, a file) is nobody's
