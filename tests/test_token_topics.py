"""`/events` with a token and no topic subscribes to what the token grants, as Mercure does."""

from __future__ import annotations

import pytest

from hub.http.auth import mint
from tests.support.hub_client import HubUnderTest
from tests.support.sse_reader import SseStream
from tests.support.waiting import settled

SECRET = "token-topics-secret-of-at-least-32-bytes"


@pytest.fixture
async def hub(hub_factory) -> HubUnderTest:
    hub = await hub_factory(auth__jwt_secret=SECRET)
    await settled(lambda: hub.fanout.broker.ready)
    return hub


async def test_a_token_alone_subscribes_to_its_grants(hub):
    token = mint(subscribe=["users/42/**", "news"], secret=SECRET)
    publisher = {"Authorization": "Bearer " + mint(publish=["**"], secret=SECRET)}
    async with hub.session.get(hub.url + "/events", params={"token": token}) as resp:
        assert resp.status == 200
        stream = SseStream(resp)
        await settled(lambda: hub.fanout.connections == 1)
        for topic in ("users/7/inbox", "users/42/inbox", "elsewhere", "news"):
            await hub.publish({"topic": topic, "data": topic}, headers=publisher)
        assert [e.data for e in await stream.take(2)] == ["users/42/inbox", "news"]


@pytest.mark.parametrize(
    "params",
    [
        {},  # no token, no topic
        {"token": mint(publish=["news"], secret=SECRET)},  # a token that grants no subscription
    ],
    ids=["nothing", "publish-only-token"],
)
async def test_without_topics_to_subscribe_it_is_a_400(hub, params):
    async with hub.session.get(hub.url + "/events", params=params) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "missing_topic"


async def test_a_bad_token_without_topics_is_a_401(hub):
    async with hub.session.get(hub.url + "/events", params={"token": "not-a-jwt"}) as resp:
        assert resp.status == 401


async def test_a_token_granting_more_than_max_topics_must_name_them(hub_factory):
    hub = await hub_factory(auth__jwt_secret=SECRET, limits__max_topics=2)
    token = mint(subscribe=["a", "b", "c"], secret=SECRET)
    async with hub.session.get(hub.url + "/events", params={"token": token}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "too_many_topics"
    async with hub.session.get(hub.url + "/events", params={"token": token, "topic": "a"}) as resp:
        assert resp.status == 200
