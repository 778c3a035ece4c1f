"""The Redis Cluster broker: the Redis broker's scripts, run per partition, over sharded pub/sub.

Topics are hashed into partitions (`partitions`), each one hash slot: its counter, topic registry, retained
state, histories and one sharded channel, so the publish script stays atomic on one shard. An
event of topics in several partitions is published once in each (its copy there carries that
partition's topics), and a subscriber of several takes it from the lowest (`VectorCursor.duplicate`).

The modules, one concept each:
- `broker`: the `Broker` itself: partitioned publishes and the subscriptions; it hands reads to `reading`.
- `partitions`: topics to partitions, partitions to hash slots, key prefixes and channels.
- `publishing`: one publish's script calls, pipelined per node, and what their failures mean.
- `reading`: snapshots (each partition's retained state or history, and a sync token through its
  channel), history pages, and the positions a cluster id names.
- `links`: one raw RESP connection per cluster node this process needs (`NodeLink`, over the transport:
  `hub.brokers.transport`), holding an SSUBSCRIBE for each partition channel that node serves, and
  `Links`, which places partitions on them and follows the slot map when a slot moves (Redis sends
  `sunsubscribe`, or a `MOVED` reply) or a node's connection is lost (failover).
- `catch_up`: what this process has received of each partition, and the catch-up of a partition that was
  away from its history, with a continuity check: a promoted replica that lacks events this process
  already delivered starts a new epoch, and the streams resync with a `reset`.

Commands (publish, snapshots, history) go through redis-py's cluster client, which follows the slot map.
"""

from hub.brokers.cluster.broker import RedisClusterBroker, cluster_url

__all__ = ["RedisClusterBroker", "cluster_url"]
