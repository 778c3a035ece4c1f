"""Whether a call through redis-py wrote anything to Redis: what tells a publish that failed before
Redis could run it (a 503: nothing published) from one whose outcome is unknown (a 504).

redis-py raises the same `ConnectionError` and `TimeoutError` when a connection cannot be opened (nothing
sent) as when one breaks after the command went out, and its cluster pipeline retries, so the error it
ends with says nothing of the attempts before. So the connections of the hub's cluster client mark, in
the calling task's context, the moment they start writing a command (their own handshake aside); a call
that failed with nothing marked wrote nothing. This module must never decide anything itself: it only
records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection


class Sends:
    """What one call wrote: `sent` once any of its commands started going out."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


# Tasks copy their context when created: the pipeline's per-node tasks see the caller's Sends.
_current: ContextVar[Sends | None] = ContextVar("hub_redis_sends", default=None)


@contextlib.contextmanager
def watch() -> Iterator[Sends]:
    """Record the writes of what runs inside (and of the tasks it starts)."""
    sends = Sends()
    token = _current.set(sends)
    try:
        yield sends
    finally:
        _current.reset(token)


class MarkingConnection(Connection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            # Opening the connection writes its own handshake, none of the caller's commands; what fails
            # here failed before anything of the caller's went out.
            token = _current.set(None)
            try:
                await self.connect_check_health(check_health=False)
            finally:
                _current.reset(token)
        sends = _current.get()
        if sends is not None:
            sends.sent = True
        await super().send_packed_command(command, check_health)


def mark_sends(client: RedisCluster) -> None:
    """Have every connection `client` opens mark its writes. Before its first command: the nodes it
    knows so far, and those it will learn of, take the connection class from these settings."""
    kwargs: dict[str, Any] = client.connection_kwargs
    base = kwargs.get("connection_class", Connection)
    marking = base
    if base is Connection:
        marking = MarkingConnection
    elif not issubclass(base, MarkingConnection):  # rediss:// nodes have an SSLConnection
        marking = type(base.__name__, (MarkingConnection, base), {})
    kwargs["connection_class"] = marking
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = marking
