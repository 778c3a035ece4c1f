"""The benchmark's load generator (bench/loadgen.c) counts what it is really sent: a server that drops,
repeats or reorders events is caught, and publishers taking turns on one topic are not mistaken for one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bench.load import build_loadgen
from hub.http.server import free_port


class Scrambler:
    """A small SSE server that delivers each published batch to every stream, misbehaving on request:
    `dup` sends every event twice, `swap` sends each connection's events in swapped pairs."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.streams: list[web.StreamResponse] = []
        self.held: dict[int, bytes] = {}

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.streams.append(response)
        await asyncio.Event().wait()  # open until the server stops
        return response

    async def publish(self, request: web.Request) -> web.Response:
        frames: list[bytes] = []
        connection = id(request.transport)
        doc = await request.json()
        for item in doc if isinstance(doc, list) else [doc]:  # a batch of one is the event alone
            frame = f"data: {item['data']}\n\n".encode()
            if self.mode == "dup":
                frames += [frame, frame]
            elif self.mode == "swap":
                held = self.held.pop(connection, None)
                if held is None:
                    self.held[connection] = frame
                else:
                    frames += [frame, held]
            else:
                frames.append(frame)
        for stream in self.streams:
            await stream.write(b"".join(frames))
        return web.json_response({"ok": True})


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(mode: str) -> int:
        scrambler = Scrambler(mode)
        app = web.Application()
        app.router.add_get("/events", scrambler.events)
        app.router.add_post("/publish", scrambler.publish)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


async def run_loadgen(
    port: int, *, pubconns: int, events: int = 40, subs: int = 4, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        str(build_loadgen()),
        *("--port", str(port), "--subs", str(subs), "--topics", "1", "--events", str(events)),
        *("--batch", "1", "--pipeline", "1", "--pubconns", str(pubconns), "--timeout", "3"),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    return json.loads(stdout.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("pubconns", [1, 3])
async def test_an_honest_server_gets_a_clean_count(serve, pubconns):
    figures = await run_loadgen(await serve("honest"), pubconns=pubconns)
    assert (figures["delivered"], figures["expected"]) == (160, 160)
    assert (figures["lost"], figures["duplicated"], figures["out_of_order"]) == (0, 0, 0)


async def test_repeated_events_are_counted_as_duplicates(serve):
    figures = await run_loadgen(await serve("dup"), pubconns=2)
    assert figures["duplicated"] == 160
    assert (figures["lost"], figures["out_of_order"]) == (0, 0)


@pytest.mark.parametrize("pubconns", [1, 3])
async def test_one_publishers_events_out_of_order_are_caught(serve, pubconns):
    figures = await run_loadgen(await serve("swap"), pubconns=pubconns, events=48)
    assert figures["out_of_order"] > 0


@pytest.mark.parametrize("broker_kind", ["memory"])
async def test_binary_publishes_through_a_real_hub_are_decoded_and_counted(hub):
    # --proto binary: octet-stream publishes, base64 SSE read back (the `*-binary` scenarios)
    figures = await run_loadgen(hub.running.port, pubconns=2, extra=("--proto", "binary"))
    assert (figures["delivered"], figures["expected"]) == (160, 160)
    assert (figures["lost"], figures["duplicated"], figures["out_of_order"]) == (0, 0, 0)
