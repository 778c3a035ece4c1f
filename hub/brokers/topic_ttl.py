"""`history.ttl` on Redis and Redis Cluster: topics with no publish for that long leave no key behind.

A topic's own key (its history stream) expires by itself: the publish script keeps its expiry between
`ttl` and `ttl * 9/8` after the topic's last publish (rewriting it only once it is below `ttl`). What it
shares with other topics cannot expire per member: the registry, the two name indexes and the retained
hash. A sweeper in every hub process takes the idle topics out of them, a batch per script call, every
`sweep_interval(ttl)` (hubs sweeping one Redis do each other's work).

Which topics are idle, at no cost to a publish: the registry is already scored by each topic's last seq,
and each sweep marks the counter's value with the time (`RedisKeys.marks`). Every seq up to a mark was
issued by its time, so the topics scored up to the newest mark at least `ttl` old had no publish since:
they are dropped at most two sweep intervals past their ttl, never before it. A topic an older hub wrote
is in the registry too: it goes `ttl` after the first mark.

Before it forgets a topic, the sweep raises the drop floor (the sequence hash's `dropped`) to the topic's
last seq: a resume from before it gets a `reset`, never a silent gap (see `hub.brokers.redis_scripts`).
The sweep must never touch a topic published within `ttl`, nor a live stream: pub/sub is not keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

import redis.exceptions

from hub.brokers.redis_keys import RedisKeys
from hub.brokers.script_args import sweep_call, ttl_ms
from hub.config import HistoryConfig

log = logging.getLogger(__name__)

SWEEP_BATCH = 500  # topics one script call drops: a few milliseconds of Redis' time
SWEEP_INTERVAL_MAX = 30.0  # seconds; a topic outlives its ttl by at most two of these
SWEEP_INTERVAL_MIN = 0.05

# KEYS and ARGV: see `hub.brokers.script_args.sweep_call`. Returns the topics dropped.
SWEEP = """
local seq_key, topics_key, retained_key, names_key, retained_names_key, marks_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local history_prefix, ttl, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local seq = redis.call('HGET', seq_key, 'seq')
if not seq or #seq > 16 or not string.match(seq, '^%d+$') then
  return 0  -- nothing published yet, or a counter the next publish repairs first
end
if redis.call('EXISTS', topics_key) == 0 then
  redis.call('DEL', marks_key)  -- no topic to tell the age of: nothing left but the counter
  return 0
end
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local newest = redis.call('ZREVRANGE', marks_key, 0, 0)[1]
if newest and tonumber(newest) > tonumber(seq) then
  redis.call('DEL', marks_key)  -- the counter went back (repaired): its marks would drop topics early
end
redis.call('ZADD', marks_key, 'NX', now, seq)  -- NX: a seq's first time is the one that holds
local due = redis.call('ZREVRANGEBYSCORE', marks_key, now - ttl, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #due == 0 then
  return 0
end
redis.call('ZREMRANGEBYSCORE', marks_key, '-inf', '(' .. due[2])  -- older marks say less than this one
local idle = redis.call('ZRANGEBYSCORE', topics_key, '-inf', due[1], 'LIMIT', 0, batch)
if #idle == 0 then
  return 0
end
local floor = tonumber(redis.call('HGET', seq_key, 'dropped') or '0') or 0
local histories = {}
for k, topic in ipairs(idle) do
  local last = tonumber(redis.call('ZSCORE', topics_key, topic))
  if last > floor then
    floor = last
  end
  histories[k] = history_prefix .. topic
end
-- The floor first: a sweep cut short (a slot moving away) leaves it raised, never a topic gone below it.
redis.call('HSET', seq_key, 'dropped', string.format('%d', floor))
redis.call('DEL', unpack(histories))
redis.call('ZREM', topics_key, unpack(idle))
redis.call('ZREM', names_key, unpack(idle))
redis.call('ZREM', retained_names_key, unpack(idle))
redis.call('HDEL', retained_key, unpack(idle))
return #idle
"""


def sweep_interval(ttl: float) -> float:
    """How often a hub sweeps (and marks the counter): an eighth of the ttl, within bounds, so a topic
    outlives its ttl by at most a quarter of it (or a minute)."""
    return min(SWEEP_INTERVAL_MAX, max(SWEEP_INTERVAL_MIN, ttl / 8))


class TopicSweeper:
    """Drops the idle topics of some key sets (one Redis: one; a cluster: one per partition)."""

    def __init__(
        self,
        client: Any,  # redis.asyncio.Redis or RedisCluster: both register scripts alike
        keys: Sequence[RedisKeys],
        history: HistoryConfig,
        guard: contextlib.AbstractAsyncContextManager[Any] | None = None,
    ) -> None:
        self._script = client.register_script(SWEEP)
        self._keys = keys
        self._ttl = history.ttl
        self._ttl_ms = ttl_ms(history)
        # the cluster's bound on commands in flight
        self._guard = guard or contextlib.nullcontext()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._ttl_ms and self._task is None:
            self._task = asyncio.create_task(self._run(), name="hub-topic-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.wait([task], timeout=2.0)

    async def sweep(self) -> int:
        """One pass: drop every topic idle for the ttl now. Returns how many were dropped."""
        dropped = 0
        todo = list(self._keys)
        while todo:
            counts = await asyncio.gather(*(self._call(keys) for keys in todo))
            dropped += sum(counts)
            todo = [keys for keys, count in zip(todo, counts, strict=True) if count == SWEEP_BATCH]
        return dropped

    async def _call(self, keys: RedisKeys) -> int:
        call = sweep_call(keys, ttl_ms=self._ttl_ms, batch=SWEEP_BATCH)
        async with self._guard:
            return int(await self._script(keys=call.keys, args=call.args))

    async def _run(self) -> None:
        interval = sweep_interval(self._ttl)
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))  # hubs apart, not in step
            try:
                dropped = await self.sweep()
            except (redis.exceptions.RedisError, OSError) as exc:
                # Redis down or refusing writes: the next round tries again; nothing is lost meanwhile.
                log.debug("topic sweep failed: %s", exc)
                continue
            except Exception:
                log.exception("topic sweep failed")
                continue
            if dropped:
                log.debug("dropped %d topics idle for %.0f s", dropped, self._ttl)
