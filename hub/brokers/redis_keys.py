"""Every Redis key and channel name the hub uses, in one place; the Lua scripts take theirs from here
(KEYS, and the history and channel prefixes in ARGV: see `hub.brokers.script_args`).

What they hold: the sequence hash (`epoch`, `seq`, and `dropped`, the drop floor of `history.ttl`), the
topic registry (a sorted set scored by each topic's last seq), the retained-state hash, and per topic
`<prefix>:h:<topic>`, a stream whose entry ids are `<seq>-0` with fields `m` (the envelope), `t` (Redis
time, ms, for the age bound) and `p` (the seq of the topic's previous event: the first retained entry's
`p` says whether anything after a given id was trimmed, exactly). Two name indexes, sorted sets of score
0 (ordered by name): every topic of the registry, and every topic with retained state; a pattern reads
the names under its literal prefix there, not the whole registry.
"""

from __future__ import annotations

from hub.wire.topics import Selector, glob_escape


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        # `<prefix>:h:<topic>`: a topic's history stream; `<prefix>:t:<topic>`: its channel on one Redis.
        self.history_prefix = f"{prefix}:h:"
        self.channel_prefix = f"{prefix}:t:"
        self._channel_prefix = self.channel_prefix.encode()
        # On a cluster: the one sharded channel that carries every event of a partition's topics.
        self.shard_channel = f"{prefix}:events".encode()
        # The id counter and the epoch that tells ids from before a data loss apart.
        self.sequence = f"{prefix}:seq"
        self.topics = f"{prefix}:topics"  # every topic with history, scored by its last seq
        self.retained = f"{prefix}:retained"  # topic -> envelope of its retained event
        # The same names ordered by name (score 0), so a pattern reads only those under its prefix.
        self.topic_names = f"{prefix}:topics:names"
        self.retained_names = f"{prefix}:retained:names"
        self.names_cursor = f"{prefix}:topics:names:cursor"  # how far an older hub's topics are indexed
        # With `history.ttl`: the counter's value at times (score: ms), so the registry (by last seq) says
        # which topics no one has published to since a time (see `hub.brokers.topic_ttl`).
        self.marks = f"{prefix}:topics:marks"

    @classmethod
    def of_partition(cls, prefix: str, tag: str) -> RedisKeys:
        """A cluster partition's keys: `<prefix>:{<tag>}:...`, so the hash tag alone picks their slot."""
        return cls(f"{prefix}:{{{tag}}}")

    @property
    def publish_indexes(self) -> list[str]:
        """The publish script's KEYS after the token: the name indexes and their cursor."""
        return [self.topic_names, self.retained_names, self.names_cursor]

    @property
    def snapshot_keys(self) -> list[str]:
        """The snapshot script's KEYS (a cluster adds histories after them)."""
        return [self.sequence, self.topics, self.retained, self.topic_names, self.retained_names]

    @property
    def sweep_keys(self) -> list[str]:
        """The sweep script's KEYS (see `hub.brokers.topic_ttl`)."""
        return [*self.snapshot_keys, self.marks]

    def channel(self, topic: str) -> bytes:
        return self._channel_prefix + topic.encode()

    def subscription(self, selector: Selector) -> tuple[bool, bytes]:
        """(is_pattern, name) to SUBSCRIBE or PSUBSCRIBE for a selector."""
        if selector.is_pattern:
            return True, (glob_escape(self.channel_prefix) + selector.glob()).encode()
        return False, self.channel(selector.text)

    def publish_token(self, token: str) -> str:
        return f"{self.prefix}:pub:{token}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def history(self, topic: str) -> str:
        return self.history_prefix + topic

    def tick(self, node: str) -> bytes:
        return f"{self.prefix}:tick:{node}".encode()


class PresenceKeys:
    """Presence's keys (`hub.brokers.redis_directory`). A process's own under a hash tag of its node, so
    that what it writes each round goes to one slot of a cluster; the shared ones under one tag."""

    def __init__(self, prefix: str) -> None:
        # node -> when it last wrote (ms, its own clock): who to look for, and who to forget.
        self.nodes = f"{prefix}:{{presence}}:nodes"
        self.control = f"{prefix}:{{presence}}:control"  # a stream of commands every process obeys
        self._node = f"{prefix}:{{presence:"

    def alive(self, node: str) -> str:
        """Set for a few rounds by each of the node's; gone, the node is dead and may be cleared."""
        return f"{self._node}{node}}}:alive"

    def selectors(self, node: str) -> str:
        """Every selector the node has a members key of: what to clear once it is dead."""
        return f"{self._node}{node}}}:selectors"

    def counts(self, node: str) -> str:
        """selector -> the node's streams of it; expires with the node."""
        return f"{self._node}{node}}}:counts"

    def patterns(self, node: str) -> str:
        """The pattern selectors of `counts`, with theirs: a topic's count reads them all."""
        return f"{self._node}{node}}}:patterns"

    def members(self, node: str, selector: str) -> str:
        """conn -> member (`hub.wire.presence.Member`) of the node's streams of a selector."""
        return f"{self._node}{node}}}:m:{selector}"
