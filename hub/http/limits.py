"""Connection and rate limits, kept per process. Pure bookkeeping: the caller passes the clock, and the
open-file limit (`hub.http.connections.descriptor_budget` reads it from the process).

Refusals are 429 with a `Retry-After` that says when trying again can succeed.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence

from hub.errors import TooManyRequests

# File descriptors kept back from the connection budget for Redis connections, logs and accepts; at most
# a quarter of the open-file limit, so that a small limit (macOS: 256) still leaves most for clients.
FD_RESERVE = 256

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def budget_for(open_files: int) -> int:
    """Connections, streams included, that a process with this open-file limit may hold."""
    return max(1, open_files - min(FD_RESERVE, open_files // 4))


def stream_limit(configured: int, budget: int) -> int:
    """Streams one process holds at most: the configured number, or its connection `budget` (see
    `budget_for`)."""
    return configured or budget


class Connections:
    """Counts open streams, in all and per client address."""

    def __init__(self, limit: int, per_client: int, retry_after: int) -> None:
        self.limit = limit
        self.per_client = per_client
        self.retry_after = retry_after
        self.open = 0
        self._by_client: dict[str, int] = {}

    def acquire(self, client: str) -> Lease:
        if self.open >= self.limit:
            raise TooManyRequests(
                "too_many_connections",
                f"this hub process holds its limit of {self.limit} streams; retry, maybe on another replica",
                self.retry_after,
            )
        held = self._by_client.get(client, 0)
        if self.per_client and held >= self.per_client:
            raise TooManyRequests(
                "too_many_connections",
                f"{client} holds its limit of {self.per_client} streams on this hub process",
                self.retry_after,
            )
        self._by_client[client] = held + 1
        self.open += 1
        return Lease(self, client)

    def _release(self, client: str) -> None:
        self.open -= 1
        held = self._by_client[client] - 1
        if held:
            self._by_client[client] = held
        else:
            del self._by_client[client]  # so the map holds only clients with open streams

    def held_by(self, client: str) -> int:
        return self._by_client.get(client, 0)


class Lease:
    """One stream's place in the count; released once, however many paths end the stream."""

    __slots__ = ("_connections", "client")

    def __init__(self, connections: Connections, client: str) -> None:
        self._connections: Connections | None = connections
        self.client = client

    def release(self) -> None:
        if self._connections is not None:
            self._connections._release(self.client)
            self._connections = None


class PublishRate:
    """A token bucket per publisher: `rate` events a second, up to `burst` at once."""

    # Buckets of publishers that went quiet are refilled and dropped when the map grows past this.
    SWEEP_AT = 10_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # publisher -> (tokens, at)

    @property
    def max_at_once(self) -> int:
        """The most events one request can ever be granted."""
        return max(1, int(self.burst)) if self.rate else 1 << 30

    def take(self, publisher: str, events: int, now: float) -> None:
        if not self.rate:
            return
        tokens, at = self._buckets.get(publisher, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if events > tokens:
            wait = (events - tokens) / self.rate if events <= self.burst else math.inf
            if wait == math.inf:
                raise TooManyRequests(
                    "rate_limited",
                    f"{events} events at once is over the burst limit of {int(self.burst)}; "
                    "send smaller batches",
                    1,
                )
            self._buckets[publisher] = (tokens, now)
            raise TooManyRequests(
                "rate_limited",
                f"over the publish rate of {self.rate:g} events/s; retry after {wait:.1f} s",
                math.ceil(wait),
            )
        self._buckets[publisher] = (tokens - events, now)
        if len(self._buckets) > self.SWEEP_AT:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        full = [
            p for p, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst
        ]
        for publisher in full:
            del self._buckets[publisher]


def burst_for(rate: float, burst: int, max_batch: int) -> int:
    # A bucket smaller than a batch would refuse the batch forever.
    return burst or max(math.ceil(rate), max_batch)


def parse_networks(texts: Sequence[str]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[_Network]) -> str:
    """The client's address: the peer, or, behind trusted proxies, the nearest untrusted forwarded one.

    X-Forwarded-For is read from the right, where each proxy appended the address it saw: entries left
    of the first untrusted one could have been written by the client itself.
    """
    if peer is None:
        return "unknown"
    if not forwarded_for or not is_trusted(peer, trusted):
        return peer
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        address = _normalized(hop.strip())
        if address is None:
            break  # garbage from the client or a misconfigured proxy: stop at what we can trust
        # Normalized, so that one client cannot pass for many by spelling its IPv6 address differently.
        client = address
        if not is_trusted(address, trusted):
            break
    return client


def client_key(address: str) -> str:
    """What every per-client limit and scope counts a client address as: an IPv4 address as is, an IPv6
    one as its /64 (the least a site is given: addresses inside it cost a client nothing to rotate), an
    IPv4-mapped IPv6 one as the IPv4 address. Anything else ("unknown", "unix") as is."""
    if ":" not in address:
        return address  # IPv4, the common case: no parsing, no allocation
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"


def _normalized(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def is_trusted(address: str, trusted: Sequence[_Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
