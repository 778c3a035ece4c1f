from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.wire.topic_index import TopicIndex
from hub.wire.topics import Selector
from tests.support.work import counted_calls

# Segments that sort around each other and around '/' (`public0`, `public.`), empty ones, non-ASCII.
segment = st.sampled_from(["a", "b", "ab", "", "0", ".", "é", "a0"])
topics = st.lists(st.lists(segment, min_size=1, max_size=4).map("/".join), max_size=30)
selector_text = st.builds(
    lambda parts, tail: "/".join(parts + (["**"] if tail else [])) or "**",
    st.lists(st.one_of(segment, st.just("*")), max_size=4),
    st.booleans(),
)


@given(held=topics, text=selector_text)
def test_an_index_matches_exactly_what_the_selector_matches(held, text):
    index = TopicIndex()
    for topic in held:
        index.add(topic)
    selector = Selector.parse(text)
    found = list(index.matching(selector))
    assert len(found) == len(set(found))
    assert set(found) == {t for t in held if selector.matches(t)}
    assert len(index) == len(set(held))


def test_a_pattern_visits_only_the_topics_under_its_literal_prefix():
    index = TopicIndex()
    for i in range(20_000):
        index.add(f"other/{i}")
    for topic in ("public", "public/a", "public/b/c", "public0", "publicX/a"):
        index.add(topic)
    with counted_calls() as calls:
        found = sorted(index.matching(Selector.parse("public/**")))
    assert found == ["public", "public/a", "public/b/c"]
    assert calls.count < 50, calls


@given(held=topics, removed=topics, text=selector_text)
def test_a_removed_topic_is_matched_no_more_and_its_nodes_go_with_it(held, removed, text):
    index = TopicIndex()
    for topic in held + removed:
        index.add(topic)
    for topic in removed:
        index.remove(topic)
    index.remove("never/added")
    left = set(held) - set(removed)
    selector = Selector.parse(text)
    assert set(index.matching(selector)) == {t for t in left if selector.matches(t)}
    assert len(index) == len(left)
    for topic in left:
        index.remove(topic)
    assert index._root.children is None  # one-off topics leave no path behind
