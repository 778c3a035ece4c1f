"""Where a Redis server is and how to log in to it, and connections opened to it.

The URL is read by redis-py (`ConnectionPool.from_url`, or a cluster client's node settings), so
that every option it takes there (`rediss://` with `ssl_cert_reqs`, `ssl_ca_certs` and the rest,
`unix://` sockets, username and password, the db) means the same on the hub's raw connections as on
redis-py's own. Never sends anything but the connection's setup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection, SSLConnection

from hub.brokers.transport.reply_reader import ReplyReader
from hub.brokers.transport.resp import pack

READ_SIZE = 1 << 16


class SetupRefused(ConnectionError):
    """Redis refused a connection's setup (AUTH, SELECT or CLIENT SETNAME): nothing else was sent on it."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str | None  # a unix socket's: host and port are unused then
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None = dataclasses.field(repr=False)  # never in a log line
    db: int = 0

    @classmethod
    def of(cls, connection: AbstractConnection) -> Endpoint:
        """The endpoint of a redis-py connection (made, never connected): its settings as redis-py read
        them from the URL and the client's options."""
        tls = connection.ssl_context.get() if isinstance(connection, SSLConnection) else None
        return cls(
            host=str(getattr(connection, "host", "localhost")),
            port=int(getattr(connection, "port", 6379) or 6379),
            path=getattr(connection, "path", None),
            tls=tls,
            username=connection.username,
            password=connection.password,
            db=int(connection.db or 0),
        )

    def setup(self, name: str) -> list[bytes]:
        """The commands a new connection sends first, each of which must succeed."""
        commands = []
        if self.password:
            credentials = (self.username, self.password) if self.username else (self.password,)
            commands.append(pack(b"AUTH", *credentials))
        if self.db:
            commands.append(pack(b"SELECT", self.db))
        commands.append(pack(b"CLIENT", b"SETNAME", name))
        return commands

    async def connect(self, name: str, within: float) -> RawConnection:
        """A connection opened and set up (AUTH, SELECT, CLIENT SETNAME `name`) within `within` seconds.

        Raises `TimeoutError`, an `OSError` (`SetupRefused` among them), `EOFError` or
        `hiredis.ProtocolError`."""
        async with asyncio.timeout(within):
            if self.path is not None:
                reader, writer = await asyncio.open_unix_connection(self.path)
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
            try:
                parser = hiredis.Reader()
                setup = self.setup(name)
                writer.write(b"".join(setup))
                for _ in setup:
                    reply = await _next_reply(reader, parser)
                    if isinstance(reply, hiredis.ReplyError):
                        raise SetupRefused(f"redis refused the connection's setup: {reply}")
            except BaseException:
                writer.close()
                raise
        return RawConnection(reader, writer, parser)

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"{self.host}:{self.port}"


@dataclass
class RawConnection:
    """An open, set up connection: its replies are read with `read` from then on."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parser: Any  # hiredis.Reader, holding whatever arrived after the setup's replies

    def read(self, on_reply: Callable[[Any], None], *, held: bool = False) -> ReplyReader:
        """Pass every reply from now on to `on_reply` (see `ReplyReader`)."""
        return ReplyReader.take_over(self.reader, self.writer, on_reply, self.parser, held=held)

    def close(self) -> None:
        self.writer.close()


async def _next_reply(reader: asyncio.StreamReader, parser: Any) -> Any:
    while (reply := parser.gets()) is False:
        data = await reader.read(READ_SIZE)
        if not data:
            raise EOFError("redis closed the connection")
        parser.feed(data)
    return reply
