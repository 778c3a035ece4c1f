"""Connection and publish-rate bookkeeping, and who the client is behind proxies. Pure."""

from __future__ import annotations

import pytest

from hub.errors import TooManyRequests
from hub.http.limits import (
    Connections,
    PublishRate,
    budget_for,
    burst_for,
    client_address,
    client_key,
    parse_networks,
    stream_limit,
)


def test_connections_are_limited_per_process_and_per_client():
    conns = Connections(limit=3, per_client=2, retry_after=3)
    a1, a2 = conns.acquire("a"), conns.acquire("a")
    with pytest.raises(TooManyRequests, match="a holds its limit of 2") as refused:
        conns.acquire("a")
    assert refused.value.headers() == {"Retry-After": "3"}
    b = conns.acquire("b")
    with pytest.raises(TooManyRequests, match="limit of 3 streams"):
        conns.acquire("c")
    a1.release()
    a1.release()  # a second release of one lease counts nothing
    assert conns.held_by("a") == 1
    c = conns.acquire("c")
    for lease in (a2, b, c):
        lease.release()
    assert conns.open == 0
    assert conns._by_client == {}  # nothing kept for clients that left


def test_no_per_client_limit_when_zero():
    conns = Connections(limit=100, per_client=0, retry_after=1)
    for _ in range(100):
        conns.acquire("a")
    assert conns.held_by("a") == 100


def test_stream_limit_is_the_connection_budget_unless_set():
    assert stream_limit(0, budget=768) == 768
    assert stream_limit(7, budget=768) == 7


@pytest.mark.parametrize(
    ("open_files", "budget"),
    [(1_048_576, 1_048_320), (4096, 3840), (1024, 768), (256, 192), (100, 75), (4, 3), (1, 1)],
)
def test_a_small_open_file_limit_keeps_a_quarter_back_not_256(open_files, budget):
    # At 256 (macOS's default) the reserve of 256 left one connection for the whole process.
    assert budget_for(open_files) == budget


def test_publish_rate_is_a_token_bucket_per_publisher():
    rate = PublishRate(rate=10, burst=20)
    rate.take("p", 20, now=0.0)
    with pytest.raises(TooManyRequests) as refused:
        rate.take("p", 5, now=0.0)
    assert refused.value.retry_after == 1  # 5 events at 10/s: half a second, rounded up
    rate.take("q", 20, now=0.0)  # another publisher has its own bucket
    rate.take("p", 5, now=0.5)
    with pytest.raises(TooManyRequests):
        rate.take("p", 1, now=0.5)
    with pytest.raises(TooManyRequests, match="burst limit of 20"):
        rate.take("p", 21, now=100.0)
    rate.take("p", 20, now=100.0)  # refills up to the burst, no further


def test_refused_publish_spends_nothing_and_long_waits_say_so():
    rate = PublishRate(rate=1, burst=10)
    rate.take("p", 10, now=0.0)
    for _ in range(3):
        with pytest.raises(TooManyRequests) as refused:
            rate.take("p", 10, now=0.0)
    assert refused.value.retry_after == 10
    rate.take("p", 10, now=10.0)


def test_zero_rate_is_unlimited_and_quiet_publishers_are_forgotten():
    PublishRate(rate=0, burst=0).take("p", 10**9, now=0.0)
    rate = PublishRate(rate=1000, burst=1000)
    rate.SWEEP_AT = 10
    for i in range(11):
        rate.take(f"p{i}", 1, now=0.0)
    rate.take("late", 1, now=60.0)
    assert set(rate._buckets) == {"late"}


def test_burst_is_at_least_a_batch():
    assert burst_for(rate=5, burst=0, max_batch=1000) == 1000
    assert burst_for(rate=5000.5, burst=0, max_batch=1000) == 5001
    assert burst_for(rate=5, burst=7, max_batch=1000) == 7


TRUSTED = parse_networks(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.0.0.1", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2", "1.2.3.4"),  # the client wrote 6.6.6.6 itself
        ("10.0.0.1", "garbage, 1.2.3.4", "1.2.3.4"),
        ("10.0.0.1", "1.2.3.4, garbage", "10.0.0.1"),
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),
        ("::1", "2001:db8:0:0::1", "2001:db8::1"),  # one address, one spelling
        (None, "1.2.3.4", "unknown"),
    ],
)
def test_client_address_behind_trusted_proxies(peer, forwarded, client):
    assert client_address(peer, forwarded, TRUSTED) == client


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:0db8:0001:0002:0000:0000:0000:0002", "2001:db8:1:2::/64"),  # one spelling
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),  # the next /64 is another client
        ("::ffff:203.0.113.9", "203.0.113.9"),  # IPv4-mapped: the IPv4 client it is
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
        ("unix", "unix"),
        ("not:an:address", "not:an:address"),
    ],
)
def test_a_client_is_keyed_by_its_ipv4_address_or_its_ipv6_64(address, key):
    assert client_key(address) == key
