"""Nchan, the load benchmark's third reference server, started by the benchmark's own code and loaded by
its own generator (--proto nchan) on tiny scenarios: every event reaches each subscriber of its topic once
and in order, on the memory store and the Redis store, so that the reference cannot rot unseen."""

from __future__ import annotations

import pytest

from bench.load import Scenario, build_loadgen, run_once


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario("tiny-notify", subs=20, events=200, topics=20, pipeline=1, pubconns=4),
        Scenario("tiny-notify-redis", subs=20, events=200, topics=20, pipeline=1, pubconns=4, redis=True),
        # batches of 5, 2 in flight: Nchan gets each event as a request of its own, 10 in flight
        Scenario("tiny-topics", subs=20, events=400, topics=20, batch=5, pipeline=2, pubconns=4),
        # two Nchans on one Redis, publishes to the first: the second's subscribers hear only through
        # Redis; more publishers than topics, so order is checked per publisher
        Scenario("tiny-redis", subs=20, events=200, topics=1, pipeline=1, pubconns=8, two_hubs=True),
    ],
    ids=lambda s: s.name,
)
def test_nchan_delivers_every_event_once_and_in_order(scenario):
    figures = run_once(build_loadgen(), "nchan", scenario).figures
    assert figures["published"] == scenario.events
    assert figures["delivered"] == figures["expected"] == scenario.events * scenario.subs // scenario.topics
    assert (figures["lost"], figures["duplicated"], figures["out_of_order"]) == (0, 0, 0)


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
def test_the_hub_is_measured_with_auth_on_where_the_scenario_says(redis):
    # notify's hub checks every publisher's Bearer token and every subscriber's ?token=: a token the
    # generator failed to send would be a 401, and the run would fail
    scenario = Scenario(
        "tiny-notify", subs=20, events=200, topics=20, pipeline=1, pubconns=4, redis=redis, auth=True
    )
    figures = run_once(build_loadgen(), "hub", scenario).figures
    assert figures["delivered"] == figures["expected"] == 200
    assert (figures["lost"], figures["duplicated"], figures["out_of_order"]) == (0, 0, 0)
