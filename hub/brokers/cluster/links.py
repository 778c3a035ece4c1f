"""The cluster broker's pub/sub links: one raw RESP connection per cluster node this process needs,
holding an SSUBSCRIBE for each partition channel that node serves, and the placement of partitions on
them, which follows the slot map when a slot moves (Redis sends `sunsubscribe`, or a `MOVED` reply) or a
node's connection is lost (failover)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

import hiredis
from redis.asyncio.cluster import RedisCluster

from hub.brokers.cluster.catch_up import PartitionReceiver
from hub.brokers.cluster.partitions import Partitions
from hub.brokers.transport.endpoint import Endpoint, RawConnection
from hub.brokers.transport.reply_reader import hold
from hub.brokers.transport.resp import pack
from hub.brokers.transport.supervisor import BACKOFF_MAX, BACKOFF_MIN, CommandRefused, supervise
from hub.config import RedisConfig
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 0.25  # slot map reads while a partition has no working link


class Links:
    """Which link serves each wanted partition, following the cluster's slot map."""

    def __init__(
        self,
        client: RedisCluster,
        config: RedisConfig,
        parts: Partitions,
        node: str,
        wanted: dict[int, dict[Selector, int]],
        receiver: PartitionReceiver,
        on_reconnect: Callable[[], None],
    ) -> None:
        self._client = client
        self._connect_timeout = config.connect_timeout
        self._parts = parts
        self._name = f"{config.prefix}-sub-{node}"  # every link's CLIENT SETNAME
        self._wanted = wanted
        self._receiver = receiver
        self._on_reconnect = on_reconnect
        self._links: dict[tuple[str, int], NodeLink] = {}
        self._route: dict[int, NodeLink] = {}
        self._refresh_task: asyncio.Task[None] | None = None
        self.closed = False
        self._reading_held = False  # the fan-out asked for no reading from the links for now

    def tasks(self) -> list[asyncio.Task[None]]:
        tasks = [link.task for link in self._links.values()]
        if self._refresh_task is not None:
            tasks.append(self._refresh_task)
        return tasks

    def close(self) -> None:
        self.closed = True
        for link in self._links.values():
            link.stop()

    def clear(self) -> None:
        self._links.clear()
        self._route.clear()

    def hold_reading(self, held: bool) -> None:
        self._reading_held = held
        for link in self._links.values():
            link.hold(held)

    def bounce(self, p: int) -> None:
        link = self._route.get(p)
        if link is not None:
            link.bounce()

    def want(self, p: int) -> None:
        self._wanted.setdefault(p, {})
        link = self._link_for(p)
        if link is not None:
            self._route[p] = link
            link.add(p)

    def unwant(self, p: int) -> None:
        link = self._route.pop(p, None)
        if link is not None:
            link.remove(p)
            if not link.partitions:
                self._drop_link(link)

    def _link_for(self, p: int) -> NodeLink | None:
        try:
            node = self._client.nodes_manager.get_node_from_slot(self._parts.slots[p])
        except Exception:  # no slot map yet, or the slot uncovered: a refresh will place it
            self._refresh_soon()
            return None
        address = (str(node.host), int(node.port))
        link = self._links.get(address)
        if link is None:
            # The node's address, login and TLS settings, as redis-py would connect to it.
            endpoint = Endpoint.of(node.connection_class(**node.connection_kwargs))
            link = NodeLink(
                endpoint,
                self._name,
                self._parts,
                self,
                connect_timeout=self._connect_timeout,
                held=self._reading_held,
            )
            self._links[address] = link
        return link

    def _drop_link(self, link: NodeLink) -> None:
        if self._links.get(link.address) is link:
            del self._links[link.address]
        link.stop()

    def _refresh_soon(self) -> None:
        if self._refresh_task is None and not self.closed:
            self._refresh_task = asyncio.create_task(self._refresh(), name="hub-cluster-refresh")

    async def _refresh(self) -> None:
        """Read the slot map again and move every partition whose slot moved to its new node's link.

        Goes on reading it while a partition stays on a link that cannot connect: a failed primary is
        still in the map until its replica is promoted, a few seconds later."""
        backoff = BACKOFF_MIN
        try:
            while not self.closed:
                try:
                    await self._client.nodes_manager.initialize()
                except Exception as exc:
                    log.debug("redis cluster slot map refresh failed: %s", exc)
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                unplaced = False
                for p in list(self._wanted):
                    old = self._route.get(p)
                    link = self._link_for(p)
                    if link is None:
                        unplaced = True
                        continue
                    if link is old:
                        unplaced = unplaced or link.writer is None
                        continue
                    if old is not None:
                        old.remove(p)
                        if not old.partitions:
                            self._drop_link(old)
                    self._receiver.lose(p)
                    self._route[p] = link
                    link.add(p)
                if not unplaced:
                    return
                await asyncio.sleep(REFRESH_INTERVAL)
        finally:
            self._refresh_task = None

    # what the links read

    def on_subscribed(self, link: NodeLink, p: int) -> None:
        if self._route.get(p) is not link or p not in self._wanted:
            return
        self._receiver.on_subscribed(p)

    def on_moved(self, link: NodeLink, p: int) -> None:
        if self._route.get(p) is link:
            log.info("partition %d left %s:%d (slot moved); following it", p, *link.address)
            self._route.pop(p)
            link.remove(p, tell=False)
            self._receiver.lose(p)
        self._refresh_soon()

    def on_message(self, p: int, message: bytes) -> None:
        self._receiver.on_message(p, message)

    def on_link_down(self, link: NodeLink, served: bool) -> None:
        if served:
            self._on_reconnect()
        if self.closed:
            return
        for p in list(link.partitions):
            self._receiver.lose(p)
        self._refresh_soon()


class LinkEvents(Protocol):
    """What a link tells its owner."""

    def on_message(self, p: int, message: bytes) -> None: ...
    def on_subscribed(self, link: NodeLink, p: int) -> None: ...
    def on_moved(self, link: NodeLink, p: int) -> None: ...
    def on_link_down(self, link: NodeLink, served: bool) -> None: ...


class NodeLink:
    """One connection to one cluster node, holding the sharded subscriptions of the partitions it serves.
    The transport opens and supervises it; this says what it subscribes to and what its replies mean."""

    def __init__(
        self,
        endpoint: Endpoint,
        name: str,
        parts: Partitions,
        events: LinkEvents,
        *,
        connect_timeout: float,
        held: bool,
    ) -> None:
        self.endpoint = endpoint
        self.address = (endpoint.host, endpoint.port)
        self._name = name  # CLIENT SETNAME
        self._parts = parts
        self._events = events
        self._connect_timeout = connect_timeout
        self._held = held  # the fan-out asked for no reading for now
        self.partitions: set[int] = set()
        self.leaving: set[int] = set()  # SUNSUBSCRIBEd by us: its confirmation is no slot move
        self.writer: asyncio.StreamWriter | None = None
        self._served = False  # the current connection received anything: it worked, however it ended
        self._stopped = False
        self.task = asyncio.create_task(
            supervise(self._connect, self._serve, self._ended, running=self._running, where=str(endpoint)),
            name=f"hub-cluster-link-{endpoint}",
        )

    def add(self, p: int) -> None:
        self.partitions.add(p)
        self.leaving.discard(p)
        if self.writer is not None:
            self.writer.write(pack(b"SSUBSCRIBE", self._parts.channels[p]))

    def remove(self, p: int, *, tell: bool = True) -> None:
        self.partitions.discard(p)
        if tell and self.writer is not None:
            self.leaving.add(p)
            self.writer.write(pack(b"SUNSUBSCRIBE", self._parts.channels[p]))

    def bounce(self) -> None:
        """Drop the connection; the partitions subscribe again and catch up."""
        if self.writer is not None:
            self.writer.close()

    def hold(self, held: bool) -> None:
        self._held = held
        hold(self.writer, held)

    def stop(self) -> None:
        """No more connections (the task is cancelled too; this guards a cancellation lost on the way)."""
        self._stopped = True
        self.task.cancel()

    def _running(self) -> bool:
        return bool(self.partitions) and not self._stopped

    async def _connect(self) -> RawConnection:
        return await self.endpoint.connect(self._name, self._connect_timeout)

    async def _serve(self, connection: RawConnection) -> None:
        self.writer = connection.writer
        self._served = False
        reading = connection.read(self._on_reply, held=self._held)
        channels = self._parts.channels
        connection.writer.write(b"".join(pack(b"SSUBSCRIBE", channels[p]) for p in sorted(self.partitions)))
        try:
            await reading.ended  # raises why the connection ended
        finally:
            self._served = reading.received

    def _ended(self) -> bool:
        served, self._served = self._served, False
        self.writer = None
        self.leaving.clear()
        self._events.on_link_down(self, served)
        return served

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            if text.startswith("MOVED "):
                p = self._parts.of_slot(int(text.split()[1]))
                if p is not None:
                    self._events.on_moved(self, p)
                    return
            raise CommandRefused(text)
        if not isinstance(reply, list):
            return
        kind = reply[0]
        p = self._parts.of_channel(reply[1])
        if p is None:
            return
        if kind == b"smessage":
            if p in self.partitions:
                self._events.on_message(p, reply[2])
        elif kind == b"ssubscribe":
            if p in self.partitions:
                self._events.on_subscribed(self, p)
        elif kind == b"sunsubscribe":
            if p in self.leaving:
                self.leaving.discard(p)
            elif p in self.partitions:
                self._events.on_moved(self, p)  # Redis unsubscribes us when the slot leaves this node
