"""A subscriber's replay over real sockets: written under `sse.max_buffer` like live output, a client that
does not read it is cut off and its memory returns; one that reads gets all of it, however long."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import tracemalloc

import pytest

from tests.support.ids import names_event
from tests.support.sse_reader import SseStream
from tests.support.waiting import settled

EVENTS = 60
DATA = 200_000  # 12 MB in all: more than the kernel's socket buffers take from a client that reads nothing
MAX_BUFFER = 256 * 1024


async def non_reader(port: int, path: str, rcvbuf: int = 4096) -> socket.socket:
    """A client that sends its request and never reads a byte of the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    await asyncio.get_running_loop().sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


@pytest.fixture
async def replaying_hub(hub_factory):
    hub = await hub_factory(sse__max_buffer=MAX_BUFFER, sse__drain_timeout=1.0)
    for i in range(EVENTS):
        await hub.publish({"topic": "public/r", "data": f"{i:03} " + "x" * DATA})
    return hub


@pytest.mark.timeout(120)
async def test_a_client_that_does_not_read_its_replay_is_cut_off_and_its_memory_returns(
    replaying_hub, caplog
):
    hub = replaying_hub
    gc.collect()
    tracemalloc.start()
    sockets: list[socket.socket] = []
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            sockets.append(await non_reader(hub.running.port, "/events?topic=public/**&lastEventId=earliest"))
        # Each once held the whole replay (and more) for as long as it stayed connected, never cut off.
        await settled(lambda: hub.fanout.counters["slow_consumers"] == 3, timeout=20)
        await settled(lambda: hub.fanout.registrations()["connections"] == 0)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
        for sock in sockets:
            sock.close()
    # Three replays of 12 MB each were pinned; what is left is noise (on a cluster, connections opened).
    assert held < EVENTS * DATA / 4, held
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    # The hub serves on: a reader of the same replay gets all of it.
    async with hub.subscribe("public/**", lastEventId="earliest") as stream:
        got = await stream.take(EVENTS, timeout=30)
    assert [e.data[:3] for e in got] == [f"{i:03}" for i in range(EVENTS)]


@pytest.mark.timeout(120)
async def test_a_reader_gets_a_replay_many_times_max_buffer_beside_a_non_reader(replaying_hub):
    hub = replaying_hub
    stuck = await non_reader(hub.running.port, "/events?topic=public/**&lastEventId=earliest")
    try:
        async with hub.subscribe("public/**", lastEventId="earliest") as stream:
            got = await stream.take(EVENTS, timeout=30)
            live = await hub.publish({"topic": "public/r", "data": "live"})
            after = await stream.next_event()
        await settled(lambda: hub.fanout.counters["slow_consumers"] == 1, timeout=20)
    finally:
        stuck.close()
    assert [e.data[:3] for e in got] == [f"{i:03}" for i in range(EVENTS)]
    assert sum(len(e.data) for e in got) > 40 * MAX_BUFFER
    assert after.data == "live"
    assert names_event(after.id, live["id"]), (after.id, live["id"])
    assert hub.fanout.counters["slow_consumers"] == 1  # the non-reader alone


async def test_a_reader_that_pauses_shorter_than_the_drain_timeout_is_not_cut(hub_factory):
    # A drain timeout ten times the pause: the reader parses 12 MB in Python, in the hub's own process,
    # beside the suite's other worker, and any stall of its reading past the timeout would cut it.
    hub = await hub_factory(sse__max_buffer=64 * 1024, sse__drain_timeout=5.0)
    for i in range(EVENTS):
        await hub.publish({"topic": "public/p", "data": f"{i:03} " + "y" * DATA})
    async with hub.session.get(
        hub.url + "/events", params={"topic": "public/p", "lastEventId": "earliest"}
    ) as resp:
        stream = SseStream(resp)
        first = await stream.next_event()
        await asyncio.sleep(0.5)  # long enough to fill every buffer on the way
        rest = await stream.take(EVENTS - 1, timeout=30)
    assert [e.data[:3] for e in [first, *rest]] == [f"{i:03}" for i in range(EVENTS)]
    assert hub.fanout.counters["slow_consumers"] == 0


async def trickle(sock: socket.socket, got: list[int], chunk: int = 16 * 1024, pause: float = 0.025) -> None:
    """Read `chunk` bytes every `pause` seconds (640 KB/s), counting them in `got`: fast enough never to
    stall a write for the drain timeout, much slower than the hub writes."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.sock_recv(sock, chunk)
        except ConnectionResetError:
            return
        if not data:
            return
        got.append(len(data))
        await asyncio.sleep(pause)


def hub_memory() -> int:
    """Bytes traced, but for those the test's own readers keep (their buffers only grow)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, "*/tests/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.timeout(120)
async def test_live_events_held_for_a_slow_replay_reader_are_bounded_in_bytes(hub_factory, broker_kind):
    # A reader that trickles its replay kept it going while every live event was held for it (up to
    # 10,000 of any size), then encoded all of them at once when it went live.
    hub = await hub_factory(sse__max_buffer=MAX_BUFFER, sse__drain_timeout=10.0)
    replay = EVENTS  # 12 MB: past what kernel buffers take, it trickles for 10 s or more
    for i in range(replay):
        await hub.publish({"topic": "public/r", "data": f"{i:03} " + "x" * DATA})
    flood = 20  # live events of DATA bytes each, published while the trickler is in its replay
    async with hub.subscribe("public/**", lastEventId="earliest") as stream:
        assert len(await stream.take(replay, timeout=30)) == replay  # live from here
        sock = await non_reader(hub.running.port, "/events?topic=public/**&lastEventId=earliest", 64 * 1024)
        got: list[int] = []
        reading = asyncio.create_task(trickle(sock, got))
        try:
            await settled(lambda: hub.fanout.registrations()["replaying"] == 1)
            gc.collect()
            tracemalloc.start()
            baseline = hub_memory()
            for i in range(flood):
                await hub.publish({"topic": "public/r", "data": f"L{i:02} " + "y" * DATA})
            # cut off once what is held for it passes sse.max_buffer, long before its replay would end
            await settled(lambda: hub.fanout.counters["slow_consumers"] == 1, timeout=5)
            await settled(lambda: hub.fanout.connections == 1)  # its replay stopped, its connection gone
            read = sum(got)
            # the live reader beside it gets every live event, and is not cut off
            live = [e.data[:3] for e in await stream.take(flood, timeout=30)]
            await settled(lambda: hub.fanout.registrations()["replaying"] == 0)
            gc.collect()
            held = hub_memory() - baseline
        finally:
            tracemalloc.stop()
            reading.cancel()
            sock.close()
    assert live == [f"L{i:02}" for i in range(flood)]
    assert hub.fanout.counters["slow_consumers"] == 1
    assert read < replay * DATA / 2, read
    if broker_kind != "memory":  # (the memory broker keeps the flood in its history, as it must)
        assert held < flood * DATA / 4, held
