from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.processes import RedisCluster, RedisProcess
from hub import config as hub_config
from hub.http.server import start
from tests.support.hub_client import HubUnderTest

HubFactory = Callable[..., Awaitable[HubUnderTest]]
ROOT = Path(__file__).parent.parent


@pytest.fixture
def container_check() -> Iterator[subprocess.Popen[str]]:
    """`deploy/check.py`, started for tests/test_container.py: it waits on Docker for most of its minute
    or two, while the other pytest-xdist worker goes on with the suite."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy" / "check.py"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # the test failed or was cut short: the check cleans up what it made
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=60)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.close()


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisProcess]]:
    """Start more redis-servers; each test owns and may kill them."""
    started: list[RedisProcess] = []

    def make(*args: str, port: int | None = None) -> RedisProcess:
        server = RedisProcess(*args, port=port).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three primaries, no replicas, shared by the session: a test that moves slots or fails nodes over
    starts its own with redis_cluster_factory."""
    cluster = RedisCluster().start()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_cluster_factory() -> Iterator[Callable[..., RedisCluster]]:
    """Start more Redis Clusters (`make(primaries=3, replicas=1)`); each is closed after the test."""
    started: list[RedisCluster] = []

    def make(primaries: int = 3, replicas: int = 0, **kwargs: Any) -> RedisCluster:
        cluster = RedisCluster(primaries, replicas, **kwargs)
        started.append(cluster)
        return cluster.start()

    yield make
    for cluster in started:
        cluster.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def hub_factory(broker_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[HubFactory]:
    prefix = "t" + uuid.uuid4().hex[:10]
    stops = []
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def make(redis_url: str | None = None, **overrides: Any) -> HubUnderTest:
        values = {k.replace("__", "."): v for k, v in overrides.items()}
        values.setdefault("server.port", 0)
        if broker_kind in ("redis", "cluster"):
            if redis_url is None:
                server = "redis_server" if broker_kind == "redis" else "redis_cluster"
                redis_url = request.getfixturevalue(server).url
            values.setdefault("redis.url", redis_url)
            values.setdefault("redis.prefix", prefix)
        running = await start(hub_config.build(overrides=values))
        stops.append(running)
        return HubUnderTest(running, session)

    yield make
    for running in stops:
        await running.stop()
    await session.close()


@pytest.fixture
async def hub(hub_factory: HubFactory) -> HubUnderTest:
    return await hub_factory()
