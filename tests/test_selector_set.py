"""The selector index behind grant checks: the same answers as the selectors one by one, at a cost
that does not grow with their number."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from hub import config as hub_config
from hub.http.auth import MAX_SELECTORS, Authorizer, mint
from hub.wire.event import Draft
from hub.wire.selector_set import SelectorSet
from hub.wire.topics import Selector
from tests.support.selector_strategies import selector_text, topic_text


@given(st.lists(selector_text, max_size=8), topic_text)
def test_matches_what_one_of_its_selectors_matches(granted, topic):
    selectors = [Selector.parse(t) for t in granted]
    assert SelectorSet(selectors).matches(topic) == any(s.matches(topic) for s in selectors)


@given(st.lists(selector_text, max_size=8), st.one_of(selector_text, topic_text))
def test_covers_what_one_of_its_selectors_covers(granted, asked):
    selectors = [Selector.parse(t) for t in granted]
    wanted = Selector.parse(asked)
    assert SelectorSet(selectors).covers(wanted) == any(s.covers(wanted) for s in selectors)


def test_an_empty_set_allows_nothing():
    assert not SelectorSet().matches("a")
    assert not SelectorSet().covers(Selector.parse("**"))


SECRET = "s" * 32


def test_checking_thousands_of_grants_costs_what_checking_a_few_does():
    """4,000 granted selectors, a 300-event batch of 10 topics each and 20 subscriptions of 100
    selectors: about 6 s when each topic was tried against each grant; indexed, milliseconds."""
    authorizer = Authorizer(hub_config.build({"auth": {"jwt_secret": SECRET}}).auth)
    granted = [f"tenant/{i}/*" for i in range(2000)] + [f"room/{i}" for i in range(2000)]
    assert len(granted) <= MAX_SELECTORS
    grants = authorizer.publisher(mint(publish=granted, secret=SECRET))
    # The last granted selectors: the slowest to find one by one.
    drafts = [Draft(tuple(f"room/{1990 + j}" for j in range(10)), i) for i in range(300)]
    token = mint(subscribe=granted, secret=SECRET)
    authorizer.verify(token)  # verified and indexed once; cached for its next requests
    started = time.perf_counter()
    authorizer.check_publish(grants, drafts)
    wanted = [Selector.parse(f"tenant/{1999 - i}/x") for i in range(100)]
    for _ in range(20):
        authorizer.check_subscribe(token, wanted)
    elapsed = time.perf_counter() - started
    # Generous for a loaded machine (it takes about 5 ms).
    assert elapsed < 0.5, elapsed
