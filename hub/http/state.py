"""Typed application state: the only global state the hub has is what hangs off the app."""

from __future__ import annotations

import asyncio

from aiohttp import web

from hub.config import Config
from hub.engine.fanout import Fanout
from hub.engine.presence import Presence
from hub.http.admission import Guard
from hub.http.drain import Drain
from hub.http.metrics import Metrics

CONFIG = web.AppKey("config", Config)
FANOUT = web.AppKey("fanout", Fanout)
GUARD = web.AppKey("guard", Guard)
METRICS = web.AppKey("metrics", Metrics)
# The process's drain (SIGTERM): begun by the runner; requests under way read its deadlines.
DRAIN = web.AppKey("drain", Drain)
PRESENCE = web.AppKey("presence", Presence)
# Set when the app starts shutting down: the streams the fan-out does not own (the stats stream) end.
SHUTDOWN = web.AppKey("shutdown", asyncio.Event)
