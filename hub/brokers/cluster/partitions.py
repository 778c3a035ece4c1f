"""How a Redis Cluster deployment groups topics: a fixed number of partitions, each on one hash slot. Pure.

A cluster script can only touch keys of one hash slot, and ids must be ordered across the topics a
subscription reads without comparing clocks. So topics are hashed into partitions; each partition is one
hash tag holding its own counter, topic registry, retained state, histories and one sharded channel that
carries every event of its topics. Ids are positions in partitions (see `hub.wire.cluster_ids`).

The count is fixed per deployment: every hub process must agree on it, and changing it moves topics to
other counters (ids issued before then resume with a `reset`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from hub.brokers.redis_keys import RedisKeys
from hub.config import MAX_PARTITIONS
from hub.wire.topics import Selector


class Partitions:
    def __init__(self, count: int, prefix: str) -> None:
        if not 1 <= count <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1 to {MAX_PARTITIONS}")
        self.count = count
        self.all = tuple(range(count))
        tags = [_spread_tag(p, count) for p in self.all]
        self.slots = tuple(key_slot(tag.encode()) for tag in tags)
        # Keys and channel of partition p, hash-tagged so the tag alone picks the slot.
        self.keys = tuple(RedisKeys.of_partition(prefix, tag) for tag in tags)
        self.channels = tuple(keys.shard_channel for keys in self.keys)
        self._by_slot = {slot: p for p, slot in enumerate(self.slots)}
        self._by_channel = {channel: p for p, channel in enumerate(self.channels)}

    def of_topic(self, topic: str) -> int:
        return zlib.crc32(topic.encode()) % self.count

    def of_selector(self, selector: Selector) -> tuple[int, ...]:
        """The partitions a selector can read from: a pattern may match a topic in any of them."""
        if selector.is_pattern:
            return self.all
        return (self.of_topic(selector.text),)

    def of_selectors(self, selectors: Iterable[Selector]) -> tuple[int, ...]:
        found: set[int] = set()
        for selector in selectors:
            found.update(self.of_selector(selector))
        return tuple(sorted(found))

    def of_slot(self, slot: int) -> int | None:
        return self._by_slot.get(slot)

    def of_channel(self, channel: bytes) -> int | None:
        return self._by_channel.get(channel)


def _spread_tag(partition: int, count: int) -> str:
    """A hash tag whose slot falls in the partition's own share of the slot range, so partitions spread
    evenly over shards that own equal ranges (as `redis-cli --cluster create` assigns them)."""
    share = REDIS_CLUSTER_HASH_SLOTS / count
    low, high = int(partition * share), int((partition + 1) * share)
    k = 0
    while True:
        tag = f"p{partition}.{k}"
        if low <= key_slot(tag.encode()) < high:
            return tag
        k += 1
