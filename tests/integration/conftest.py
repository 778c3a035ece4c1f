from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bench.processes import HubProcess


@pytest.fixture
async def processes() -> AsyncIterator[list[HubProcess]]:
    """`hub serve` processes a test starts; stopped after it. Async, so that they stop before the event
    loop closes: the threads that read their output end with them, and closing the loop waits on those."""
    started: list[HubProcess] = []
    yield started
    for proc in started:
        proc.stop()
