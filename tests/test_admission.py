"""The guard over real HTTP: undecodable tokens, cookie writes from other sites, whose publish budget a
token spends, who may read the hub's own figures, and how many streams one address may hold."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from hub import config as hub_config
from hub.http.auth import mint
from hub.http.state import GUARD
from tests.support.waiting import settled

SECRET = "guard-secret-of-at-least-32-bytes!"
APP = "https://app.example"
EVIL = "https://evil.example"


@pytest.fixture
def broker_kind() -> str:
    return "memory"  # all of this happens before the broker: one is enough


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING):
        yield caplog


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
async def secured(hub_factory):
    return await hub_factory(auth__jwt_secret=SECRET, cors__origins=(APP,))


async def raw(hub, head: bytes, body: bytes = b"") -> tuple[int, Any]:
    """One request written byte for byte (aiohttp's client will not send these headers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.running.port)
    try:
        writer.write(
            head + b"\r\nHost: hub\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), orjson.loads(payload) if payload else None


async def history(hub, topic: str) -> list[Any]:
    token = mint(subscribe=["**"], secret=SECRET)
    async with hub.session.get(
        f"{hub.url}/topics/{topic}/history", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


UNDECODABLE = [
    b"Authorization: Bearer \xe9",
    b"Authorization: Bearer " + mint(publish=["**"], secret=SECRET).encode() + b"\xff",
    b"Cookie: hub_token=x\xff",
]


@pytest.mark.parametrize("credential", UNDECODABLE, ids=["header", "header-tail", "cookie"])
@pytest.mark.parametrize(
    ("request_line", "body"),
    [
        (b"GET /events?topic=private/a HTTP/1.1", b""),
        (b"POST /publish HTTP/1.1\r\nContent-Type: application/json", b'{"topic":"private/a","data":1}'),
        (b"POST /progress/j HTTP/1.1", b'{"current":1,"total":2}'),
        (b"POST /publish/stream?topic=private/a HTTP/1.1\r\nContent-Type: text/plain", b"x"),
        (b"GET /topics/private/a/history HTTP/1.1", b""),
        (b"GET /stats HTTP/1.1", b""),
        (b"GET /stats/stream HTTP/1.1", b""),
        (b"GET /metrics HTTP/1.1", b""),
    ],
    ids=["events", "publish", "progress", "publish-stream", "history", "stats", "stats-stream", "metrics"],
)
async def test_an_undecodable_token_is_a_401_not_a_500_with_a_traceback(
    secured, errors, credential, request_line, body
):
    status, doc = await raw(secured, request_line + b"\r\n" + credential, body)
    assert (status, doc["error"]["code"]) == (401, "invalid_token"), doc
    assert not error_lines(errors)


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"hub_token={token}"}


CROSS_SITE_WRITES = [
    # A form on another site: browsers send it with the cookie and without a preflight.
    ("/publish", {"Content-Type": "application/x-www-form-urlencoded"}, b"topic=csrf/a&data=forged"),
    ("/progress/csrf", {"Content-Type": "text/plain"}, b'{"current":1,"total":2}'),
    ("/publish/stream?topic=csrf/a", {"Content-Type": "text/plain"}, b"forged"),
]
FOREIGN_PAGES = [
    {"Origin": EVIL},
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {"Origin": "null"},  # a sandboxed frame, a data: URL
    {"Referer": EVIL + "/page"},  # no Origin: the Referer's origin is the page's
    {"Sec-Fetch-Site": "cross-site"},  # a browser that sent neither
    {"Origin": "http://127.0.0.1:1"},  # another port is another origin
]


OWN_PAGES = [
    {"Origin": APP},  # listed in cors.origins
    {"Sec-Fetch-Site": "same-origin"},  # the hub's own console
    {"Sec-Fetch-Site": "same-origin", "Origin": "OWN"},
    {"Origin": "OWN"},  # a browser without Sec-Fetch-Site, on the hub's own page
    {"Referer": "OWN/?topic=a"},
    {},  # not a browser: curl -b hub_token=…
]


@pytest.mark.parametrize(("path", "headers", "body"), CROSS_SITE_WRITES, ids=["form", "progress", "stream"])
async def test_cookie_authorized_writes_are_refused_from_other_sites_only(secured, path, headers, body):
    """From `Origin: https://evil.example`, a form POST to /publish, a text/plain POST to /progress and
    to /publish/stream were answered 200 and published: a CSRF through the hub_token cookie."""
    token = mint(publish=["**"], secret=SECRET)
    for page in FOREIGN_PAGES:
        async with secured.session.post(
            secured.url + path, data=body, headers={**headers, **cookie(token), **page}
        ) as resp:
            doc = await resp.json()
            assert (resp.status, doc["error"]["code"]) == (403, "origin_forbidden"), (page, doc)
    assert await history(secured, "csrf/a") == []
    assert await history(secured, "jobs/csrf") == []
    for page in OWN_PAGES:
        page = {k: v.replace("OWN", secured.url) for k, v in page.items()}
        async with secured.session.post(
            secured.url + path, data=body, headers={**headers, **cookie(token), **page}
        ) as resp:
            assert resp.status == 200, (page, await resp.text())
    # A token in the request itself: a foreign page cannot have it unless it was given it.
    bearer = {"Authorization": f"Bearer {token}"}
    async with secured.session.post(
        secured.url + path, data=body, headers={**headers, **bearer, "Origin": EVIL}
    ) as resp:
        assert resp.status == 200, await resp.text()
    # Reading changes nothing, and CORS decides who may read.
    async with secured.subscribe(
        "csrf/a", headers={**cookie(mint(subscribe=["**"], secret=SECRET)), "Origin": EVIL}
    ):
        pass


async def test_a_respelled_token_spends_the_same_publish_budget(hub_factory):
    hub = await hub_factory(
        auth__jwt_secret=SECRET, limits__publish_rate=0.1, limits__publish_burst=2, limits__max_batch=2
    )
    token = mint(publish=["**"], secret=SECRET)
    await hub.publish(
        [{"topic": "t", "data": i} for i in range(2)], headers={"Authorization": f"Bearer {token}"}
    )
    # PyJWT accepts a trailing `=`; a bucket keyed on the string gave it a fresh budget.
    status, doc = await hub.post(
        "/publish", json={"topic": "t", "data": 3}, headers={"Authorization": f"Bearer {token}="}
    )
    assert (status, doc["error"]["code"]) == (429, "rate_limited"), doc
    # Another token for the same subject is the same publisher.
    alice = [mint(publish=["**"], subject="alice", ttl=ttl, secret=SECRET) for ttl in (60, 120)]
    await hub.publish(
        [{"topic": "t", "data": i} for i in range(2)], headers={"Authorization": f"Bearer {alice[0]}"}
    )
    status, doc = await hub.post(
        "/publish", json={"topic": "t", "data": 3}, headers={"Authorization": f"Bearer {alice[1]}"}
    )
    assert (status, doc["error"]["code"]) == (429, "rate_limited"), doc


@pytest.mark.parametrize("path", ["/stats", "/metrics", "/stats/stream"])
async def test_stats_and_metrics_need_an_admin_token_when_auth_is_on(secured, path):
    async with secured.session.get(secured.url + path) as resp:
        assert (resp.status, (await resp.json())["error"]["code"]) == (401, "token_required")
    user = mint(publish=["**"], subscribe=["**"], secret=SECRET)
    async with secured.session.get(secured.url + path, headers={"Authorization": f"Bearer {user}"}) as resp:
        assert (resp.status, (await resp.json())["error"]["code"]) == (403, "admin_required")
    admin = mint(admin=True, secret=SECRET)
    # As the console sends it: EventSource cannot set a header.
    async with secured.session.get(secured.url + path, params={"token": admin}) as resp:
        assert resp.status == 200
        if path == "/stats/stream":
            assert b"event: stats" in await resp.content.readuntil(b"\n\n") + await resp.content.readuntil(
                b"\n\n"
            )


async def test_without_auth_stats_and_metrics_are_open_but_never_show_the_pid(hub):
    async with hub.session.get(hub.url + "/stats") as resp:
        doc = await resp.json()
    assert "pid" not in doc
    assert str(os.getpid()) not in orjson.dumps(doc).decode()
    assert doc["instance"]
    async with hub.session.get(hub.url + "/metrics") as resp:
        assert "pid" not in await resp.text()


def test_streams_per_address_are_limited_by_default():
    assert hub_config.build().limits.max_connections_per_ip == 64


async def test_anonymous_stats_streams_cannot_take_every_place(hub_factory):
    """With default limits, 150 anonymous /stats/stream connections took 144 places of 150: the next
    subscriber got 429."""
    hub = await hub_factory(limits__max_connections=80, server__trusted_proxies=("127.0.0.1",))
    crowd = {"X-Forwarded-For": "198.51.100.7"}
    held = []
    try:
        for _ in range(64):
            held.append(await hub.session.get(hub.url + "/stats/stream", headers=crowd))
            assert held[-1].status == 200
        async with hub.session.get(hub.url + "/stats/stream", headers=crowd) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (429, "too_many_connections")
        assert hub.running.runner.app[GUARD].connections.open == 64  # the stats streams are counted
        async with hub.subscribe("t", headers={"X-Forwarded-For": "198.51.100.8"}):
            pass
    finally:
        for resp in held:
            resp.close()


IPV6_NEIGHBOURS = ["2001:db8:7:7::1", "2001:db8:7:7::2", "2001:db8:7:7:ffff::3", "2001:db8:7:7::4"]


async def test_rotating_ipv6_addresses_within_a_64_does_not_dodge_the_stream_limit(hub_factory):
    hub = await hub_factory(limits__max_connections_per_ip=2, server__trusted_proxies=("127.0.0.1",))
    held = []
    try:
        for address in IPV6_NEIGHBOURS[:2]:
            held.append(
                await hub.session.get(hub.url + "/stats/stream", headers={"X-Forwarded-For": address})
            )
            assert held[-1].status == 200
        for address in IPV6_NEIGHBOURS[2:]:
            async with hub.session.get(
                hub.url + "/stats/stream", headers={"X-Forwarded-For": address}
            ) as resp:
                assert (resp.status, (await resp.json())["error"]["code"]) == (429, "too_many_connections")
        async with hub.subscribe("t", headers={"X-Forwarded-For": "2001:db8:7:8::1"}):
            pass  # the next /64 is someone else
    finally:
        for resp in held:
            resp.close()


async def test_rotating_ipv6_addresses_within_a_64_shares_one_publish_budget_and_key_scope(hub_factory):
    hub = await hub_factory(
        limits__publish_rate=0.01, limits__publish_burst=3, server__trusted_proxies=("127.0.0.1",)
    )
    first = await hub.publish(
        {"topic": "t", "data": 1},
        headers={"X-Forwarded-For": IPV6_NEIGHBOURS[0], "Idempotency-Key": "k-1"},
    )
    # Another address of the same /64 sending the same key is the same publisher retrying.
    again = await hub.publish(
        {"topic": "t", "data": 1},
        headers={"X-Forwarded-For": IPV6_NEIGHBOURS[1], "Idempotency-Key": "k-1"},
    )
    assert again == first  # (a retry spends budget too)
    await hub.publish({"topic": "t", "data": 2}, headers={"X-Forwarded-For": IPV6_NEIGHBOURS[2]})
    await hub.publish({"topic": "t", "data": 3}, expect=429, headers={"X-Forwarded-For": IPV6_NEIGHBOURS[3]})
    # An IPv4 client is the same client written as IPv4-mapped IPv6.
    for data in (4, 5, 6):
        await hub.publish({"topic": "t", "data": data}, headers={"X-Forwarded-For": "203.0.113.9"})
    await hub.publish(
        {"topic": "t", "data": 7}, expect=429, headers={"X-Forwarded-For": "::ffff:203.0.113.9"}
    )


async def test_connections_from_an_ipv6_peer_count_toward_its_64(hub_factory):
    hub = await hub_factory(server__host="::1", limits__max_http_connections_per_ip=10)
    table = hub.running.runner.table
    _, writer = await asyncio.open_connection("::1", hub.running.port)
    try:
        await settled(lambda: table.held_by("::/64") == 1)
    finally:
        writer.close()
