"""/metrics and /stats report what happened, on both brokers."""

from __future__ import annotations

import re

from tests.support.waiting import settled


def sample(text: str, name: str) -> float:
    (value,) = re.findall(rf"^{name} (\S+)$", text, re.M)
    return float(value)


async def scrape(hub) -> str:
    async with hub.session.get(hub.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        return await resp.text()


async def test_metrics_and_stats_count_streams_events_and_publish_latency(hub):
    async with hub.subscribe("m/a") as one, hub.subscribe("m/*") as two:
        await hub.publish([{"topic": "m/a", "data": i} for i in range(3)])
        await hub.publish({"topic": "m/b", "data": "only the pattern"})
        await one.take(3)
        await two.take(4)
        text = await scrape(hub)
        assert sample(text, "hub_connections") == 2
        assert sample(text, "hub_subscriptions") == 2
        assert sample(text, "hub_events_published_total") == 4
        assert sample(text, "hub_deliveries_total") == 7
        assert sample(text, "hub_publish_latency_seconds_count") == 2
        assert sample(text, "hub_ready") == 1
        async with hub.session.get(hub.url + "/stats") as resp:
            stats = await resp.json()
        assert (stats["connections"], stats["connections_counted"], stats["deliveries"]) == (2, 2, 7)
        # a hub with the machine to itself is not waiting for its core
        assert 0 <= stats["cpu_starved"] < 0.5
        assert 0 <= sample(text, "hub_cpu_starved_ratio") < 0.5
    await settled(lambda: hub.fanout.connections == 0)
    assert sample(await scrape(hub), "hub_connections") == 0
