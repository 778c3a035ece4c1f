"""The in-process broker: one hub process, nothing to install. The same contract as Redis: ids, history
bounded by count and age, retained state, idempotent publish; and its memory bounded too: history within
`history.max_total_bytes`, topics dropped after `history.ttl` (see `hub.brokers.retention`)."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections import OrderedDict
from collections.abc import Sequence

from hub.brokers.base import Broker, BrokerSink
from hub.brokers.retention import ENTRY_OVERHEAD, Retention, TopicHistory
from hub.config import HistoryConfig
from hub.errors import idempotency_key_reused
from hub.wire.event import Draft, Event, format_id, new_epoch
from hub.wire.idempotency import Idempotency
from hub.wire.ids import (
    RESET_EPOCH,
    RESET_TOO_MUCH,
    RESET_TRIMMED,
    RESET_UNKNOWN,
    HistoryPage,
    Position,
    Since,
    SinceKind,
    Snapshot,
    merge,
    parse_id,
)
from hub.wire.topic_index import TopicIndex
from hub.wire.topics import Selector

# An event as a topic's history keeps it: a plain tuple, not an Event. A tuple of strings and numbers
# drops out of the garbage collector's sight after its first pass, so a long history does not lengthen
# every full collection: with 100,000 events held (the `topics` scenario run to 100,000 events), the
# collector tracked 99,000 objects instead of 256,000, and its longest pause was 62-72 ms, not 78-98.
_Record = tuple[str, tuple[str, ...], object, str | None, int | None, bool]


def _record(event: Event) -> _Record:
    return (event.id, event.topics, event.data, event.event, event.retry, event.retain)


# Topics the ttl and age sweeps may drop or empty per publish, beyond twice those it published to (so
# they keep up with any rate of new topics), and per slice of a heartbeat tick's sweep.
_SWEEP = 64
_TICK_SWEEP = 2000


class MemoryBroker(Broker[Position]):
    name = "memory"
    publishes_at_once = True

    def __init__(self, history: HistoryConfig, idempotency_window: float) -> None:
        self._history = history
        self._idempotency_window = idempotency_window
        self._sink: BrokerSink | None = None
        self._epoch = new_epoch()
        self._seq = 0
        self._topics: Retention[_Record] = Retention(
            history.max_events, history.max_age, history.ttl, history.max_total_bytes
        )
        self._retained: dict[str, Event] = {}
        # The same topics by segment, so a pattern's snapshot touches only what it matches.
        self._topic_index = TopicIndex()
        self._retained_index = TopicIndex()
        # name -> (until, fingerprint, ids), in the order they expire: every record lives the same window
        # and is entered once, at the end, so forgetting pops expired ones from the front. All tuples of
        # strings and numbers, which the garbage collector stops tracking (a million records as lists
        # made every full collection walk them).
        self._done: OrderedDict[str, tuple[float, str, tuple[str, ...]]] = OrderedDict()

    async def start(self, sink: BrokerSink) -> None:
        self._sink = sink

    async def close(self) -> None:
        self._sink = None

    async def publish(self, drafts: Sequence[Draft], idempotency: Idempotency | None = None) -> list[str]:
        now = time.monotonic()
        if idempotency is not None:
            self._forget_expired(now)
            done = self._done.get(idempotency.name)
            if done is not None:
                if done[1] != idempotency.fingerprint:
                    raise idempotency_key_reused()
                return list(done[2])
        events = []
        topics = self._topics
        appended = 0
        for draft in drafts:
            self._seq += 1
            seq = self._seq
            event = Event.from_draft(format_id(self._epoch, seq), draft)
            entry = (seq, now, event.size + ENTRY_OVERHEAD, _record(event))
            for topic in draft.topics:
                if topics.append(topic, entry):
                    self._topic_index.add(topic)
                appended += 1
                if draft.retain:
                    if topic not in self._retained:
                        self._retained_index.add(topic)
                    self._retained[topic] = event
            events.append(event)
        self._forget_topics(topics.enforce(now, _SWEEP + 2 * appended))
        ids = [e.id for e in events]
        if idempotency is not None:
            self._done[idempotency.name] = (
                now + self._idempotency_window,
                idempotency.fingerprint,
                tuple(ids),
            )
        sink = self._sink
        if sink is not None:
            for event in events:
                sink.on_event(event)
        return ids

    def _forget_topics(self, dropped: list[str]) -> None:
        """Take topics the ttl dropped out of the indexes and retained state too."""
        for topic in dropped:
            self._topic_index.remove(topic)
            if self._retained.pop(topic, None) is not None:
                self._retained_index.remove(topic)

    def _forget_expired(self, now: float) -> None:
        done = self._done
        while done and next(iter(done.values()))[0] < now:
            done.popitem(last=False)

    def parse_position(self, text: str) -> Position | None:
        return parse_id(text)

    async def snapshot(self, selectors: Sequence[Selector], since: Since[Position]) -> Snapshot:
        position = Position(self._epoch, self._seq)
        reset = None
        if since.kind is SinceKind.UNKNOWN:
            reset = RESET_UNKNOWN
        elif since.kind is SinceKind.AFTER:
            assert since.position is not None
            after = since.position
            if after.epoch != self._epoch or after.seq > self._seq:
                reset = RESET_EPOCH
            elif after.seq < self._topics.dropped_to and any(
                s.is_pattern or s.text not in self._topics.topics for s in selectors
            ):
                # A topic it may have read was dropped since, with its events after that id
                reset = RESET_TRIMMED
            else:
                topics = self._with_history(selectors, after.seq)
                if any(self._history_of(t).trimmed_to > after.seq for t in topics):
                    reset = RESET_TRIMMED
                else:
                    events = self._history_after(topics, after.seq)
                    if len(events) <= self._history.max_replay:
                        return Snapshot(position, events)
                    reset = RESET_TOO_MUCH
        elif since.kind is SinceKind.EARLIEST:
            retained = self._retained_of(selectors)
            events = self._history_after(self._with_history(selectors), 0)
            if len(events) <= self._history.max_replay:
                return Snapshot(position, merge([retained, events]))
            reset = RESET_TOO_MUCH
        return Snapshot(position, merge([self._retained_of(selectors)]), reset)

    async def history_page(self, topic: str, after: Position | None, limit: int) -> HistoryPage:
        position = Position(self._epoch, self._seq)
        history = self._topics.get(topic)
        if history is None:
            return HistoryPage.of(position, [])
        self._topics.trim(topic, history, time.monotonic())
        entries = history.entries
        if entries is None:
            return HistoryPage.of(position, [])
        start = 0 if after is None else bisect.bisect_right(entries, after.seq, key=lambda entry: entry[0])
        return HistoryPage.of(
            position, [Event(*record) for _, _, _, record in itertools.islice(entries, start, start + limit)]
        )

    def _history_after(self, topics: list[str], seq: int) -> list[Event]:
        batches = []
        for topic in topics:
            entries = self._history_of(topic).entries or ()
            batches.append([Event(*record) for s, _, _, record in entries if s > seq])
        return merge(batches)

    def _history_of(self, topic: str) -> TopicHistory[_Record]:
        history = self._topics.get(topic)
        assert history is not None, topic  # the index holds what the retention does
        return history

    def _with_history(self, selectors: Sequence[Selector], after: int = 0) -> list[str]:
        """The topics the selectors match with events after seq `after`, trimmed to their bounds now.
        A topic whose last event is older has nothing to replay and lost nothing since."""
        found = []
        now = time.monotonic()
        for topic in _matching(self._topic_index, selectors):
            history = self._history_of(topic)
            if history.last_seq > after:
                self._topics.trim(topic, history, now)
                found.append(topic)
        return found

    def _retained_of(self, selectors: Sequence[Selector]) -> list[Event]:
        return [self._retained[t] for t in _matching(self._retained_index, selectors)]

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
        # A quiet hub gives back what the ttl and max_age let go of too, a slice at a time.
        while True:
            now = time.monotonic()
            self._forget_topics(self._topics.enforce(now, _TICK_SWEEP))
            if self._topics.settled(now):
                return
            await asyncio.sleep(0)

    @property
    def topic_count(self) -> int:
        """Topics registered (with history, or emptied and not yet past their ttl)."""
        return len(self._topics)

    @property
    def history_bytes(self) -> int:
        """Bytes charged for the history held, against `history.max_total_bytes`."""
        return self._topics.total_bytes

    @property
    def ready(self) -> bool:
        return self._sink is not None


def _matching(index: TopicIndex, selectors: Sequence[Selector]) -> list[str]:
    """The topics of `index` that some selector matches, each once."""
    found: dict[str, None] = {}
    for selector in selectors:
        found.update(dict.fromkeys(index.matching(selector)))
    return list(found)
