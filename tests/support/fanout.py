"""The fan-out engine's side of a subscriber, for tests of the engine on its own: a transport that
records what is written to it, and a subscriber attached without HTTP."""

from __future__ import annotations

import asyncio
import time

from hub.engine.fanout import Fanout
from hub.engine.outbox import Outbox
from hub.wire.event import Draft
from hub.wire.formats import Format
from hub.wire.topics import Selector
from tests.support.waiting import settled


class RecordingTransport(asyncio.Transport):
    """Stands in for a client socket: records what the engine writes to it."""

    def __init__(self, stalled: bool = False) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.stalled = stalled
        self.aborted = False
        self.closed = False

    def write(self, data) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.writes)) if self.stalled else 0

    def is_closing(self) -> bool:
        return self.aborted or self.closed

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True


class BlockingTransport(RecordingTransport):
    """A socket whose writes hold the thread off the CPU for a while: to the engine, a round spent
    waiting for its core, as when another process holds it."""

    def write(self, data) -> None:
        time.sleep(0.002)
        super().write(data)


class BusyTransport(RecordingTransport):
    """A socket whose writes take the thread's CPU for a while, as a write through the TCP stack does."""

    def write(self, data) -> None:
        spin(0.00005)
        super().write(data)


def spin(seconds: float) -> None:
    """Run on the CPU for `seconds`, as a hub does handling requests."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def attach(
    fanout: Fanout,
    *selectors: str,
    max_buffer: int = 1 << 20,
    stalled: bool = False,
    format: Format = Format.SSE,
    transport: RecordingTransport | None = None,
):
    outbox = Outbox(
        tuple(map(Selector.parse, selectors)), heartbeat_event=False, max_buffer=max_buffer, format=format
    )
    snapshot = await fanout.subscribe(outbox, fanout.parse_since(None))
    transport = transport or RecordingTransport(stalled)
    fanout.start_writing(outbox, transport, snapshot.position)
    return outbox, transport


async def publish_in_rounds(fanout: Fanout, transports: list[RecordingTransport], rounds: int = 12) -> None:
    """One event on "t" at a time, each written to every transport before the next: a flush round each.
    The starved share is a running one: it takes a few rounds to rise."""
    for i in range(rounds):
        await fanout.publish([Draft(("t",), str(i))])
        await settled(lambda i=i: all(f"data: {i}\n".encode() in b"".join(t.writes) for t in transports))
