"""CORS: preflights answered for the configured origins, and the allow headers on every response."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from hub.config import CorsConfig
from hub.http.errors import error_response

ALLOW_METHODS = "GET, POST"
# What browsers may send: a bearer token, a JSON body, a publish key, and the resume id.
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
# What pages of other origins may read: when to retry, and a stream's id in presence.
EXPOSE_HEADERS = "Retry-After, Hub-Connection-Id, Hub-Stream-Start"


class Cors:
    def __init__(self, config: CorsConfig) -> None:
        self.any_origin = "*" in config.origins
        self.origins = frozenset(config.origins)
        self.credentials = config.allow_credentials
        self.max_age = str(config.max_age)

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin in self.origins)

    def headers(self, origin: str) -> dict[str, str]:
        headers = {"Access-Control-Allow-Origin": "*" if self.any_origin else origin}
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def middleware(self) -> Middleware:
        @web.middleware
        async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
                return await handler(request)
            # Only for paths that exist: anything else keeps its 404.
            missing = request.match_info.http_exception
            if missing is not None and missing.status != 405:
                return await handler(request)
            origin = request.headers.get("Origin")
            if not self.allowed(origin):
                return error_response(403, "origin_forbidden", f"the origin {origin!r} is not allowed")
            assert origin is not None
            response = web.Response(status=204, headers=self.headers(origin))
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = self.max_age
            return response

        return preflight

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # A signal, not the middleware: a stream's headers go out inside its handler.
        if not self.any_origin:
            response.headers.add("Vary", "Origin")  # the answer depends on it: caches must know
        origin = request.headers.get("Origin")
        if origin is not None and self.allowed(origin):
            response.headers.update(self.headers(origin))
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
