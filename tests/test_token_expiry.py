"""A stream opened with a token that expires is told `auth-expiring` before its exp and closed at it with
a `retry:`; reconnecting with a fresh token and the last id loses nothing, and the Python client given a
token provider does that by itself. On memory, Redis and a Redis Cluster (the `hub` fixtures)."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest

from hub.client import HubClient, HubRefused
from hub.http.auth import CLAIM, mint
from hub.http.expiry import StreamExpiry
from tests.support.hub_client import HubUnderTest
from tests.support.sse_reader import SseStream
from tests.support.waiting import settled

SECRET = "expiry-secret-of-at-least-32-bytes-long"
NOTICE = 1.0


def token_until(exp: float, *selectors: str) -> str:
    """A token granting `selectors` (both ways) until exactly `exp`."""
    claims = {CLAIM: {"publish": list(selectors), "subscribe": list(selectors)}, "exp": exp}
    return jwt.encode(claims, SECRET, "HS256")


@pytest.fixture
async def hub(hub_factory) -> HubUnderTest:
    hub = await hub_factory(
        auth__jwt_secret=SECRET, auth__expiry_notice=NOTICE, auth__public_topics=("public/**",)
    )
    await settled(lambda: hub.fanout.broker.ready)
    return hub


async def publish(hub: HubUnderTest, topic: str, data: object) -> str:
    publisher = {"Authorization": "Bearer " + mint(publish=["**"], secret=SECRET)}
    return str((await hub.publish({"topic": topic, "data": data}, headers=publisher))["id"])


async def test_a_stream_is_told_before_its_token_expires_and_closed_at_exp_losing_nothing(hub):
    exp = int(time.time()) + 3
    token = token_until(exp, "jobs/1")
    async with hub.session.get(hub.url + "/events", params={"topic": "jobs/1", "token": token}) as resp:
        assert resp.status == 200
        stream = SseStream(resp)
        await publish(hub, "jobs/1", "before")
        assert (await stream.next_event()).data == "before"
        notice = await stream.next_event(timeout=5)
        told_at = time.time()
        assert notice.event == "auth-expiring"
        assert 0 <= int(notice.data) <= NOTICE + 1
        assert exp - NOTICE - 0.5 <= told_at <= exp
        last_id = stream.last_event_id
        assert await stream.ended(timeout=5)
        assert exp - 0.5 <= time.time() <= exp + 1.5  # at exp, not at exp + the verification leeway
        assert stream.raw.endswith(b"\nretry: 3000\n\n")
        assert b": the token expired" in stream.raw
    # Published while it was away: a fresh token and the last id get exactly that, once.
    missed = await publish(hub, "jobs/1", "while away")
    fresh = token_until(time.time() + 60, "jobs/1")
    headers = {"Last-Event-ID": last_id}
    async with hub.session.get(
        hub.url + "/events", params={"topic": "jobs/1", "token": fresh}, headers=headers
    ) as resp:
        assert resp.status == 200
        again = SseStream(resp)
        event = await again.next_event()
        assert (event.data, event.id) == ("while away", missed)
    # The expired one is refused now: the end was not a hiccup to retry with the same token.
    async with hub.session.get(hub.url + "/events", params={"topic": "jobs/1", "token": token}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "token_expired"


async def test_ndjson_streams_get_the_notice_as_a_line_of_their_own(hub):
    token = token_until(int(time.time()) + 2, "jobs/2")
    params = {"topic": "jobs/2", "token": token, "format": "ndjson"}
    async with hub.session.get(hub.url + "/events", params=params) as resp:
        assert resp.status == 200
        async with asyncio.timeout(6):
            body = await resp.read()  # to the end, which comes at exp
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert next(line for line in lines if line.get("event") == "auth-expiring")["data"] <= NOTICE + 1


# What the broker does not take part in, on one broker: waiting for an exp costs seconds per run.
ONE_BROKER = pytest.mark.parametrize("broker_kind", ["memory"])


@ONE_BROKER
async def test_a_stream_of_public_topics_does_not_end_with_the_token_it_showed(hub):
    token = token_until(int(time.time()) + 2, "jobs/3")
    async with hub.session.get(hub.url + "/events", params={"topic": "public/news", "token": token}) as resp:
        assert resp.status == 200
        stream = SseStream(resp)
        await asyncio.sleep(3)
        await publish(hub, "public/news", "still here")
        assert (await stream.next_event()).data == "still here"
        assert not any(e.event == "auth-expiring" for e in stream.events)


async def test_the_client_with_a_token_provider_renews_its_stream_and_loses_nothing(hub):
    issued = []

    async def provider() -> str:
        issued.append(time.time())
        return token_until(int(time.time()) + 2, "feed")  # 1 to 2 s each: a renewal every second or so

    received: list[str] = []
    async with HubClient(hub.url, token_provider=provider) as client:
        subscription = client.subscribe("feed")

        async def read() -> None:
            async for event in subscription:
                received.append(event.data)

        reader = asyncio.create_task(read())
        await settled(lambda: subscription.connections >= 1 and hub.fanout.connections >= 1)
        sent = []
        for n in range(40):  # 4 s: past two or three expiries
            await publish(hub, "feed", n)
            sent.append(str(n))
            await asyncio.sleep(0.1)
        await settled(lambda: len(received) >= len(sent))
        reader.cancel()
    assert received == sent
    assert subscription.renewals >= 2
    assert len(issued) >= 3


@ONE_BROKER
async def test_the_client_without_a_provider_hands_the_notice_on_and_stops_at_the_refusal(hub):
    token = token_until(int(time.time()) + 2, "jobs/4")
    events = []

    async def read() -> None:
        async with HubClient(hub.url, token=token) as client, asyncio.timeout(10):
            async for event in client.subscribe("jobs/4"):
                events.append(event)

    with pytest.raises(HubRefused, match="token_expired"):
        await read()
    assert [e.event for e in events] == ["auth-expiring"]


async def test_the_timers_of_a_stream_that_ends_first_are_cancelled(hub):
    token = token_until(int(time.time()) + 3, "jobs/5")
    async with hub.session.get(hub.url + "/events", params={"topic": "jobs/5", "token": token}) as resp:
        assert resp.status == 200
    await settled(lambda: hub.fanout.connections == 0)
    handles = [
        h
        for h in asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
        if getattr(h, "_callback", None) is not None
        and isinstance(getattr(h._callback, "__self__", None), StreamExpiry)
        and not h.cancelled()
    ]
    assert handles == []
