"""`history.ttl` on Redis and Redis Cluster: topics with no publish for that long leave no key behind.

A topic's own key (its history stream) expires by itself: the publish script sets it to expire `ttl`
after each publish. What it shares with other topics cannot expire per member: the registry, the two
name indexes, the retained hash and the publish times (`RedisKeys.touched`). A sweeper in every hub
process takes out the topics whose last publish is older than `ttl`, a batch per script call, every
`sweep_interval(ttl)` (hubs sweeping the same Redis do each other's work; a second sweep finds nothing).

Before it forgets a topic, the sweep raises the drop floor (the sequence hash's `dropped`) to the topic's
last seq: a resume from before it gets a `reset`, never a silent gap (see `hub.brokers.redis_scripts`).
The sweep must never touch a topic published within `ttl`, nor a live stream: pub/sub is not keys.

Topics an older hub wrote (or one running with `ttl = 0`) have no publish time: the sweep enters them a
batch per call, stamped with the time it found them, so they too are dropped `ttl` later if no publish
comes.
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
from hub.config import HistoryConfig

log = logging.getLogger(__name__)

SWEEP_BATCH = 500  # topics one script call drops: a few milliseconds of Redis' time
SWEEP_INTERVAL_MAX = 30.0  # seconds; a topic outlives its ttl by at most about this
SWEEP_INTERVAL_MIN = 0.05

# KEYS: sequence hash, topic registry, retained hash, topic names, retained names, publish times, the
# cursor of entering an older hub's topics. ARGV: prefix, ttl (ms), batch. Returns the topics dropped.
SWEEP = """
local seq_key, topics_key, retained_key, names_key, retained_names_key, touched_key, cursor_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local prefix, ttl, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local idle = redis.call('ZRANGEBYSCORE', touched_key, '-inf', now - ttl, 'LIMIT', 0, batch)
if #idle > 0 then
  local floor = tonumber(redis.call('HGET', seq_key, 'dropped') or '0') or 0
  local histories = {}
  for k, topic in ipairs(idle) do
    local last = tonumber(redis.call('ZSCORE', topics_key, topic) or '0') or 0
    if last > floor then
      floor = last
    end
    histories[k] = prefix .. ':h:' .. topic
  end
  -- The floor first: a sweep cut short (a slot moving away) leaves it raised, never a topic gone below it.
  redis.call('HSET', seq_key, 'dropped', floor)
  redis.call('DEL', unpack(histories))
  redis.call('ZREM', topics_key, unpack(idle))
  redis.call('ZREM', names_key, unpack(idle))
  redis.call('ZREM', retained_names_key, unpack(idle))
  redis.call('HDEL', retained_key, unpack(idle))
  redis.call('ZREM', touched_key, unpack(idle))
end
-- Topics with no publish time (an older hub's): entered a batch per call, by last seq from a cursor.
if redis.call('ZCARD', touched_key) < redis.call('ZCARD', topics_key) then
  local from = redis.call('GET', cursor_key) or '0'
  local found = redis.call('ZRANGEBYSCORE', topics_key, '(' .. from, '+inf', 'LIMIT', 0, batch)
  if #found == 0 then
    redis.call('DEL', cursor_key)  -- at the end, still incomplete: go round again
  else
    local last = redis.call('ZSCORE', topics_key, found[#found])
    if #found == batch then
      -- the last seq's other topics (of one event), so the cursor can pass it
      found = redis.call('ZRANGEBYSCORE', topics_key, '(' .. from, last)
    end
    for _, topic in ipairs(found) do
      redis.call('ZADD', touched_key, 'NX', now, topic)
    end
    redis.call('SET', cursor_key, last)
  end
else
  redis.call('DEL', cursor_key)
end
return #idle
"""


def ttl_ms(history: HistoryConfig) -> int:
    """`history.ttl` as the scripts take it: ms, 0 for never (a ttl under 1 ms is still a ttl)."""
    return max(1, round(history.ttl * 1000)) if history.ttl > 0 else 0


def sweep_interval(ttl: float) -> float:
    """How often a hub sweeps: a quarter of the ttl, so a topic outlives it by a little, within bounds."""
    return min(SWEEP_INTERVAL_MAX, max(SWEEP_INTERVAL_MIN, ttl / 4))


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
        self._guard = guard  # the cluster's bound on commands in flight
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
        args = [keys.prefix, self._ttl_ms, SWEEP_BATCH]
        if self._guard is None:
            return int(await self._script(keys=keys.sweep_keys, args=args))
        async with self._guard:
            return int(await self._script(keys=keys.sweep_keys, args=args))

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
