"""The pipelined command connection, against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import hiredis
import pytest
from redis.asyncio.connection import Connection

from bench.processes import RedisProcess
from hub.brokers.transport.commands import CommandLink, LinkDown, LinkLost, LinkTimeout
from hub.brokers.transport.endpoint import Endpoint
from hub.brokers.transport.resp import pack
from tests.support.waiting import settled


def link_to(port: int, *, timeout: float = 2.0, db: int = 0) -> CommandLink:
    endpoint = Endpoint.of(Connection(host="127.0.0.1", port=port, db=db))
    # The connection's own bound is long: an attempt made while Redis is paused completes once it goes
    # on, and the link's `timeout` alone decides what a caller waits.
    return CommandLink(lambda: endpoint.connect("under-test", 60), timeout=timeout)


@pytest.fixture
async def make_link(redis_factory) -> AsyncIterator[Callable[..., tuple[RedisProcess, CommandLink]]]:
    """A redis-server of the test's own and a link to it; every link is closed after the test."""
    links: list[CommandLink] = []

    def make(**kwargs: Any) -> tuple[RedisProcess, CommandLink]:
        redis = redis_factory()
        links.append(link_to(redis.port, **kwargs))
        return redis, links[-1]

    yield make
    for link in links:
        await link.close()


def named_clients(redis) -> list[str]:
    return [
        line for line in redis.command("CLIENT", "LIST").decode().splitlines() if "name=under-test" in line
    ]


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(make_link):
    redis, link = make_link()
    replies = await asyncio.gather(*(link.call(pack("INCR", "counter")) for _ in range(300)))
    assert replies == list(range(1, 301))  # written in call order, answered in call order
    keyed = await asyncio.gather(*(link.call(pack("ECHO", f"reply-{i}")) for i in range(50)))
    assert keyed == [f"reply-{i}".encode() for i in range(50)]
    assert len(named_clients(redis)) == 1
    await link.close()
    await settled(lambda: named_clients(redis) == [])


async def test_an_error_reply_is_returned_and_the_connection_goes_on(make_link):
    _redis, link = make_link()
    refused, after = await asyncio.gather(link.call(pack("NOSUCHCOMMAND")), link.call(pack("PING")))
    assert isinstance(refused, hiredis.ReplyError)
    assert after == b"PONG"


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(make_link):
    _redis, link = make_link()
    await link.call(pack("PING"))  # connected: the next call is written in this loop iteration
    abandoned = asyncio.ensure_future(link.call(pack("INCR", "n")))
    await asyncio.sleep(0)  # written, reply not read yet
    abandoned.cancel()
    assert await link.call(pack("GET", "n")) == b"1"  # the INCR ran; its reply went nowhere
    assert await link.call(pack("INCR", "n")) == 2


async def test_a_lost_connection_fails_the_calls_on_it_and_the_next_call_reconnects(make_link):
    redis, link = make_link()
    blocked = asyncio.ensure_future(link.call(pack("BLPOP", "nothing", 10)))
    behind = asyncio.ensure_future(link.call(pack("PING")))
    await asyncio.sleep(0.1)
    redis.call("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    for call in (blocked, behind):
        with pytest.raises(LinkLost):  # written, then lost: not a LinkDown, which promises it never ran
            await call
    assert await link.call(pack("PING")) == b"PONG"
    assert len(named_clients(redis)) == 1


async def test_no_redis_is_a_link_down_not_a_hang(make_link):
    redis, link = make_link()
    redis.kill()
    with pytest.raises(LinkDown):
        await link.call(pack("PING"))


async def test_a_paused_redis_times_out_and_the_link_recovers_once_it_answers_again(make_link):
    redis, link = make_link(timeout=0.3)
    assert await link.call(pack("PING")) == b"PONG"
    assert redis.proc is not None
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(LinkTimeout):
            await link.call(pack("INCR", "during-pause"))
        assert asyncio.get_running_loop().time() - started < 1.0
        assert not link.connected  # a late reply could not be matched to its call any more
        # A new connection cannot open (its setup is not answered): the command is never written.
        with pytest.raises(LinkDown):
            await link.call(pack("INCR", "never-sent"))
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    assert await link.call(pack("PING")) == b"PONG"
    # What was written before the timeout ran once Redis went on, dropped connection or not: its
    # outcome was unknown, never "not run". What was never written did not run.
    async with asyncio.timeout(5):
        while await link.call(pack("GET", "during-pause")) != b"1":
            await asyncio.sleep(0.02)
    assert await link.call(pack("GET", "never-sent")) is None


async def test_each_new_connection_runs_the_setup_commands_first(make_link):
    redis, link = make_link(db=3)
    await link.call(pack("SET", "where", "db3"))
    assert b"db3:keys=1," in redis.command("INFO", "keyspace")
    redis.call("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    await asyncio.sleep(0.1)
    assert await link.call(pack("GET", "where")) == b"db3"  # reconnected, into db 3 again
    assert len(named_clients(redis)) == 1


async def test_a_refused_setup_fails_the_call(make_link):
    redis, link = make_link(db=100_000)
    with pytest.raises(LinkDown, match="setup"):
        await link.call(pack("PING"))
    assert named_clients(redis) == []
