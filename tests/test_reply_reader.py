"""A connection's replies read in the protocol callback, against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import hiredis
import pytest
import uvloop

from hub.brokers.transport.reply_reader import ReplyReader
from hub.brokers.transport.resp import pack


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Each test on both loops: the hub runs on uvloop, the in-process tests on asyncio's own."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def test_replies_come_in_order_and_those_the_handshake_read_along_come_first(redis_factory, run):
    async def check() -> None:
        redis = redis_factory()
        reader, writer = await connect(redis.port)
        parser = hiredis.Reader()
        writer.write(pack("PING") + pack("ECHO", "read along"))
        # A handshake reads until its own reply is parsed; the next one can come in the same read.
        read = b""
        while not read.endswith(b"read along\r\n"):
            read += await reader.read(1 << 16)
        parser.feed(read)
        assert parser.gets() == b"PONG"
        got: list[Any] = []
        reading = ReplyReader.take_over(reader, writer, got.append, parser)
        writer.write(b"".join(pack("ECHO", f"m{i}") for i in range(500)))
        async with asyncio.timeout(5):
            while len(got) < 501:
                await asyncio.sleep(0.01)
        assert got == [b"read along"] + [f"m{i}".encode() for i in range(500)]
        assert reading.received
        writer.close()
        with pytest.raises(EOFError):
            await reading.ended

    run(check())


def test_redis_closing_the_connection_ends_it_with_eof(redis_factory, run):
    async def check() -> None:
        redis = redis_factory()
        reader, writer = await connect(redis.port)
        reading = ReplyReader.take_over(reader, writer, lambda reply: None)
        writer.write(pack("CLIENT", "SETNAME", "closing") + pack("QUIT"))
        with pytest.raises(EOFError):
            await asyncio.wait_for(reading.ended, 5)
        assert writer.transport.is_closing()

    run(check())


def test_what_the_handler_raises_ends_the_connection_with_it(redis_factory, run):
    async def check() -> None:
        redis = redis_factory()
        reader, writer = await connect(redis.port)

        def refuse(reply: Any) -> None:
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(f"refused: {reply}")

        reading = ReplyReader.take_over(reader, writer, refuse)
        writer.write(pack("PING") + pack("NO-SUCH-COMMAND") + pack("PING"))
        with pytest.raises(RuntimeError, match="refused: ERR unknown command"):
            await asyncio.wait_for(reading.ended, 5)
        assert writer.transport.is_closing()  # nothing after the failure is read

    run(check())


def test_a_connection_already_at_its_end_is_ended_at_once(redis_factory, run):
    async def check() -> None:
        redis = redis_factory()
        reader, writer = await connect(redis.port)
        writer.write(pack("QUIT"))
        assert await reader.read(1 << 16) == b"+OK\r\n"
        assert await reader.read(1 << 16) == b""  # the stream saw the end before the take-over
        reading = ReplyReader.take_over(reader, writer, lambda reply: None)
        with pytest.raises(EOFError):
            await asyncio.wait_for(reading.ended, 1)
        writer.close()

    run(check())
