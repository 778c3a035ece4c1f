"""The web console: its page and static files, and the stats stream that feeds its charts.

The files ship inside the package and are served from memory: no build step, nothing fetched from
elsewhere, so the console works offline and behind any proxy. Nothing here subscribes to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from hub.errors import NotFound
from hub.http.drain import last_retry
from hub.http.state import CONFIG, GUARD, METRICS, SHUTDOWN
from hub.wire import sse

STATIC_FILES = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
STATS_INTERVAL = 1.0  # seconds between two samples on /stats/stream: the charts' resolution
# The page loads only its own files and talks only to its own origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:;"
        " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("hub").joinpath("static", name).read_bytes()


def index_handler() -> Handler:
    page = _read("index.html")

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    return index


def static_handler() -> Handler:
    files = {name: (_read(name), content_type) for name, content_type in STATIC_FILES.items()}

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise NotFound("not_found", f"no static file {name!r}")
        body, content_type = files[name]
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=PAGE_HEADERS)

    return static


async def stats_stream(request: web.Request) -> web.StreamResponse:
    """`/stats` as an SSE event every second: one connection per open console, counted like any stream."""
    guard = request.app[GUARD]
    guard.check_admin(request)
    lease = guard.open_stream(request)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        response.force_close()
        await response.prepare(request)
        await response.write(sse.preamble(request.app[CONFIG].sse.retry, "broadcast-hub stats"))
        metrics = request.app[METRICS]
        shutdown = request.app[SHUTDOWN]
        while not shutdown.is_set():
            await response.write(sse.encode_event(orjson.dumps(metrics.stats()).decode(), event="stats"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATS_INTERVAL):
                    await shutdown.wait()
        # Like every stream on shutdown: come back soon, to this replica or another.
        await response.write(last_retry(request.app[CONFIG].sse))
        return response
    except ConnectionResetError:
        return response  # the console was closed
    finally:
        lease.release()


def favicon_handler() -> Handler:
    icon = _read("favicon.svg")

    async def favicon(request: web.Request) -> web.Response:
        # Browsers ask for /favicon.ico whatever the page links: the same icon, not a 404 in every log.
        return web.Response(
            body=icon, content_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )

    return favicon


def add_console_routes(app: web.Application) -> None:
    app.router.add_get("/", index_handler())
    app.router.add_get("/favicon.ico", favicon_handler())
    app.router.add_get("/static/{name}", static_handler())
    app.router.add_get("/stats/stream", stats_stream, allow_head=False)
