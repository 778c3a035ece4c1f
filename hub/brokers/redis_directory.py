"""The directory on one Redis or a Redis Cluster: every process writes out its own streams, and reads
the others' when asked.

Each round (`presence.interval`) a process writes what changed in its roster: per selector a count
(`counts`, and `patterns` for the pattern selectors) and the members (`members`), in one pipeline to its
own slot. `counts` and `patterns` expire a few rounds after the last one, on Redis's clock: a process
that dies without a word drops out of every count by itself, and its members are read only while its
`counts` names their selector. A round that finds its `counts` gone (expired during a stall, or Redis
lost its data) writes everything again. Readers list the nodes from one sorted set and read all of them
in one pipeline, this process's own streams from its roster.

Commands (disconnects) go through a stream every process reads after each round: they take effect
within a round everywhere, at once in the process that was asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.exceptions

from hub.brokers.directory import Directory, Listing, Owner, local_counts, local_members, top_of
from hub.brokers.redis_keys import PresenceKeys
from hub.engine.roster import Roster
from hub.errors import BadRequest, BrokerUnavailable
from hub.wire.presence import Disconnect, Member, decode_disconnect, decode_member
from hub.wire.topics import Selector

log = logging.getLogger(__name__)

LIFETIME_ROUNDS = 5  # rounds after its last that a node's counts expire
MEMBERS_TTL = 3600.0  # seconds a members key outlives its last write (rewritten every REFRESH)
REFRESH = 600.0  # seconds between rewrites of everything, which renew the members keys
FORGET_NODES = 3600.0  # seconds after which a node that wrote nothing is dropped from the node list
CONTROL_LENGTH = 1000  # commands the control stream keeps
STREAMS = "\n"  # the field of `counts` holding the node's streams in all: no selector is a line break
ANSWER_TIMEOUT = 5.0  # seconds a request waits for Redis
# Seconds a shutdown gives to withdrawing its presence: a courtesy, since it expires by itself.
WITHDRAW_TIMEOUT = 0.5
# RedisClusterException (a cluster with no node reachable) is no RedisError.
_DOWN = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)


class RedisDirectory(Directory):
    def __init__(self, client: Any, prefix: str, node: str, interval: float) -> None:
        """`client`: redis-py's asyncio Redis, or RedisCluster."""
        super().__init__()
        self._client = client
        self._keys = PresenceKeys(prefix)
        self.node = node
        self.interval = interval
        self._lifetime_ms = int(LIFETIME_ROUNDS * interval * 1000)
        self._task: asyncio.Task[None] | None = None
        self._full = True  # write everything in the next round
        self._refreshed = 0.0
        self._written: set[str] = set()  # selectors with a members key of ours
        self._control: str | None = None  # the last command read
        self._failing = False
        self._counted = False  # its counts key held something after the last round

    async def start(self, roster: Roster, owner: Owner) -> None:
        await super().start(roster, owner)
        self._task = asyncio.create_task(self._run(), name="hub-presence")

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            # Bounded, as the heartbeats' stop is: a round stuck inside the Redis client must not hold
            # the shutdown up.
            done, _ = await asyncio.wait([task], timeout=self.interval + 1)
            if not done:
                log.warning("presence writer did not stop in time; going on")
        # Gone at once for the others, rather than in a few rounds.
        keys = self._keys
        try:
            async with asyncio.timeout(WITHDRAW_TIMEOUT):
                pipe = self._client.pipeline(transaction=False)
                pipe.zrem(keys.nodes, self.node)
                node = self.node
                pipe.delete(keys.alive(node), keys.counts(node), keys.patterns(node), keys.selectors(node))
                for selector in self._written:
                    pipe.delete(keys.members(self.node, selector))
                await pipe.execute()
        except (*_DOWN, TimeoutError) as exc:
            log.info("presence not withdrawn (it expires by itself): %s", exc)

    async def _run(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        # A cancellation a Redis client call swallowed still counts: the loop ends on it.
        while not task.cancelling():
            try:
                if self._control is None:
                    self._control = await self._newest_control()
                if await self._write():
                    continue  # it found its data gone: all of it again, now
                await self._read_control()
                await self._bury()
                if self._failing:
                    log.info("presence written again")
                    self._failing = False
            except (*_DOWN, TimeoutError) as exc:
                self._full = True  # what was taken from the roster may not have been written
                if not self._failing:
                    log.warning("presence not written: %s", exc)
                    self._failing = True
            await asyncio.sleep(self.interval)

    async def _write(self) -> bool:
        """One round; True when it finds its counts gone that it had written."""
        keys, node, roster = self._keys, self.node, self.roster
        counts, patterns = keys.counts(node), keys.patterns(node)
        full = self._full or time.monotonic() - self._refreshed > REFRESH
        changes = roster.take_changes()
        pipe = self._client.pipeline(transaction=False)
        # First: whether what it wrote is still there.
        pipe.pexpire(counts, self._lifetime_ms)
        now_ms = int(time.time() * 1000)
        pipe.zadd(keys.nodes, {node: now_ms})
        pipe.zremrangebyscore(keys.nodes, "-inf", now_ms - int(FORGET_NODES * 1000))
        pipe.pexpire(keys.nodes, int(FORGET_NODES * 1000))  # no key of presence is kept forever
        pipe.set(keys.alive(node), b"1", px=self._lifetime_ms)
        listed = keys.selectors(node)
        if full:
            pipe.delete(counts, patterns, listed)
            for selector in self._written - roster.members.keys():
                pipe.delete(keys.members(node, selector))
            self._written = set()
            selectors = list(roster.members)
        else:
            selectors = list(changes)
        for selector in selectors:
            group = roster.members.get(selector)
            members = keys.members(node, selector)
            if not group:
                pipe.hdel(counts, selector)
                pipe.hdel(patterns, selector)
                pipe.srem(listed, selector)
                pipe.delete(members)
                self._written.discard(selector)
                continue
            pipe.hset(counts, selector, len(group))
            pipe.sadd(listed, selector)
            if selector in roster.patterns:
                pipe.hset(patterns, selector, len(group))
            if full:
                pipe.delete(members)
                joined = {conn: m.encode() for conn, m in group.items()}
            else:
                delta = changes[selector]
                joined = {conn: m.encode() for conn, m in delta.items() if m is not None}
                left = [conn for conn, m in delta.items() if m is None]
                if left:
                    pipe.hdel(members, *left)
            if joined:
                pipe.hset(members, mapping=joined)
            pipe.pexpire(members, int(MEMBERS_TTL * 1000))
            self._written.add(selector)
        streams = roster.streams
        if streams:
            pipe.hset(counts, STREAMS, streams)
        else:
            pipe.hdel(counts, STREAMS)
        pipe.pexpire(counts, self._lifetime_ms)
        pipe.pexpire(patterns, self._lifetime_ms)
        pipe.pexpire(listed, int(MEMBERS_TTL * 1000))
        async with asyncio.timeout(self.interval * LIFETIME_ROUNDS):
            results = await pipe.execute()
        lost = not full and self._counted and not results[0]
        self._counted = streams > 0
        if full:
            self._full = False
            self._refreshed = time.monotonic()
        elif lost:
            self._full = True
            return True
        return False

    async def _bury(self) -> None:
        """Take the members of the nodes that died without a word off Redis, and tell the owner which
        streams of announced topics left with them. One process does it: the one whose ZREM wins."""
        others = await self._others()
        if not others:
            return
        keys = self._keys
        pipe = self._client.pipeline(transaction=False)
        for node in others:
            pipe.exists(keys.alive(node))
        dead = [node for node, alive in zip(others, await pipe.execute(), strict=True) if not alive]
        for node in dead:
            if not await self._client.zrem(keys.nodes, node):
                continue  # another process buries it
            selectors = [_text(raw) for raw in await self._client.smembers(keys.selectors(node))]
            owner = self.owner
            announced = [s for s in selectors if owner is not None and owner.announces(s)]
            if announced:
                pipe = self._client.pipeline(transaction=False)
                for selector in announced:
                    pipe.hvals(keys.members(node, selector))
                for selector, values in zip(announced, await pipe.execute(), strict=True):
                    for raw in values:
                        member = decode_member(raw)
                        if member is not None and owner is not None:
                            owner.left(member, selector)
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(keys.counts(node), keys.patterns(node), keys.selectors(node))
            for selector in selectors:
                pipe.delete(keys.members(node, selector))
            await pipe.execute()
            log.info("presence of node %s, gone without a word, cleared (%d selectors)", node, len(selectors))

    async def _others(self) -> list[str]:
        names = await self._client.zrangebyscore(
            self._keys.nodes, int((time.time() - FORGET_NODES) * 1000), "+inf"
        )
        return [n for n in (_text(name) for name in names) if n != self.node]

    async def _remote_counts(self, topic: str) -> tuple[list[str], dict[tuple[str, str], int]]:
        """The other nodes, and (node, selector) -> streams for `topic`'s selectors on each."""
        nodes = await self._others()
        if not nodes:
            return nodes, {}
        pipe = self._client.pipeline(transaction=False)
        for node in nodes:
            pipe.hget(self._keys.counts(node), topic)
            pipe.hgetall(self._keys.patterns(node))
        results = await pipe.execute()
        found: dict[tuple[str, str], int] = {}
        parts = topic.split("/")
        for i, node in enumerate(nodes):
            exact, patterns = results[2 * i], results[2 * i + 1]
            if (n := _count(exact)) > 0:
                found[node, topic] = n
            for raw, value in (patterns or {}).items():
                selector = _selector(_text(raw))
                if selector is not None and selector.matches_segments(parts) and (n := _count(value)) > 0:
                    found[node, selector.text] = n
        return nodes, found

    async def counts(self, topic: str) -> dict[str, int]:
        totals = Counter(local_counts(self.roster, topic))
        async with _answering():
            _, found = await self._remote_counts(topic)
        for (_, selector), n in found.items():
            totals[selector] += n
        return dict(totals)

    async def members(self, topic: str, limit: int) -> list[tuple[str, Member]]:
        listed = local_members(self.roster, topic, limit)
        async with _answering():
            _, found = await self._remote_counts(topic)
            wanted = [key for key in found if len(listed) < limit]
            if not wanted:
                return listed
            pipe = self._client.pipeline(transaction=False)
            for node, selector in wanted:
                pipe.hscan(self._keys.members(node, selector), 0, count=limit)
            pages = await pipe.execute()
        for (_, selector), (_, page) in zip(wanted, pages, strict=True):
            for raw in page.values():
                member = decode_member(raw)
                if member is not None and len(listed) < limit:
                    listed.append((selector, member))
        return listed

    async def top(self, limit: int) -> Listing:
        totals = Counter(self.roster.counts())
        streams = self.roster.streams
        async with _answering():
            nodes = await self._others()
            pipe = self._client.pipeline(transaction=False)
            for node in nodes:
                pipe.hgetall(self._keys.counts(node))
            results = await pipe.execute() if nodes else []
        for counts in results:
            for raw, value in (counts or {}).items():
                name = _text(raw)
                if name == STREAMS:
                    streams += _count(value)
                elif _selector(name) is not None:
                    totals[name] += _count(value)
        return streams, top_of(totals, limit)

    async def send(self, command: Disconnect) -> None:
        async with _answering():
            pipe = self._client.pipeline(transaction=False)
            pipe.xadd(
                self._keys.control,
                {"n": self.node, "c": command.encode()},
                maxlen=CONTROL_LENGTH,
                approximate=True,
            )
            pipe.pexpire(self._keys.control, int(FORGET_NODES * 1000))
            await pipe.execute()

    async def _newest_control(self) -> str:
        newest = await self._client.xrevrange(self._keys.control, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def _read_control(self) -> None:
        while True:
            assert self._control is not None
            read = await self._client.xread({self._keys.control: self._control}, count=100)
            entries = read[0][1] if read else []
            for entry_id, fields in entries:
                self._control = _text(entry_id)
                if _text(fields.get(b"n", b"")) == self.node:
                    continue
                command = decode_disconnect(fields.get(b"c", b""))
                if command is None:
                    log.warning("a control command that is not one, ignored: %r", fields)
                    continue
                if self.owner is not None:
                    self.owner.obey(command)
            if len(entries) < 100:
                return


@asynccontextmanager
async def _answering() -> AsyncIterator[None]:
    """A read or a command for a request: bounded in time, and a 503 when Redis does not answer."""
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            yield
    except (*_DOWN, TimeoutError) as exc:
        raise BrokerUnavailable(f"presence could not be read or sent: {exc or 'timed out'}") from None


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _count(raw: object) -> int:
    try:
        return max(int(raw), 0) if isinstance(raw, bytes | str) else 0
    except ValueError:
        return 0


def _selector(text: str) -> Selector | None:
    try:
        return Selector.parse(text)
    except BadRequest:
        return None
