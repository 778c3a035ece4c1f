"""The cluster broker's pub/sub links: one raw RESP connection per cluster node this process needs,
holding an SSUBSCRIBE for each partition channel that node serves, and the placement of partitions on
them, which follows the slot map when a slot moves (Redis sends `sunsubscribe`, or a `MOVED` reply) or a
node's connection is lost (failover)."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster

from hub.brokers.cluster.catch_up import PartitionReceiver
from hub.brokers.cluster.partitions import Partitions
from hub.brokers.redis import RedisReplyError, authenticate
from hub.brokers.reply_reader import ReplyReader, hold
from hub.brokers.resp import pack
from hub.config import RedisConfig
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.05
BACKOFF_MAX = 5.0
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
        self.client = client
        self.config = config
        self.parts = parts
        self.node = node
        self._wanted = wanted
        self.receiver = receiver
        self.on_reconnect = on_reconnect
        self._links: dict[tuple[str, int], NodeLink] = {}
        self._route: dict[int, NodeLink] = {}
        self._refresh_task: asyncio.Task[None] | None = None
        self.closed = False
        self.reading_held = False  # the fan-out asked for no reading from the links for now

    def tasks(self) -> list[asyncio.Task[None]]:
        tasks = [link.task for link in self._links.values()]
        if self._refresh_task is not None:
            tasks.append(self._refresh_task)
        return tasks

    def close(self) -> None:
        self.closed = True

    def clear(self) -> None:
        self._links.clear()
        self._route.clear()

    def hold_reading(self, held: bool) -> None:
        self.reading_held = held
        for link in self._links.values():
            hold(link.writer, held)

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
            node = self.client.nodes_manager.get_node_from_slot(self.parts.slots[p])
        except Exception:  # no slot map yet, or the slot uncovered: a refresh will place it
            self._refresh_soon()
            return None
        address = (str(node.host), int(node.port))
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = NodeLink(self, address)
        return link

    def _drop_link(self, link: NodeLink) -> None:
        if self._links.get(link.address) is link:
            del self._links[link.address]
        link.task.cancel()

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
                    await self.client.nodes_manager.initialize()
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
                    self.receiver.lose(p)
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
        self.receiver.on_subscribed(p)

    def on_moved(self, link: NodeLink, p: int) -> None:
        if self._route.get(p) is link:
            log.info("partition %d left %s:%d (slot moved); following it", p, *link.address)
            self._route.pop(p)
            link.remove(p, tell=False)
            self.receiver.lose(p)
        self._refresh_soon()

    def on_link_down(self, link: NodeLink) -> None:
        for p in list(link.partitions):
            self.receiver.lose(p)
        self._refresh_soon()


class NodeLink:
    """One connection to one cluster node, holding the sharded subscriptions of the partitions it serves."""

    def __init__(self, links: Links, address: tuple[str, int]) -> None:
        self.links = links
        self.address = address
        self.partitions: set[int] = set()
        self.leaving: set[int] = set()  # SUNSUBSCRIBEd by us: its confirmation is no slot move
        self.writer: asyncio.StreamWriter | None = None
        self.task = asyncio.create_task(self._run(), name=f"hub-cluster-link-{address[0]}:{address[1]}")

    def add(self, p: int) -> None:
        self.partitions.add(p)
        self.leaving.discard(p)
        if self.writer is not None:
            self.writer.write(pack(b"SSUBSCRIBE", self.links.parts.channels[p]))

    def remove(self, p: int, *, tell: bool = True) -> None:
        self.partitions.discard(p)
        if tell and self.writer is not None:
            self.leaving.add(p)
            self.writer.write(pack(b"SUNSUBSCRIBE", self.links.parts.channels[p]))

    def bounce(self) -> None:
        """Drop the connection; the partitions subscribe again and catch up."""
        if self.writer is not None:
            self.writer.close()

    async def _run(self) -> None:
        links = self.links
        backoff = BACKOFF_MIN
        while self.partitions and not links.closed:
            writer: asyncio.StreamWriter | None = None
            served = False
            failed = ""
            try:
                reader, writer = await self._connect()
                self.writer = writer
                commands = [pack(b"CLIENT", b"SETNAME", f"{links.config.prefix}-sub-{links.node}")]
                commands += [pack(b"SSUBSCRIBE", links.parts.channels[p]) for p in sorted(self.partitions)]
                reading = ReplyReader.take_over(reader, writer, self._on_reply, held=links.reading_held)
                writer.write(b"".join(commands))
                try:
                    await reading.ended  # raises why the connection ended
                finally:
                    served = reading.received
            except (OSError, EOFError, hiredis.ProtocolError, TimeoutError) as exc:
                if served:
                    log.warning("link to %s:%d: %s", *self.address, exc)
                else:
                    failed = str(exc) or type(exc).__name__  # warned below, with the delay
            except Exception:
                log.exception("link to %s:%d failed; reconnecting", *self.address)
            finally:
                self.writer = None
                if writer is not None:
                    writer.close()
                self.leaving.clear()
                if not links.closed:
                    links.on_link_down(self)
            if served:
                links.on_reconnect()
                backoff = BACKOFF_MIN
            delay = backoff * random.uniform(0.5, 1.5)
            if failed:
                log.warning(
                    "redis node %s:%d not reachable: %s; retrying in %.1f s", *self.address, failed, delay
                )
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        config = self.links.config
        kwargs = self.links.client.connection_kwargs
        async with asyncio.timeout(config.connect_timeout):
            tls = ssl.create_default_context() if config.url.startswith("rediss") else None
            reader, writer = await asyncio.open_connection(*self.address, ssl=tls)
            await authenticate(reader, writer, kwargs)
        return reader, writer

    def _on_reply(self, reply: Any) -> None:
        links = self.links
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            if text.startswith("MOVED "):
                p = links.parts.of_slot(int(text.split()[1]))
                if p is not None:
                    links.on_moved(self, p)
                    return
            raise RedisReplyError(text)
        if not isinstance(reply, list):
            return  # +OK to CLIENT SETNAME
        kind = reply[0]
        p = links.parts.of_channel(reply[1])
        if p is None:
            return
        if kind == b"smessage":
            if p in self.partitions:
                links.receiver.on_message(p, reply[2])
        elif kind == b"ssubscribe":
            if p in self.partitions:
                links.on_subscribed(self, p)
        elif kind == b"sunsubscribe":
            if p in self.leaving:
                self.leaving.discard(p)
            elif p in self.partitions:
                links.on_moved(self, p)  # Redis unsubscribes us when the slot leaves this node
