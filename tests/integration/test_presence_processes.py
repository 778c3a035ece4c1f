"""Presence across real `hub serve` processes: one killed without a word drops out of the counts and
presence, and the streams it held leave the topics that announce joins and leaves."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from bench.processes import HubProcess
from tests.support.sse_reader import SseStream

ENV = {"HUB_PRESENCE_INTERVAL": "0.2", "HUB_PRESENCE_EVENTS": "chat/**", "HUB_REDIS_PREFIX": "presence"}


@pytest.mark.parametrize("redis", ["redis_server", "redis_cluster"])
async def test_a_killed_process_leaves_the_counts_and_its_streams_leave_their_topics(
    processes, request, redis
):
    url = request.getfixturevalue(redis).url
    prefix = {"HUB_REDIS_PREFIX": f"presence-{redis}"}
    one, two = (HubProcess("--redis", url, env={**ENV, **prefix}) for _ in range(2))
    processes.extend([one, two])
    await asyncio.gather(one.ready(), two.ready())
    async with (
        aiohttp.ClientSession() as session,
        session.get(one.url + "/events", params={"topic": "$presence/chat/1"}) as watching,
        session.get(two.url + "/events", params={"topic": "chat/1", "name": "ann"}) as ann,
    ):
        watcher = SseStream(watching)
        await watcher.until_comment()
        conn = ann.headers["Hub-Connection-Id"]
        joined = await watcher.next_event()
        assert joined.event == "join"
        assert orjson.loads(joined.data)["conn"] == conn

        async def counted() -> int:
            async with session.get(one.url + "/topics/chat/1/subscribers") as resp:
                return int((await resp.json())["subscribers"])

        async with asyncio.timeout(5):
            while await counted() != 1:
                await asyncio.sleep(0.05)
        two.kill()
        left = await watcher.next_event(timeout=10)
        assert left.event == "leave"
        assert orjson.loads(left.data) == {**orjson.loads(joined.data)}
        assert await counted() == 0
        async with session.get(one.url + "/topics/chat/1/presence") as resp:
            assert (await resp.json())["members"] == []
        await asyncio.sleep(1)
        assert watcher.events == []  # one leave, from the one process that cleared it
