"""The fault run at CI size: Redis SIGKILLed and restarted (AOF on), a hub process SIGKILLed and
restarted, while publishers and subscribers keep going. `python -m bench faults` runs it larger."""

from __future__ import annotations

import pytest

from bench.faults import FaultPlan, run_fault_test


@pytest.mark.timeout(120)
async def test_no_acknowledged_event_is_lost_doubled_or_reordered_through_faults():
    plan = FaultPlan()
    report = await run_fault_test(plan)
    print("\n".join(report.lines()))
    assert (report.redis_kills, report.hub_kills) == (1, 1)
    assert report.acknowledged == plan.publishers * plan.events_per_publisher
    assert report.refused_publishes > 0  # the faults were felt
    assert report.reconnects > 0
    assert report.expected > plan.events_per_publisher
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0)
    assert report.resets == 0  # with AOF nothing acknowledged is lost, so nobody needs a reset


@pytest.mark.timeout(120)
async def test_redis_losing_its_data_gets_every_subscriber_a_reset_and_nothing_after_it_is_lost():
    plan = FaultPlan(aof=False, hub_kills=0)
    report = await run_fault_test(plan)
    print("\n".join(report.lines()))
    assert report.redis_kills == 1
    assert report.subscribers_reset == plan.subscribers
    assert report.expected > 0
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0)


@pytest.mark.timeout(150)
async def test_on_a_cluster_failover_and_resharding_lose_double_and_reorder_nothing():
    """A primary serving a fault topic is SIGKILLed (its replica takes over), a fault topic's slot moves
    to another primary, and a hub is SIGKILLed, while events flow. A failover can lose writes Redis had
    acknowledged before replicating them: a subscriber is then owed a `reset`, never a silent gap."""
    plan = FaultPlan(cluster=True, redis_kills=1, reshards=1, hub_kills=1)
    report = await run_fault_test(plan)
    print("\n".join(report.lines()))
    assert (report.redis_kills, report.reshards, report.hub_kills) == (1, 1, 1)
    assert report.catch_ups > 0  # the hubs followed the moved slots and caught up from history
    assert report.acknowledged == plan.publishers * plan.events_per_publisher
    assert report.reconnects > 0
    assert report.expected > plan.events_per_publisher
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0)
