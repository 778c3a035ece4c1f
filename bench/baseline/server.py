"""The baseline: the SSE endpoint people write by hand. aiohttp + aiohttp-sse, and one redis-py PubSub
per subscriber, so Redis does the fan-out over one connection per browser. Memory-hungry and slow at
scale, and the reason the hub exists; it is measured so that the hub's figures have a floor too."""

from __future__ import annotations

import sys

import orjson
import redis.asyncio as aioredis
import uvloop
from aiohttp import web
from aiohttp_sse import sse_response

REDIS = web.AppKey("redis", aioredis.Redis)


async def events(request: web.Request) -> web.StreamResponse:
    pubsub = request.app[REDIS].pubsub()
    await pubsub.subscribe("t:" + request.query["topic"])
    try:
        async with sse_response(request) as response:
            await response.write(b": ok\n\n")
            async for message in pubsub.listen():
                if message["type"] == "message":
                    await response.send(message["data"].decode())
    finally:
        await pubsub.aclose()
    return response


async def publish(request: web.Request) -> web.Response:
    doc = orjson.loads(await request.read())
    async with request.app[REDIS].pipeline(transaction=False) as pipe:
        for item in doc if isinstance(doc, list) else [doc]:
            pipe.publish("t:" + item["topic"], item["data"])
        await pipe.execute()
    return web.Response(body=b"{}", content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[REDIS] = aioredis.Redis.from_url(sys.argv[2], max_connections=100_000)
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
