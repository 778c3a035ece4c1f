"""The ceiling: a bare SSE broadcaster on aiohttp, and nothing else.

Memory only; no ids, history, auth or validation. Each published event is encoded once into one HTTP
chunk, appended to every subscriber of its topic, and each subscriber's chunks of one loop iteration go
out in a single transport.write. uvloop. It is the simple fast loop, not a bound: the hub, which paces
its writes so that a busy moment's events share one, delivers more than this (BENCHMARKS.md); the ratio
shows what the hub's features cost and what its pacing wins back.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web


class Hub:
    def __init__(self) -> None:
        self.topics: dict[str, set[Subscriber]] = {}
        self.dirty: list[Subscriber] = []
        self.flush_scheduled = False

    def publish(self, topic: str, data: str) -> None:
        body = b"data: " + data.encode() + b"\n\n"
        chunk = b"%x\r\n%b\r\n" % (len(body), body)
        for sub in self.topics.get(topic, ()):
            if not sub.pending:
                self.dirty.append(sub)
            sub.pending.append(chunk)
        if self.dirty and not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for sub in dirty:
            if not sub.transport.is_closing():
                sub.transport.write(b"".join(sub.pending))
            sub.pending.clear()


class Subscriber:
    __slots__ = ("pending", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.pending: list[bytes] = []


HUB = web.AppKey("hub", Hub)


async def events(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    topic = request.query["topic"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await response.write(b": ok\n\n")
    assert request.transport is not None
    sub = Subscriber(request.transport)
    hub.topics.setdefault(topic, set()).add(sub)
    try:
        await asyncio.Future()  # until the client goes away (handler cancellation)
    finally:
        hub.topics[topic].discard(sub)
    return response


async def publish(request: web.Request) -> web.Response:
    doc = orjson.loads(await request.read())
    for item in doc if isinstance(doc, list) else [doc]:
        request.app[HUB].publish(item["topic"], item["data"])
    return web.Response(body=b"{}", content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[HUB] = Hub()
    app.router.add_get("/events", events)
    app.router.add_post("/publish", publish)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        handler_cancellation=True,
        loop=uvloop.new_event_loop(),
        backlog=4096,
    )


if __name__ == "__main__":
    main()
