"""What a request must pass before the engine sees it: its token, its client's limits."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from hub.auth import COOKIE, Authorizer, Grants
from hub.config import Config
from hub.errors import Unauthorized
from hub.event import Draft
from hub.limits import (
    Connections,
    Lease,
    PublishRate,
    burst_for,
    client_address,
    parse_networks,
    stream_limit,
)
from hub.topics import Selector


@dataclass(frozen=True, slots=True)
class Publisher:
    key: str  # whose publish budget it spends
    grants: Grants | None  # None: auth is off


class Guard:
    def __init__(self, config: Config) -> None:
        limits = config.limits
        self.authorizer = Authorizer(config.auth)
        self.connections = Connections(
            stream_limit(limits.max_connections),
            limits.max_connections_per_ip,
            retry_after=math.ceil(config.sse.retry / 1000),
        )
        self.publish_rate = PublishRate(
            limits.publish_rate, burst_for(limits.publish_rate, limits.publish_burst, limits.max_batch)
        )
        self._trusted = parse_networks(config.server.trusted_proxies)

    def client(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.get("X-Forwarded-For"), self._trusted)

    def check_subscribe(self, request: web.Request, selectors: Sequence[Selector]) -> None:
        self.authorizer.check_subscribe(self._token(request), selectors)

    def publisher(self, request: web.Request) -> Publisher:
        """Who publishes, checked before the body is read: a missing or bad token costs us no parsing."""
        token = self._token(request)
        grants = self.authorizer.publisher(token)
        if token is not None:
            # Hashed: a bucket key need not keep a credential in memory, nor 8 KiB of it.
            key = "token:" + hashlib.blake2b(token.encode(), digest_size=16).hexdigest()
        else:
            key = "client:" + self.client(request)
        return Publisher(key, grants)

    def check_publish(self, publisher: Publisher, drafts: Sequence[Draft]) -> None:
        self.authorizer.check_publish(publisher.grants, drafts)
        # After the topics: a refused publish spends no budget.
        self.publish_rate.take(publisher.key, len(drafts), time.monotonic())

    def open_stream(self, request: web.Request) -> Lease:
        """A place for one more stream, to be released when its connection is gone."""
        return self.connections.acquire(self.client(request))

    def _token(self, request: web.Request) -> str | None:
        if not self.authorizer.enabled:
            return None
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("invalid_token", "the Authorization header must be 'Bearer <token>'")
            return value.strip()
        return request.cookies.get(COOKIE) or request.query.get("token") or None
