"""The in-process broker: one hub process, nothing to install. Same contract as Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hub.brokers.base import Broker, BrokerSink
from hub.event import Draft, Event, format_id, new_epoch
from hub.topics import Selector


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self) -> None:
        self._sink: BrokerSink | None = None
        self._epoch = new_epoch()
        self._seq = 0

    async def start(self, sink: BrokerSink) -> None:
        self._sink = sink

    async def close(self) -> None:
        self._sink = None

    async def publish(self, drafts: Sequence[Draft]) -> list[str]:
        events = []
        for draft in drafts:
            self._seq += 1
            events.append(Event.from_draft(format_id(self._epoch, self._seq), draft))
        sink = self._sink
        if sink is not None:
            for event in events:
                sink.on_event(event)
        return [e.id for e in events]

    def subscribe(self, selector: Selector) -> asyncio.Future[None]:
        # Every event goes to the sink, which matches it locally: nothing to wait for.
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def unsubscribe(self, selector: Selector) -> None:
        pass

    async def tick(self) -> None:
        if self._sink is not None:
            self._sink.on_tick()

    @property
    def ready(self) -> bool:
        return self._sink is not None
