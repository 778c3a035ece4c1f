from __future__ import annotations

import asyncio
from collections.abc import Callable


async def settled(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `predicate()` holds: for state that lives in another process, such as Redis."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
