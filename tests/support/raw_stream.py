"""A curl-like client on a bare socket: one GET, its headers, and its body decoded as it arrives
(chunked or not). Nothing of aiohttp's client is involved, so what is asserted is what is on the wire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode


@dataclass
class RawStream:
    reader: asyncio.StreamReader
    status: int
    headers: dict[str, str]  # lower-case names
    chunked: bool
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False

    async def read_more(self) -> None:
        if self.ended:
            raise EOFError("the body ended")
        if not self.chunked:
            data = await self.reader.read(65536)
            if not data:
                self.ended = True
            self.body += data
            return
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        data = await self.reader.readexactly(size + 2)
        assert data.endswith(b"\r\n")
        if size == 0:
            self.ended = True
        self.body += data[:-2]

    async def until(self, predicate: object, timeout: float = 10.0) -> bytes:
        """Read until `predicate(body)` holds (a callable), or the body holds `predicate` (bytes)."""
        async with asyncio.timeout(timeout):
            while not (predicate(bytes(self.body)) if callable(predicate) else predicate in self.body):
                await self.read_more()
        return bytes(self.body)

    async def lines(self, n: int, timeout: float = 10.0) -> list[bytes]:
        """The first `n` complete lines of the body, empty ones (heartbeats) left out."""

        def enough(body: bytes) -> bool:
            return len([line for line in body.split(b"\n")[:-1] if line]) >= n

        body = await self.until(enough, timeout)
        return [line for line in body.split(b"\n")[:-1] if line][:n]

    async def end(self, timeout: float = 10.0) -> bytes:
        async with asyncio.timeout(timeout):
            while not self.ended:
                await self.read_more()
        return bytes(self.body)


@contextlib.asynccontextmanager
async def open_stream(
    base_url: str,
    path: str,
    params: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    http10: bool = False,
) -> AsyncIterator[RawStream]:
    host, _, port = base_url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        target = path + ("?" + urlencode(params) if params else "")
        lines = [f"GET {target} HTTP/{'1.0' if http10 else '1.1'}", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        status, parsed = parse_head(head)
        yield RawStream(reader, status, parsed, parsed.get("transfer-encoding", "").lower() == "chunked")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """A response's status and headers (names lower-cased) from its head, the blank line included."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers
