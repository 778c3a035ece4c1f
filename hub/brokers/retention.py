"""What the memory broker keeps of its topics, and for how long: each topic's history within
`history.max_events` and `history.max_age`, all of them within `history.max_total_bytes`, and topics
with no publish for `history.ttl` dropped. Pure: no I/O, no clock of its own (every call says `now`).

Every bound costs O(1) amortized per event: topics are kept in order of their last publish (an
OrderedDict, moved to the end on publish), so the least recently published, the first to lose history
for space and the first past their ttl, are always at the front, and a sweep stops at the first topic
that is not due. Each entry is popped once, each topic dropped once.

A topic whose history is emptied (for space, or by age) stays registered, with the seq it was trimmed
to, until its ttl: a resume from before that seq gets a reset, exactly for that topic. Once dropped, the
topic is forgotten; `dropped_to` (the highest last seq of any topic dropped) stands in for it: a topic
created while it is set may continue one that was dropped, so its history counts as trimmed to it. It
must never forget an entry without raising the seq a resume is judged against (`trimmed_to`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")

# What holding an entry costs beyond its data, about: the entry and record tuples, the id string, the
# seq, the deque's slot (CPython, 64-bit). Charged per topic the event is in, so the bound is an upper one.
ENTRY_OVERHEAD = 256

# (seq, published at (the broker's monotonic clock), bytes charged, record)
Entry = tuple[int, float, int, R]


@dataclass(slots=True)
class TopicHistory(Generic[R]):
    # None while nothing is held: an empty deque is 760 bytes, and a topic emptied by age or for space
    # stays registered until its ttl.
    entries: deque[Entry[R]] | None = None
    trimmed_to: int = 0  # seq of the newest entry dropped by a bound (or of a dropped topic it may continue)
    last_seq: int = 0
    last_publish: float = 0.0
    size: int = 0  # bytes charged for the entries held


class Retention(Generic[R]):
    def __init__(self, max_events: int, max_age: float, ttl: float, max_total_bytes: int) -> None:
        self.max_events = max_events
        self.max_age = max_age  # 0: no age bound
        self.ttl = ttl  # 0: topics are never dropped
        self.max_total_bytes = max_total_bytes
        # Every registered topic, least recently published first; and those that hold entries, in the
        # same order (a subsequence), so that trimming for space never walks past emptied topics.
        self.topics: OrderedDict[str, TopicHistory[R]] = OrderedDict()
        self._holding: OrderedDict[str, TopicHistory[R]] = OrderedDict()
        self.total_bytes = 0
        self.dropped_to = 0

    def __len__(self) -> int:
        return len(self.topics)

    def get(self, topic: str) -> TopicHistory[R] | None:
        return self.topics.get(topic)

    def append(self, topic: str, entry: Entry[R]) -> bool:
        """Add `entry`, the newest, to `topic`'s history (creating the topic), trimmed to the topic's own
        bounds. True when the topic is new."""
        history = self.topics.get(topic)
        created = history is None
        if history is None:
            history = self.topics[topic] = TopicHistory(trimmed_to=self.dropped_to)
        else:
            self.topics.move_to_end(topic)
        entries = history.entries
        if entries is None:
            entries = history.entries = deque()
            self._holding[topic] = history
        else:
            self._holding.move_to_end(topic)
        entries.append(entry)
        seq, now, size, _ = entry
        history.last_seq = seq
        history.last_publish = now
        history.size += size
        self.total_bytes += size
        if len(entries) > self.max_events or (self.max_age and entries[0][1] < now - self.max_age):
            self.trim(topic, history, now)  # rarely: once a topic is full, or its oldest too old
        return created

    def trim(self, topic: str, history: TopicHistory[R], now: float) -> None:
        """Drop what `topic` holds past its count or age."""
        too_old = now - self.max_age if self.max_age else float("-inf")
        while history.entries and (len(history.entries) > self.max_events or history.entries[0][1] < too_old):
            self._pop(topic, history)

    def enforce(self, now: float, budget: int) -> list[str]:
        """Apply the bounds over all topics: the total bytes always; ages and the ttl to at most `budget`
        topics (the rest wait for the next call). Returns the topics dropped (by the ttl)."""
        holding = self._holding
        while self.total_bytes > self.max_total_bytes and holding:
            topic, history = next(iter(holding.items()))
            self._pop(topic, history)
        if self.max_age:
            # A topic last published before the age bound holds nothing young enough to keep.
            too_old = now - self.max_age
            while holding and budget > 0:
                topic, history = next(iter(holding.items()))
                if history.last_publish >= too_old:
                    break
                while history.entries:
                    self._pop(topic, history)
                budget -= 1
        dropped: list[str] = []
        if self.ttl:
            expired = now - self.ttl
            topics = self.topics
            while topics and budget > 0:
                topic, history = next(iter(topics.items()))
                if history.last_publish >= expired:
                    break
                del topics[topic]
                if history.entries is not None:
                    del holding[topic]
                    self.total_bytes -= history.size
                self.dropped_to = max(self.dropped_to, history.last_seq)
                dropped.append(topic)
                budget -= 1
        return dropped

    def settled(self, now: float) -> bool:
        """Nothing is past its age or ttl: `enforce` has nothing left to do until something ages."""
        holding, topics = self._holding, self.topics
        if self.max_age and holding and next(iter(holding.values())).last_publish < now - self.max_age:
            return False
        return not (self.ttl and topics and next(iter(topics.values())).last_publish < now - self.ttl)

    def _pop(self, topic: str, history: TopicHistory[R]) -> None:
        entries = history.entries
        assert entries is not None
        seq, _, size, _ = entries.popleft()
        history.trimmed_to = seq
        history.size -= size
        self.total_bytes -= size
        if not entries:
            history.entries = None
            del self._holding[topic]
