"""What the hub reports about itself: Prometheus text at /metrics, the same figures as JSON at /stats.

Counters live as plain integers in the fan-out and broker and are read at scrape time, so the hot path
pays nothing for them; only publish latency is observed as it happens, once per publish request. The
registry is the app's own, not prometheus-client's global one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.engine.fanout import Fanout
from hub.engine.presence import Presence
from hub.http.limits import Connections

# Seconds: a publish is one Redis round trip, sub-millisecond on a LAN, up to the connect timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, fanout: Fanout, connections: Connections, presence: Presence | None = None) -> None:
        self.fanout = fanout
        self.presence = presence
        self.connections = connections
        self.started = time.time()
        # Tells this process's figures from another's (workers on one port, a restart) without
        # naming the pid, which is nothing a client should learn.
        self.instance = secrets.token_hex(4)
        self.registry = CollectorRegistry(auto_describe=True)
        self.publish_latency = Histogram(
            "hub_publish_latency_seconds",
            "Time from a publish request's body parsed to the broker's acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    def stats(self) -> dict[str, object]:
        fanout = self.fanout
        counters = fanout.counters
        return {
            "instance": self.instance,
            "uptime": round(time.time() - self.started, 3),
            "broker": fanout.broker.name,
            "ready": fanout.ready,
            "connections": fanout.connections,
            "connections_counted": self.connections.open,
            "subscriptions": fanout.registrations()["selectors"],
            "events_published": counters["published"],
            "events_received": counters["events"],
            "deliveries": counters["deliveries"],
            "deliveries_dropped": counters["dropped"],
            "slow_consumer_disconnects": counters["slow_consumers"],
            "heartbeats": counters["heartbeats"],
            "broker_reconnects": fanout.broker.reconnects,
            "cpu_starved": round(fanout.pacer.starved, 3),
        }


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        fanout = self._metrics.fanout
        counters = fanout.counters
        yield GaugeMetricFamily("hub_connections", "Open event streams.", value=fanout.connections)
        yield GaugeMetricFamily(
            "hub_subscriptions", "Distinct selectors subscribed.", value=fanout.registrations()["selectors"]
        )
        yield GaugeMetricFamily("hub_ready", "1 when the broker path is alive.", value=int(fanout.ready))
        yield GaugeMetricFamily(
            "hub_cpu_starved_ratio",
            "Share of its latest rounds of writes to streams that the process spent waiting for its core.",
            value=fanout.pacer.starved,
        )
        for name, key, text in (
            ("hub_events_published", "published", "Events this process published into the broker."),
            ("hub_events_received", "events", "Events this process received from the broker to fan out."),
            ("hub_deliveries", "deliveries", "Events written to subscriber streams."),
            ("hub_deliveries_dropped", "dropped", "Events discarded with a stream cut off (it resumes)."),
            ("hub_slow_consumer_disconnects", "slow_consumers", "Streams cut off for not reading."),
            ("hub_heartbeats", "heartbeats", "Heartbeat ticks that came back through the broker."),
        ):
            yield CounterMetricFamily(name, text, value=counters[key])
        yield CounterMetricFamily(
            "hub_broker_reconnects", "Times the broker connection was lost.", value=fanout.broker.reconnects
        )
        presence = self._metrics.presence
        listing = presence.listing if presence is not None else None
        if listing is not None:
            # Hub-wide: every process shows the same figures (take the max, not the sum, across them).
            streams, top = listing
            yield GaugeMetricFamily(
                "hub_presence_streams", "Open event streams on every hub process.", value=streams
            )
            by_selector = GaugeMetricFamily(
                "hub_selector_subscribers",
                "Streams of each of the presence.metrics_top selectors with the most, on every hub process.",
                labels=["selector"],
            )
            for selector, count in top:
                by_selector.add_metric([selector], count)
            yield by_selector
