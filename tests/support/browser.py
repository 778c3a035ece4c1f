"""Debian's Chromium, headless, driven by Playwright: the console is tested in a real browser.

Never `playwright install`: CI installs the `chromium` package (.ci/run). A missing browser fails the
test rather than skipping it, so that a console nobody tested cannot pass for a tested one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 10_000


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def log_entries(page: Page, kind: str = "event") -> list[dict[str, str]]:
    """The console's log lines of one kind, oldest first: what the page shows."""
    result: list[dict[str, str]] = await page.eval_on_selector_all(
        f'#log li[data-kind="{kind}"]',
        """items => items.map(li => ({
            id: li.dataset.id, event: li.dataset.event, sub: li.dataset.sub, topic: li.dataset.topic,
            data: li.querySelector('.data').textContent,
        }))""",
    )
    return result


# Predicates are written as functions: a bare expression is evaluated with `eval` inside the page, which
# the console's Content-Security-Policy forbids once Playwright has to poll.
async def wait_for_entries(page: Page, count: int, kind: str = "event") -> list[dict[str, str]]:
    await page.wait_for_function(
        '([kind, count]) => document.querySelectorAll(`#log li[data-kind="${kind}"]`).length >= count',
        arg=[kind, count],
        timeout=TIMEOUT_MS,
    )
    return await log_entries(page, kind)


async def topic_counts(page: Page) -> dict[str, int]:
    """The topics panel: each selector listed, with the streams it shows."""
    rows: list[list[str]] = await page.eval_on_selector_all(
        "#topics li[data-selector]",
        "items => items.map(li => [li.dataset.selector, li.querySelector('.count').textContent])",
    )
    return {selector: int(count) for selector, count in rows}


async def wait_for_topic_count(page: Page, selector: str, count: int) -> None:
    """Until the panel shows `count` streams for `selector` (0: until it is no longer listed)."""
    await page.wait_for_function(
        """([selector, count]) => {
            const row = [...document.querySelectorAll('#topics li[data-selector]')]
                .find(li => li.dataset.selector === selector);
            return row ? row.querySelector('.count').textContent === String(count) : count === 0;
        }""",
        arg=[selector, count],
        timeout=TIMEOUT_MS,
    )


async def members(page: Page) -> list[dict[str, str]]:
    """The presence shown for the topic picked in the panel, as the page lists it."""
    result: list[dict[str, str]] = await page.eval_on_selector_all(
        "#members li",
        """items => items.map(li => ({
            conn: li.dataset.conn, name: li.dataset.name, sub: li.dataset.sub,
            selector: li.dataset.selector, you: li.dataset.you || '',
            who: li.querySelector('.who').textContent, since: li.querySelector('.since').textContent,
        }))""",
    )
    return result


async def wait_for_members(page: Page, count: int) -> list[dict[str, str]]:
    await page.wait_for_function(
        "count => document.querySelectorAll('#members li').length === count", arg=count, timeout=TIMEOUT_MS
    )
    return await members(page)
