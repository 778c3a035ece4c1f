"""Fuzzing the live hub from its OpenAPI description, on both brokers.

schemathesis generates requests, valid and hostile, for every endpoint; they go over real sockets to the
real server. Every response must conform to `hub/openapi.json` (documented status and media type, the
JSON error shape, no 5xx). Afterwards nothing may be left subscribed, here or in Redis, no error may have
been logged, and the hub must still deliver.

`HUB_FUZZ_EXAMPLES` sets the requests per endpoint: a small default keeps the suite fast; the full run
(README, "Fuzzing") sends 10,000 per endpoint. Run with `-s` to see each endpoint's report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from importlib import resources

import pytest

from hub.http.auth import mint
from hub.http.server import max_request_line
from hub.http.state import CONFIG, GUARD
from tests.support.fuzz import fuzz
from tests.support.waiting import settled

SECRET = "fuzzing-secret-of-at-least-32-bytes"
EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "100"))
# Generous, for the per-test timeout of a full run on a loaded machine: 10-40 ms per request is typical.
SECONDS_PER_EXAMPLE = 0.1

OPERATIONS = [
    (path, method.upper())
    for path, item in json.loads(resources.files("hub").joinpath("openapi.json").read_text("utf-8"))[
        "paths"
    ].items()
    for method in item
]


@pytest.mark.timeout(60 + EXAMPLES * SECONDS_PER_EXAMPLE)
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
@pytest.mark.parametrize("auth", ["off", "jwt"])
# The parsers under fuzz are the same whatever the broker; the cluster broker's client draws from the
# global `random` while schemathesis generates, which hypothesis refuses as flaky generation.
@pytest.mark.parametrize("broker_kind", ["memory", "redis"], indirect=True)
async def test_generated_requests_get_described_answers_and_leave_nothing_behind(
    hub_factory, broker_kind, redis_factory, caplog, path, method, auth
):
    # Its own Redis, so that PUBSUB NUMPAT counts this hub's patterns and nobody else's.
    redis = redis_factory() if broker_kind == "redis" else None
    tokens: list[str] = []
    settings = {}
    if auth == "jwt":
        # A public corner, and tokens for some of the requests: refusals and acceptances both get fuzzed.
        settings = {"auth__jwt_secret": SECRET, "auth__public_topics": ("public/**",)}
        tokens = [
            mint(publish=["**"], subscribe=["**"], secret=SECRET),
            mint(publish=["a/*"], subscribe=["a/**", "b"], secret=SECRET),
            mint(secret=SECRET, ttl=-60),
        ]
    hub = await hub_factory(redis.url if redis else None, **settings)
    await settled(lambda: hub.fanout.broker.ready)  # until then the hub rightly answers 503

    report = await asyncio.to_thread(
        fuzz, hub.url, path, method, EXAMPLES, max_request_line(hub.running.runner.app[CONFIG]), tokens
    )
    print(f"\n[{broker_kind}] {report.line()}")
    assert report.sent >= EXAMPLES

    # A stream's client hung up after its first bytes: each must have been noticed and dropped.
    with contextlib.suppress(TimeoutError):
        await settled(lambda: set(hub.fanout.registrations().values()) == {0})
    assert hub.fanout.registrations() == dict.fromkeys(hub.fanout.registrations(), 0)
    await settled(lambda: hub.running.runner.app[GUARD].connections.open == 0)
    if redis is not None:
        prefix = hub.running.runner.app[CONFIG].redis.prefix
        await settled(lambda: redis.numpat() == 0)
        await settled(lambda: redis.command("PUBSUB", "CHANNELS", f"{prefix}:t:*") == b"*0\r\n")
    # Requests aiohttp's parser refuses too: answered 400 and logged at debug, never as errors.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    admin = {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}
    async with hub.subscribe("fuzz/after", headers=admin) as stream:
        doc = await hub.publish({"topic": "fuzz/after", "data": "still serving"}, headers=admin)
        event = await stream.next_event()
        assert (event.id, event.data) == (doc["id"], "still serving")
