"""The serving process itself, as `hub serve` runs it."""

from __future__ import annotations

import asyncio
import gc

from hub.config import load
from hub.server import GC_THRESHOLDS, free_port, serve
from tests.support.waiting import settled


async def test_a_serving_process_keeps_its_start_up_out_of_the_collectors_passes():
    thresholds = gc.get_threshold()
    gc.unfreeze()
    config = load(None, {}, {"server.port": free_port()})
    server = asyncio.create_task(serve(config))
    try:
        await settled(lambda: gc.get_freeze_count() > 0)
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
