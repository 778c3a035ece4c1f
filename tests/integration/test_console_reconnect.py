"""The console across a restart of the hub process: the browser's own EventSource reconnect resumes."""

from __future__ import annotations

import uuid

import aiohttp

from bench.processes import HubProcess
from tests.support.browser import TIMEOUT_MS, chromium, log_entries, wait_for_entries


async def publish(session: aiohttp.ClientSession, url: str, data: str) -> str:
    async with session.post(url + "/publish", json={"topic": "restart/feed", "data": data}) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["id"])


async def test_browser_reconnects_after_a_hub_restart_and_gets_what_it_missed_once(redis_server):
    # Redis keeps the history across the restart; a second replica takes publishes while the first is down.
    env = {"HUB_REDIS_PREFIX": "console-" + uuid.uuid4().hex[:8], "HUB_SSE_RETRY": "300"}
    hub = HubProcess("--redis", redis_server.url, env=env)
    other = HubProcess("--redis", redis_server.url, env=env)
    try:
        await hub.ready()
        await other.ready()
        async with chromium() as browser, aiohttp.ClientSession() as session:
            context = await browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            try:
                page = await context.new_page()
                await page.goto(hub.url + "/?topic=restart/feed")
                await page.wait_for_selector('#log li[data-kind="open"]')
                ids = [await publish(session, hub.url, f"before {n}") for n in range(3)]
                await wait_for_entries(page, 3)

                assert hub.stop() == 0
                await page.wait_for_selector('#log li[data-event="reconnecting"]')
                ids += [await publish(session, other.url, f"while away {n}") for n in range(3)]
                hub.start()
                await hub.ready()
                await page.wait_for_selector('#log li[data-event="reconnected"]')
                ids += [await publish(session, hub.url, f"after {n}") for n in range(2)]

                entries = await wait_for_entries(page, len(ids))
                assert [entry["id"] for entry in entries] == ids
                assert [entry["data"] for entry in entries[3:6]] == [f"while away {n}" for n in range(3)]
                # The browser came back by itself, from its Last-Event-ID: nothing refused, nothing reset.
                assert await page.locator('#log li[data-event="closed"]').count() == 0
                assert await log_entries(page, "reset") == []
            finally:
                await context.close()
    finally:
        hub.stop()
        other.stop()
