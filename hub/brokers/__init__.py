"""Brokers: where events are given ids and fanned out between hub processes."""

from __future__ import annotations

from typing import Any

from hub.brokers.base import Broker, BrokerSink
from hub.config import Config


def create_broker(config: Config) -> Broker[Any]:
    if config.redis.url and config.redis.is_cluster:
        from hub.brokers.cluster import RedisClusterBroker

        return RedisClusterBroker(config.redis, config.history, config.publish.idempotency_window)
    if config.redis.url:
        from hub.brokers.redis import RedisBroker

        return RedisBroker(config.redis, config.history, config.publish.idempotency_window)
    from hub.brokers.memory import MemoryBroker

    return MemoryBroker(config.history, config.publish.idempotency_window)


__all__ = ["Broker", "BrokerSink", "create_broker"]
