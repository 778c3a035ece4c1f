"""Typed application state: the only global state the hub has is what hangs off the app."""

from __future__ import annotations

from aiohttp import web

from hub.config import Config
from hub.fanout import Fanout
from hub.http.guard import Guard
from hub.metrics import Metrics

CONFIG = web.AppKey("config", Config)
FANOUT = web.AppKey("fanout", Fanout)
GUARD = web.AppKey("guard", Guard)
METRICS = web.AppKey("metrics", Metrics)
