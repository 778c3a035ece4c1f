"""The aiohttp application: state, lifecycle and routes wired together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from hub.brokers import create_broker
from hub.config import Config
from hub.engine.fanout import Fanout
from hub.engine.outbox import CloseReason
from hub.engine.presence import Presence
from hub.http.admission import Guard
from hub.http.connections import descriptor_budget, name_the_server
from hub.http.cors import Cors
from hub.http.drain import Drain, last_retry
from hub.http.errors import json_errors
from hub.http.metrics import Metrics
from hub.http.routes import add_routes
from hub.http.state import CONFIG, DRAIN, FANOUT, GUARD, METRICS, PRESENCE, SHUTDOWN


def create_app(config: Config) -> web.Application:
    guard = Guard(config, descriptor_budget())
    cors = Cors(config.cors)
    middlewares = [cors.middleware(), json_errors] if cors.enabled else [json_errors]
    app = web.Application(client_max_size=config.limits.max_body_bytes, middlewares=middlewares)
    app.on_response_prepare.append(name_the_server)
    app[DRAIN] = Drain()
    app.on_response_prepare.append(app[DRAIN].close_after_response)
    if cors.enabled:
        app.on_response_prepare.append(cors.on_prepare)
    app[CONFIG] = config
    app[GUARD] = guard
    app[FANOUT] = Fanout(
        create_broker(config),
        heartbeat_interval=config.sse.heartbeat_interval,
        subscribe_timeout=config.sse.subscribe_timeout,
    )
    fanout = app[FANOUT]
    app[PRESENCE] = Presence(
        fanout,
        fanout.broker.directory(config.presence.interval),
        events=config.presence.events,
        retry_ms=config.sse.retry,
        metrics_top=config.presence.metrics_top,
        interval=config.presence.interval,
    )
    app[METRICS] = Metrics(app[FANOUT], guard.connections, app[PRESENCE])
    app[SHUTDOWN] = asyncio.Event()
    app.cleanup_ctx.append(_run_fanout)
    app.cleanup_ctx.append(_run_presence)
    app.on_shutdown.append(_close_streams)
    add_routes(app)
    return app


async def _run_fanout(app: web.Application) -> AsyncIterator[None]:
    fanout = app[FANOUT]
    await fanout.start()
    yield
    await fanout.stop()


async def _run_presence(app: web.Application) -> AsyncIterator[None]:
    presence = app[PRESENCE]
    await presence.start()
    yield
    await presence.close()


async def _close_streams(app: web.Application) -> None:
    app[SHUTDOWN].set()
    sse = app[CONFIG].sse
    app[FANOUT].close_all(lambda: last_retry(sse), CloseReason.SHUTDOWN)
