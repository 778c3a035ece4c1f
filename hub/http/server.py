"""Running the app: one process serving until SIGINT or SIGTERM, and workers sharing a port."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from dataclasses import dataclass

from aiohttp import web

from hub.config import Config
from hub.errors import ListenError
from hub.http.app import create_app
from hub.http.connections import HubRunner, table_for
from hub.http.fast_publish import FastPublish
from hub.http.state import DRAIN, FANOUT, GUARD
from hub.redact import redact_url
from hub.wire.topics import MAX_TOPIC_BYTES

log = logging.getLogger("hub")

# The cyclic collector in a serving process. Its full passes walk every object the hub holds for its
# connections and its history: on `topics`, one such pass of 37 ms fell in each run, 12% of it, and set
# its p99. Frozen, what start-up made is left out of them; at 100 rather than CPython's 10 middle passes
# per full one, they come up to a tenth as often (CPython also skips one while fewer objects wait to
# join the oldest than a quarter of those there). Young passes stay as they are: at 10,000 rather than
# 700 allocations, they left idle connections 1-1.5 KiB larger (temporary cycles from each connection's
# set-up, spread among what it keeps). `topics` 71,636 against 66,048 deliveries/s, p99 69 against 100 ms
# (medians of 5 interleaved runs); `idle` unchanged.
GC_THRESHOLDS = (700, 10, 100)

# Start-up: how often readiness is checked, and how long a broker may take to connect before the hub
# says it serves without one.
READY_POLL = 0.02
READY_GRACE = 1.0

# Room in the request line beyond the topics: lastEventId, ?token= (a JWT), format, heartbeat.
REQUEST_LINE_HEADROOM = 16 * 1024


def max_request_line(config: Config) -> int:
    """The longest request line (method, path and query) the server parses.

    A subscription at the topic limit must reach the hub, which refuses what it must in its JSON shape:
    aiohttp's default of 8190 bytes holds only ten 256-byte topics once percent-encoded, and answers past
    it with a plain-text 400 of its own."""
    return config.limits.max_topics * (len("&topic=") + 3 * MAX_TOPIC_BYTES) + REQUEST_LINE_HEADROOM


def runner_for(app: web.Application, config: Config) -> HubRunner:
    # The same runner settings in tests and production: handler cancellation tells a stream's handler
    # that its client is gone, which is how its subscription gets cleaned up.
    table = table_for(
        app[GUARD].connections, config.limits.max_http_connections_per_ip, config.server.trusted_proxies
    )
    return HubRunner(
        app,
        table=table,
        header_timeout=config.server.header_timeout,
        drain=app[DRAIN],
        keepalive_timeout=config.server.idle_timeout,
        handler_cancellation=True,
        shutdown_timeout=config.server.shutdown_timeout,
        access_log=None,
        max_line_size=max_request_line(config),
        fast=FastPublish(app),
    )


@dataclass
class Running:
    runner: HubRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start(config: Config, *, reuse_port: bool = False) -> Running:
    runner = runner_for(create_app(config), config)
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.server.host,
        config.server.port,
        reuse_port=reuse_port or None,
        backlog=4096,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{_display_host(config.server.host)}:{config.server.port}"
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {where}: {why}") from None
    return Running(runner, int(runner.addresses[0][1]))


def settle_collector() -> None:
    """Set the collector for a long-running server: what start-up made is kept for good, so full passes
    skip it, and passes come less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config: Config, *, reuse_port: bool = False) -> None:
    running = await start(config, reuse_port=reuse_port)
    settle_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    announcing = asyncio.create_task(announce(running, config), name="hub-announce")
    try:
        await stop.wait()
    finally:
        announcing.cancel()
        await running.runner.begin_drain()
        log.info("hub stopping: draining for up to %g s", config.server.shutdown_timeout)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await running.stop()


async def announce(running: Running, config: Config) -> None:
    """Say "hub ready" once it is (what /readyz answers), and until then that it serves without it."""
    fanout = running.runner.app[FANOUT]
    where = f"http://{_display_host(config.server.host)}:{running.port}"
    broker = "redis " + redact_url(config.redis.url) if config.redis.url else "memory"
    loop = asyncio.get_running_loop()
    started, warned = loop.time(), False
    while not fanout.ready:
        if not warned and loop.time() - started >= READY_GRACE:
            warned = True
            # The broker logs each failed attempt; this says what it means for the hub.
            log.warning(
                "hub serving on %s, broker not reachable yet (%s): publishes and subscribes answer 503 "
                "until it is",
                where,
                broker,
            )
        await asyncio.sleep(READY_POLL)
    log.info("hub ready on %s (broker: %s)", where, broker)


def _display_host(host: str) -> str:
    if ":" in host:
        return f"[{host}]"
    return host


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
