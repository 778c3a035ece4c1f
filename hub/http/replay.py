"""Writing a subscriber's replay under the same bound as its live output, never waiting forever.

Live output is cut off once a client's unsent bytes pass `sse.max_buffer` (see `Outbox`). A replay is
all there at once and often longer than that, so it is written as the client takes it: past the bound
the writer waits for the transport to drain, and a client whose unsent output stays over the bound for
`sse.drain_timeout` seconds is cut off, a slow consumer like any other (it resumes from the last event
it got). This must never hold what was written: the bodies are consumed one at a time. The live events
that arrive meanwhile are held for it under the same bound (`Fanout._hold`): once they pass it, the
subscriber is closed and its replay stops here too. A history download is written the same way
(`BoundedWriter`): a client that does not read it is cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from aiohttp import web


async def write_replay(
    response: web.StreamResponse,
    transport: asyncio.Transport,
    bodies: Iterator[bytes],
    *,
    max_buffer: int,
    drain_timeout: float,
    closed: Callable[[], bool],
) -> bool:
    """Write `bodies` to the prepared `response`; False if the client was cut off for not reading, or
    once `closed()` (checked between bodies) says that its stream was closed meanwhile."""
    out = BoundedWriter(response, transport, max_buffer=max_buffer, drain_timeout=drain_timeout)
    for body in bodies:
        if closed():
            transport.abort()
            return False
        if not await out.write(body):
            return False
    # aiohttp waits only once 64 KiB were written since it last did: the last bodies may leave the
    # buffer over the bound, which the first live event would take for a slow consumer.
    try:
        async with asyncio.timeout(drain_timeout):
            await _under(transport, max_buffer, closed)
    except TimeoutError:
        pass
    else:
        if not closed():
            return True
    transport.abort()  # what it holds goes at once, as a live slow consumer's does
    return False


class BoundedWriter:
    """Writes to a prepared response, cutting the client off once its unsent output stays over
    `max_buffer` for `drain_timeout` seconds."""

    __slots__ = ("_drain_timeout", "_max_buffer", "_response", "_transport")

    def __init__(
        self,
        response: web.StreamResponse,
        transport: asyncio.Transport,
        *,
        max_buffer: int,
        drain_timeout: float,
    ) -> None:
        self._response = response
        self._transport = transport
        self._drain_timeout = drain_timeout
        self._max_buffer = max_buffer
        # asyncio pauses the writer once the buffer is over the bound and resumes it as soon as it is
        # back under: aiohttp's write waits in between, and that wait is what the timeout bounds.
        transport.set_write_buffer_limits(high=max_buffer, low=max_buffer)

    async def write(self, body: bytes | bytearray | memoryview) -> bool:
        """False if the client was cut off for not reading: write nothing more."""
        step = self._max_buffer
        try:
            if len(body) <= step:
                async with asyncio.timeout(self._drain_timeout):
                    await self._response.write(body)
                return True
            # A body longer than the bound (a history page) goes a bound's worth at a time: a client
            # that reads it slowly but steadily keeps up, as on a live stream.
            view = memoryview(body)
            for start in range(0, len(view), step):
                async with asyncio.timeout(self._drain_timeout):
                    await self._response.write(view[start : start + step])
        except TimeoutError:
            self._transport.abort()  # what it holds goes at once, as a live slow consumer's does
            return False
        return True


async def _under(transport: asyncio.Transport, max_buffer: int, closed: Callable[[], bool]) -> None:
    # Polled, more and more seldom: this is once per stream, and asyncio tells only the protocol (which
    # is aiohttp's) of a buffer's progress.
    pause = 0.001
    while transport.get_write_buffer_size() > max_buffer and not transport.is_closing() and not closed():
        await asyncio.sleep(pause)
        pause = min(2 * pause, 0.1)
