"""Whether Redis takes a broker's publishes: a hub whose publishes fail is not ready.

Connections and ticks can all be well while every publish fails: Redis refuses them (a full Redis, a
read-only replica, a damaged counter), or does not answer them (paused: its sockets stay open, and the
next tick is up to a heartbeat interval away). `/readyz` must say so at once, or a load balancer keeps
sending publishers to a replica that fails them all. Once a publish failed, a probe runs until one goes
through again, since a replica that the balancer takes out of rotation gets no publishes to learn it from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0


class Refusals:
    def __init__(self, probe: Callable[[], Awaitable[None]], interval: float = PROBE_INTERVAL) -> None:
        self._probe = probe  # raises while publishes fail
        self._interval = interval
        self.refused = False
        self._task: asyncio.Task[None] | None = None

    def failed(self) -> None:
        self.refused = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._probing(), name="hub-publish-probe")

    def succeeded(self) -> None:
        if self.refused:
            log.info("redis takes publishes again")
        self.refused = False

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.wait([task])  # not `await task`: that would swallow a cancellation of our own

    async def _probing(self) -> None:
        while self.refused:
            await asyncio.sleep(self._interval)
            try:
                await self._probe()
            except Exception as exc:  # any failure is one more refusal: the probe goes on
                log.debug("publish probe refused: %s", exc)
            else:
                self.succeeded()
