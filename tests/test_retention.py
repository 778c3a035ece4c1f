"""The memory broker's bounds over all topics, on their own: bytes, age and ttl, and what a drop leaves to
judge a resume by."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.brokers.retention import Entry, Retention
from tests.support.work import counted_calls


def entry(seq: int, now: float, size: int = 100) -> Entry[str]:
    return (seq, now, size, f"event {seq}")


def held(retention: Retention[str], topic: str) -> list[int]:
    history = retention.get(topic)
    assert history is not None
    return [seq for seq, _, _, _ in history.entries or ()]


def test_past_the_byte_bound_the_least_recently_published_topics_lose_their_oldest_first():
    retention: Retention[str] = Retention(max_events=100, max_age=0, ttl=0, max_total_bytes=300)
    for seq, topic in enumerate(["a", "b", "a", "c", "d"], start=1):
        retention.append(topic, entry(seq, seq))
    retention.enforce(now=5, budget=10)
    assert retention.total_bytes == 300
    # b was published to least recently (a again after it): b goes first, then a's oldest.
    assert (held(retention, "a"), held(retention, "b")) == ([3], [])
    assert retention.get("b").trimmed_to == 2  # type: ignore[union-attr]
    assert retention.get("a").trimmed_to == 1  # type: ignore[union-attr]
    retention.append("e", entry(6, 6, size=200))
    retention.enforce(now=6, budget=10)
    assert [held(retention, t) for t in "acde"] == [[], [], [5], [6]]
    assert len(retention) == 5  # emptied topics stay registered, with what they were trimmed to


def test_a_topic_past_its_ttl_is_dropped_and_the_seq_it_reached_is_remembered():
    retention: Retention[str] = Retention(max_events=100, max_age=0, ttl=10, max_total_bytes=10**9)
    retention.append("old", entry(1, 0))
    retention.append("old", entry(2, 1))
    retention.append("kept", entry(3, 2))
    retention.append("old2", entry(4, 3))
    retention.append("kept", entry(5, 12))
    assert retention.enforce(now=13.5, budget=10) == ["old", "old2"]
    assert retention.dropped_to == 4
    assert retention.total_bytes == 200
    assert list(retention.topics) == ["kept"]
    # Published again, a dropped topic may be read by a resume from its old life: counted as trimmed to
    # the highest seq any dropped topic reached.
    retention.append("old", entry(6, 14))
    assert retention.get("old").trimmed_to == 4  # type: ignore[union-attr]
    assert retention.get("kept").trimmed_to == 0  # type: ignore[union-attr]


def test_a_topic_last_published_past_the_age_bound_is_emptied_without_a_publish_to_it():
    retention: Retention[str] = Retention(max_events=100, max_age=5, ttl=0, max_total_bytes=10**9)
    retention.append("quiet", entry(1, 0))
    retention.append("quiet", entry(2, 1))
    retention.append("busy", entry(3, 8))
    assert retention.settled(now=5.5)
    assert not retention.settled(now=6.5)
    retention.enforce(now=6.5, budget=10)
    assert (held(retention, "quiet"), held(retention, "busy")) == ([], [3])
    assert retention.get("quiet").trimmed_to == 2  # type: ignore[union-attr]
    assert retention.total_bytes == 100
    assert retention.settled(now=6.5)


def test_a_sweep_does_at_most_its_budget_and_the_next_one_goes_on():
    retention: Retention[str] = Retention(max_events=100, max_age=0, ttl=1, max_total_bytes=10**9)
    for seq in range(1, 101):
        retention.append(f"t/{seq}", entry(seq, 0))
    assert len(retention.enforce(now=2, budget=30)) == 30
    assert not retention.settled(now=2)
    assert len(retention.enforce(now=2, budget=100)) == 70
    assert retention.settled(now=2)
    assert (len(retention), retention.total_bytes, retention.dropped_to) == (0, 0, 100)


def test_a_publish_costs_the_same_with_many_topics_held():
    # Bounds enforced by scanning the topics cost each publish as many steps as topics held.
    retention: Retention[str] = Retention(max_events=10, max_age=60, ttl=60, max_total_bytes=100 * 10_000)
    for seq in range(1, 20_001):
        retention.append(f"t/{seq}", entry(seq, seq / 1000))
        retention.enforce(seq / 1000, budget=64)
    with counted_calls() as calls:
        for seq in range(20_001, 20_101):
            retention.append(f"t/{seq}", entry(seq, 20 + seq / 1000))
            retention.enforce(20 + seq / 1000, budget=64)
    assert calls.count < 100 * 20, calls


operations = st.lists(
    st.tuples(st.sampled_from(["a", "b", "a/b", "c"]), st.integers(1, 400), st.floats(0, 3)), max_size=40
)


@given(ops=operations, max_total=st.integers(100, 2000), max_events=st.integers(1, 5))
def test_every_bound_holds_and_a_trimmed_seq_is_never_forgotten(ops, max_total, max_events):
    retention: Retention[str] = Retention(max_events, max_age=2, ttl=4, max_total_bytes=max_total)
    now = 0.0
    published: dict[str, list[int]] = {}
    for seq, (topic, size, wait) in enumerate(ops, start=1):
        now += wait
        retention.append(topic, (seq, now, size, ""))
        published.setdefault(topic, []).append(seq)
        retention.enforce(now, budget=2)
        assert retention.total_bytes <= max_total
        assert retention.total_bytes == sum(h.size for h in retention.topics.values())
        for name, history in retention.topics.items():
            kept = held(retention, name)
            assert len(kept) <= max_events
            # What is held is the end of what was published since the topic was (re)created, and
            # everything before it is below the seq a resume is judged against: no silent gap.
            assert published[name][len(published[name]) - len(kept) :] == kept
            assert all(s <= history.trimmed_to for s in published[name] if s not in kept)
        for name in set(published) - set(retention.topics):
            assert max(published[name]) <= retention.dropped_to
