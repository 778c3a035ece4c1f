"""Reading a live SSE stream with an independent parser (httpx-sse's), for assertions."""

from __future__ import annotations

import asyncio
import codecs
from dataclasses import dataclass, field

import aiohttp
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from httpx_sse._models import ServerSentEvent


@dataclass
class SseStream:
    response: aiohttp.ClientResponse
    events: list[ServerSentEvent] = field(default_factory=list)
    comments: int = 0
    raw: bytearray = field(default_factory=bytearray)
    _lines: SSELineDecoder = field(default_factory=SSELineDecoder)
    _decoder: SSEDecoder = field(default_factory=SSEDecoder)
    _has_data: bool = False
    _utf8: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")())

    async def next_event(self, timeout: float = 5.0) -> ServerSentEvent:
        async with asyncio.timeout(timeout):
            while not self.events:
                await self._read()
        return self.events.pop(0)

    async def take(self, n: int, timeout: float = 10.0) -> list[ServerSentEvent]:
        return [await self.next_event(timeout) for _ in range(n)]

    @property
    def last_event_id(self) -> str:
        """What a browser would send as Last-Event-ID now, position lines included."""
        return self._decoder._last_event_id

    async def until_comment(self, timeout: float = 5.0) -> None:
        seen = self.comments
        async with asyncio.timeout(timeout):
            while self.comments == seen:
                await self._read()

    async def _read(self) -> None:
        chunk = await self.response.content.readany()
        if not chunk:
            raise EOFError("stream ended")
        self.raw += chunk
        for line in self._lines.decode(self._utf8.decode(bytes(chunk))):
            if line.startswith(":"):
                self.comments += 1
            if line.partition(":")[0] == "data":
                self._has_data = True
            event = self._decoder.decode(line)
            # As a browser does: a block without a data line (a bare `retry:`) dispatches nothing.
            if event is not None and self._has_data:
                self.events.append(event)
            if not line:
                self._has_data = False

    async def ended(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await self._read()
                except (EOFError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                    return True
