"""A hub under test: the real server (same runner settings as production) on a free port, and a real
HTTP client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.processes import RedisProcess
from hub.engine.fanout import Fanout
from hub.http.server import Running
from hub.http.state import FANOUT
from tests.support.sse_reader import SseStream


@dataclass
class HubUnderTest:
    running: Running
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.port}"

    @property
    def fanout(self) -> Fanout:
        return self.running.runner.app[FANOUT]

    async def publish(self, body: Any, expect: int = 200, **kwargs: Any) -> Any:
        async with self.session.post(self.url + "/publish", json=body, **kwargs) as resp:
            doc = await resp.json()
            assert resp.status == expect, doc
            return doc

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.post(self.url + path, **kwargs) as resp:
            assert resp.content_type == "application/json", await resp.text()
            return resp.status, await resp.json()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, *topics: str, headers: dict[str, str] | None = None, **params: str
    ) -> AsyncIterator[SseStream]:
        query = [("topic", t) for t in topics] + list(params.items())
        async with self.session.get(self.url + "/events", params=query, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            stream = SseStream(resp)
            await stream.until_comment()  # the preamble: from here on, nothing is missed
            yield stream


def kill_subscriber_connection(hub: HubUnderTest, redis: RedisProcess) -> None:
    """Cut a hub's pub/sub connection from the Redis side, as a network fault would."""
    broker: Any = hub.fanout.broker
    name = f"{broker._config.prefix}-sub-{broker.node}"
    for line in redis.command("CLIENT", "LIST").decode().splitlines():
        if f"name={name} " in line:
            redis.command("CLIENT", "KILL", "ID", line.split("id=")[1].split(" ")[0])
