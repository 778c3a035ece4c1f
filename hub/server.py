"""Running the app: one process serving until SIGINT or SIGTERM, and workers sharing a port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from dataclasses import dataclass

from aiohttp import web

from hub.app import create_app
from hub.config import Config
from hub.redact import redact_url
from hub.topics import MAX_TOPIC_BYTES

log = logging.getLogger("hub")

# Room in the request line beyond the topics: lastEventId, ?token= (a JWT), format, heartbeat.
REQUEST_LINE_HEADROOM = 16 * 1024


def max_request_line(config: Config) -> int:
    """The longest request line (method, path and query) the server parses.

    A subscription at the topic limit must reach the hub, which refuses what it must in its JSON shape:
    aiohttp's default of 8190 bytes holds only ten 256-byte topics once percent-encoded, and answers past
    it with a plain-text 400 of its own."""
    return config.limits.max_topics * (len("&topic=") + 3 * MAX_TOPIC_BYTES) + REQUEST_LINE_HEADROOM


def runner_for(app: web.Application, config: Config) -> web.AppRunner:
    # The same runner settings in tests and production: handler cancellation tells a stream's handler
    # that its client is gone, which is how its subscription gets cleaned up.
    return web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=config.server.shutdown_timeout,
        access_log=None,
        max_line_size=max_request_line(config),
    )


@dataclass
class Running:
    runner: web.AppRunner
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
    await site.start()
    return Running(runner, int(runner.addresses[0][1]))


async def serve(config: Config, *, reuse_port: bool = False) -> None:
    running = await start(config, reuse_port=reuse_port)
    broker = "redis " + redact_url(config.redis.url) if config.redis.url else "memory"
    log.info(
        "hub ready on http://%s:%d (broker: %s)",
        _display_host(config.server.host),
        running.port,
        broker,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("hub stopping")
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await running.stop()


def _display_host(host: str) -> str:
    if ":" in host:
        return f"[{host}]"
    return host


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
