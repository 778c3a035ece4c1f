"""Commands over one raw RESP connection, pipelined: the Redis broker's publish path.

redis-py spends tens of microseconds of Python on every call (a pooled connection checked out, a retry
wrapper, a timeout, a script object's checks) and gives each concurrent call a connection of its own.
Here a call's command is written at once (not at the end of the loop iteration: on a busy hub that is
milliseconds later) and the replies come back in order over the one connection, so concurrent publishes
share their round trips to Redis.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis

from hub.brokers.transport.endpoint import RawConnection, SetupRefused
from hub.brokers.transport.reply_reader import ReplyReader

# Opens a connection and sets it up (see `Endpoint.connect`).
Opener = Callable[[], Awaitable[RawConnection]]
CLOSE_TIMEOUT = 1.0


class LinkDown(ConnectionError):
    """The command was never written: no connection could be opened in time (or its setup was
    refused), or the link is closed. Redis cannot have run it."""


class NoReply(Exception):
    """The command was written and its reply never came: Redis may or may not have run it (a paused
    Redis runs what waits in its socket once it goes on, even from a connection closed meanwhile)."""


class LinkLost(NoReply, ConnectionError):
    """The connection was lost after the command was written, before its reply."""


class LinkTimeout(NoReply, TimeoutError):
    """No reply came in time; the connection was dropped."""


class CommandLink:
    def __init__(self, open_connection: Opener, *, timeout: float) -> None:
        """`timeout` bounds the wait for a connection, and for each reply."""
        self._open = open_connection
        self._timeout = timeout
        # Its loop, once known: asyncio.get_running_loop() costs a getpid() syscall on Python 3.11.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: ReplyReader | None = None
        self._connecting: asyncio.Task[None] | None = None
        # One future per command written on the current connection, in order, with the loop time its
        # reply is due by. One timer watches the oldest (not a timeout per call).
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def call(self, command: bytes) -> Any:
        """The reply to `command` (packed RESP). An error reply is returned as a `hiredis.ReplyError`,
        not raised. Raises `LinkDown` when the command was not written, or a `NoReply` when it was:
        `LinkLost`, or `LinkTimeout` when no reply came in time (the connection is then dropped, since
        what it answers later could no longer be matched to its command).

        Cancelling the caller leaves the command running: its reply is read and discarded."""
        if self._closed:
            raise LinkDown("the link is closed")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is None:
            if self._connecting is None:
                self._connecting = asyncio.create_task(self._connect(), name="hub-redis-link")
            # Shielded: the attempt serves every caller waiting on it, not only this one.
            try:
                async with asyncio.timeout(self._timeout):
                    await asyncio.shield(self._connecting)
            except TimeoutError:
                raise LinkDown(f"no connection to redis within {self._timeout:g} s") from None
            writer = self._writer
            if writer is None:
                raise LinkDown("the connection was lost as it opened")
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, loop.time() + self._timeout))
        writer.write(command)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._timeout, self._watch, writer)
        return await future

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        writer, reading = self._writer, self._reading
        if writer is not None:
            self._drop(writer, LinkLost("the link was closed before the reply came"))
        if reading is not None:
            await asyncio.wait([reading.ended], timeout=CLOSE_TIMEOUT)

    async def _connect(self) -> None:
        try:
            connection = await self._open()
            if self._closed:
                connection.close()
                return
            writer = self._writer = connection.writer
            self._reading = reading = connection.read(self._on_reply)
            reading.ended.add_done_callback(
                lambda ended: self._drop(writer, LinkLost(f"lost the redis connection: {ended.exception()}"))
            )
        except SetupRefused as exc:
            raise LinkDown(str(exc)) from None
        except (OSError, EOFError, hiredis.ProtocolError) as exc:
            raise LinkDown(f"cannot connect to redis: {exc}") from None
        finally:
            self._connecting = None

    def _watch(self, writer: asyncio.StreamWriter) -> None:
        self._watchdog = None
        if writer is not self._writer or not self._waiting:
            return
        loop = asyncio.get_running_loop()
        due = self._waiting[0][1]
        if loop.time() >= due:
            self._drop(writer, LinkTimeout("redis did not answer in time"))
        else:
            self._watchdog = loop.call_at(due, self._watch, writer)

    def _on_reply(self, reply: Any) -> None:
        waiting = self._waiting
        if not waiting:
            raise hiredis.ProtocolError("a reply no command asked for")
        future, _ = waiting.popleft()
        if not future.done():  # done already: its caller gave up, the reply is dropped
            future.set_result(reply)

    def _drop(self, writer: asyncio.StreamWriter, error: NoReply) -> None:
        """End `writer`'s connection, if it is still the current one: every command on it fails."""
        if writer is not self._writer:
            return
        self._writer = None
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        writer.close()
