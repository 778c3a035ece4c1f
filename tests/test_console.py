"""The web console in a real browser (Debian's Chromium, headless), and the stats stream behind it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, BrowserContext

from hub.http.auth import mint
from hub.http.state import CONFIG, GUARD
from tests.support.browser import (
    TIMEOUT_MS,
    chromium,
    log_entries,
    topic_counts,
    wait_for_entries,
    wait_for_members,
    wait_for_topic_count,
)
from tests.support.waiting import settled

OUTPUT = Path(__file__).parent / "output"


@pytest.fixture
def broker_kind() -> str:
    return "memory"  # the page sees the same stream whatever the broker: one is enough


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    await context.close()


def console_url(hub, **params) -> str:
    return hub.url + "/?" + urlencode(params, doseq=True)


async def test_page_and_files_are_served_from_the_package(hub):
    async with hub.session.get(hub.url + "/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
    assert '<script src="/static/console.js"' in page
    # Nothing loaded from elsewhere: the console works offline.
    assert "http://" not in page
    assert "https://" not in page
    files = [("console.js", "text/javascript"), ("console.css", "text/css"), ("favicon.svg", "image/svg+xml")]
    for name, content_type in files:
        async with hub.session.get(f"{hub.url}/static/{name}") as resp:
            assert resp.status == 200
            assert resp.content_type == content_type
    assert '<link rel="icon" href="/static/favicon.svg"' in page
    # What browsers ask for, whatever the page links: not a 404.
    async with hub.session.get(hub.url + "/favicon.ico") as resp:
        assert resp.status == 200
        assert resp.content_type == "image/svg+xml"
        assert (await resp.read()).startswith(b"<svg")
    async with hub.session.get(hub.url + "/static/..%2Fopenapi.json") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_stats_stream_sends_the_stats_every_second_and_releases_its_place(hub):
    connections = hub.running.runner.app[GUARD].connections
    async with hub.session.get(hub.url + "/stats/stream") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        blocks: list[bytes] = []
        buffer = b""
        while len(blocks) < 3:
            buffer += await resp.content.readany()
            *done, buffer = buffer.split(b"\n\n")
            blocks.extend(done)
    assert blocks[0].startswith(b"retry: ")
    stats = [json.loads(block.split(b"data: ", 1)[1]) for block in blocks[1:]]
    assert all(block.startswith(b"event: stats\n") for block in blocks[1:])
    assert stats[0]["instance"] == stats[1]["instance"]
    assert stats[1]["uptime"] - stats[0]["uptime"] >= 0.9
    # Counted like any stream while open, so that the per-client limit covers it; released once left.
    await settled(lambda: connections.open == 0)


async def test_stats_stream_ends_at_shutdown_with_a_retry_rather_than_holding_it_up(hub):
    async with hub.session.get(hub.url + "/stats/stream") as resp:
        await resp.content.readuntil(b"event: stats")
        async with asyncio.timeout(5):  # well under shutdown_timeout: the stream ended on its own
            await hub.running.stop()
            rest = await resp.content.read()
    # Its own delay within the window, as every stream's: the consoles of a replica going away do not
    # all come back in the same instant.
    last = rest.rsplit(b"\n\n", 2)[-2]
    assert last.startswith(b"retry: ")
    assert 0 <= int(last.removeprefix(b"retry: ")) <= hub.running.runner.app[CONFIG].sse.retry


async def test_event_source_in_the_page_gets_named_multiline_and_unicode_events_in_order(hub, context):
    page = await context.new_page()
    await page.goto(console_url(hub, topic="browser/order"))
    await page.wait_for_selector('#log li[data-kind="open"]')
    sent = [
        {"topic": "browser/order", "data": {"n": 1, "text": "héllo ✓ 🌍"}},
        {"topic": "browser/order", "event": "update", "data": "first line\nsecond line\r\nthird"},
        {"topic": "browser/order", "data": "日本語のテキスト"},
        {"topic": "browser/order", "event": "update", "data": [1, 2, 3]},
    ]
    ids = [(await hub.publish(body))["id"] for body in sent]
    entries = await wait_for_entries(page, len(sent))
    assert [entry["id"] for entry in entries] == ids
    assert [entry["event"] for entry in entries] == ["message", "update", "message", "update"]
    assert json.loads(entries[0]["data"]) == {"n": 1, "text": "héllo ✓ 🌍"}
    # Exactly as published, line breaks and all (the page reads NDJSON, not EventSource's data lines).
    assert entries[1]["data"] == "first line\nsecond line\r\nthird"
    assert entries[2]["data"] == "日本語のテキスト"
    assert json.loads(entries[3]["data"]) == [1, 2, 3]


async def test_every_event_is_shown_once_with_its_topic_whatever_its_type(hub, context):
    # No event name typed anywhere: a type first seen in the stream is shown, and shown once.
    page = await context.new_page()
    await page.goto(console_url(hub, topic="browser/typed/*"))
    await page.wait_for_selector('#log li[data-kind="open"]')
    sent = [
        {"topic": "browser/typed/a", "event": "surprise", "data": 1},
        {"topic": "browser/typed/b", "data": "plain"},
        {"topic": "browser/typed/a", "event": "surprise", "data": 2},
    ]
    ids = [(await hub.publish(body))["id"] for body in sent]
    entries = await wait_for_entries(page, 3)
    await page.wait_for_timeout(300)
    entries = await log_entries(page)
    assert [(e["id"], e["event"], e["topic"]) for e in entries] == [
        (ids[0], "surprise", "browser/typed/a"),
        (ids[1], "message", "browser/typed/b"),
        (ids[2], "surprise", "browser/typed/a"),
    ]


async def test_a_refused_selector_shows_the_hubs_reason_once_and_is_not_retried(hub, context):
    page = await context.new_page()
    await page.goto(console_url(hub, topic="bad/**/selector"))
    (refusal,) = await wait_for_entries(page, 1, kind="error")
    assert refusal["event"] == "refused"
    # The hub's own answer, code and message, as a user needs it to mend the selector.
    assert refusal["data"].startswith("400 invalid_selector: selector 'bad/**/selector'")
    await page.wait_for_timeout(2500)  # past several reopen delays
    assert len(await log_entries(page, "error")) == 1
    assert await page.text_content("#subscriptions li .status") == "refused"


async def test_reset_is_shown_when_resuming_from_an_id_the_hub_cannot_vouch_for(hub, context):
    await hub.publish({"topic": "browser/reset", "data": "before"})
    page = await context.new_page()
    await page.goto(console_url(hub, topic="browser/reset", lastEventId="zzzzzz-5"))
    resets = await wait_for_entries(page, 1, kind="reset")
    assert "reason" in json.loads(resets[0]["data"])
    assert await page.locator('#log li[data-kind="reset"]').is_visible()


async def test_publish_form_delivers_to_a_second_tab(hub, context):
    watcher = await context.new_page()
    await watcher.goto(hub.url + "/")
    await watcher.fill('#subscribe-form [name="topics"]', "tabs/*")
    await watcher.click('#subscribe-form button[type="submit"]')
    await watcher.wait_for_selector('#log li[data-kind="open"]')

    publisher = await context.new_page()
    await publisher.goto(hub.url + "/")
    await publisher.fill('#publish-form [name="topic"]', "tabs/one")
    await publisher.fill('#publish-form [name="event"]', "note")
    await publisher.fill('#publish-form [name="data"]', '{"from": "the other tab"}')
    await publisher.click('#publish-form button[type="submit"]')
    await publisher.wait_for_function(
        "() => document.querySelector('#publish-result').textContent.startsWith('published')"
    )
    published_id = (await publisher.text_content("#publish-result") or "").removeprefix("published ")

    (entry,) = await wait_for_entries(watcher, 1)
    assert entry["id"] == published_id
    assert entry["event"] == "note"
    assert json.loads(entry["data"]) == {"from": "the other tab"}


async def publish_bytes(hub, data: bytes, **query: str) -> str:
    """A binary event, published the way any HTTP client does it: the body is the data."""
    status, answer = await hub.post(
        "/publish", params=query, data=data, headers={"Content-Type": "application/octet-stream"}
    )
    assert status == 200, answer
    return str(answer["id"])


async def binary_entries(page) -> list[dict[str, str]]:
    """The log's binary events: their marks and the parts of their data cell."""
    result: list[dict[str, str]] = await page.eval_on_selector_all(
        '#log li[data-kind="event"][data-encoding]',
        """items => items.map(li => ({
            id: li.dataset.id, event: li.dataset.event, encoding: li.dataset.encoding, size: li.dataset.size,
            data: li.querySelector('.data').textContent,
            hex: li.querySelector('.data .hex')?.textContent ?? null,
            ascii: li.querySelector('.data .ascii')?.textContent ?? null,
        }))""",
    )
    return result


async def test_a_binary_event_shows_its_size_and_first_bytes_in_hex_beside_a_text_event(hub, context):
    page = await context.new_page()
    await page.goto(console_url(hub, topic="browser/bytes"))
    await page.wait_for_selector('#log li[data-kind="open"]')
    binary_id = await publish_bytes(hub, b"\x00\x01\xfe\xffhello", topic="browser/bytes")
    text_id = (await hub.publish({"topic": "browser/bytes", "data": {"n": 1}}))["id"]
    named_id = await publish_bytes(hub, b"", topic="browser/bytes", event="frame")
    entries = await wait_for_entries(page, 3)
    assert [entry["id"] for entry in entries] == [binary_id, text_id, named_id]
    shown = {entry["id"]: entry for entry in await binary_entries(page)}
    assert shown.keys() == {binary_id, named_id}  # the text event is not marked binary
    assert shown[binary_id] == {
        "id": binary_id,
        "event": "binary",
        "encoding": "base64",
        "size": "9",
        "data": "binary \u00b7 9 bytes\n00 01 fe ff 68 65 6c 6c 6f\n....hello",
        "hex": "00 01 fe ff 68 65 6c 6c 6f",
        "ascii": "....hello",
    }
    # Named by its publisher, shown under that name; no bytes, no preview.
    assert shown[named_id]["event"] == "frame"
    assert shown[named_id]["size"] == "0"
    assert shown[named_id]["data"] == "binary \u00b7 0 bytes"
    # The text event beside them, as before: JSON laid out.
    assert entries[1]["event"] == "message"
    assert json.loads(entries[1]["data"]) == {"n": 1}
    assert await page.get_attribute(f'#log li[data-id="{text_id}"]', "data-encoding") is None


async def test_a_large_binary_event_shows_only_its_first_bytes(hub, context):
    page = await context.new_page()
    await page.goto(console_url(hub, topic="browser/bytes"))
    await page.wait_for_selector('#log li[data-kind="open"]')
    data = bytes(range(256)) * 800  # 204,800 bytes: 273,068 characters of base64
    event_id = await publish_bytes(hub, data, topic="browser/bytes", event="blob")
    await wait_for_entries(page, 1)
    (shown,) = await binary_entries(page)
    assert shown["id"] == event_id
    assert shown["size"] == str(len(data))
    assert shown["hex"] == " ".join(f"{b:02x}" for b in range(32)) + " \u2026"
    assert shown["ascii"] == "." * 32 + "\u2026"
    assert shown["data"].startswith("binary \u00b7 204,800 bytes\n")
    # Nothing but the preview in the page.
    assert len(await page.text_content("#log")) < 2000


async def test_publish_form_sends_a_chosen_file_as_a_binary_event(hub, context):
    page = await context.new_page()
    await page.goto(console_url(hub, topic="browser/files"))
    await page.wait_for_selector('#log li[data-kind="open"]')
    content = b"\x89PNG\r\n\x1a\n" + bytes(40)
    await page.fill('#publish-form [name="event"]', "upload")
    await page.set_input_files(
        '#publish-form [name="file"]',
        files=[{"name": "image.png", "mimeType": "image/png", "buffer": content}],
    )
    # The data typed is not what is sent while a file is chosen.
    assert await page.is_disabled('#publish-form [name="data"]')
    await page.click('#publish-form button[type="submit"]')
    (entry,) = await wait_for_entries(page, 1)
    assert await page.text_content("#publish-result") == f"published {entry['id']}"
    (shown,) = await binary_entries(page)
    assert (shown["event"], shown["size"]) == ("upload", str(len(content)))
    assert shown["hex"] == " ".join(f"{b:02x}" for b in content[:32]) + " \u2026"
    # What a subscriber gets is the file, byte for byte.
    async with hub.session.get(
        hub.url + "/topics/browser/files/history", params={"format": "ndjson"}
    ) as resp:
        (doc,) = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert doc["encoding"] == "base64"
    assert base64.b64decode(doc["data"]) == content

    # The file unchosen: the data typed is published again, as JSON.
    await page.click("#file-clear")
    assert await page.is_hidden("#file-clear")
    await page.fill('#publish-form [name="event"]', "")
    await page.fill('#publish-form [name="data"]', "just text")
    await page.click('#publish-form button[type="submit"]')
    entries = await wait_for_entries(page, 2)
    assert (entries[1]["event"], entries[1]["data"]) == ("message", "just text")
    assert len(await binary_entries(page)) == 1


async def test_pause_holds_events_and_clear_empties_the_log(hub, context):
    page = await context.new_page()
    await page.goto(console_url(hub, topic="browser/pause"))
    await page.wait_for_selector('#log li[data-kind="open"]')
    await page.click("#pause")
    await hub.publish({"topic": "browser/pause", "data": "held"})
    await page.wait_for_function("() => document.querySelector('#log-count').textContent.includes('+1 held')")
    assert await log_entries(page) == []
    await page.click("#pause")
    (entry,) = await wait_for_entries(page, 1)
    assert entry["data"] == "held"
    await page.click("#clear")
    assert await page.locator("#log li").count() == 0


async def test_screenshot_of_the_console_with_live_data(hub, context):
    streams = contextlib.AsyncExitStack()
    for name in ("alice", "bob"):
        await streams.enter_async_context(hub.subscribe("demo/chat", name=name))
    for _ in range(3):
        await streams.enter_async_context(hub.subscribe("demo/prices"))
    page = await context.new_page()
    await page.goto(console_url(hub, topic="demo/**", name="console"))
    await page.wait_for_selector('#log li[data-kind="open"]')
    await wait_for_topic_count(page, "demo/**", 1)
    await page.click('#topics li[data-selector="demo/chat"] button')
    # A few seconds of varying traffic, so that the charts have a shape.
    for n in range(12):
        await hub.publish(
            {"topic": "demo/prices", "event": "price", "data": {"symbol": "ACME", "price": 100 + n}}
        )
        if n % 3:
            await hub.publish({"topic": "demo/chat", "data": f"message {n} ✓"})
        if n == 10:  # and bytes: a job's thumbnail, shown by its size and first bytes
            await publish_bytes(hub, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, topic="demo/thumbs")
        await page.wait_for_timeout(150 + 50 * (n % 4))
    await wait_for_entries(page, 21)
    # Charts drawn from at least a few stats samples.
    await page.wait_for_function("() => document.querySelector('#rate-now').textContent !== '\\u2013'")
    # The topics panel with the presence of demo/chat: two named streams and the console's own.
    await wait_for_members(page, 3)
    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "console.png"
    await page.screenshot(path=str(shot), full_page=True)
    await streams.aclose()
    assert shot.stat().st_size > 10_000  # docs/console.png, in the README, is a copy of one


async def streams_shown(page) -> str:
    return await page.text_content("#streams-now") or ""


async def test_topics_panel_counts_each_selectors_streams_and_follows_one_closing(hub, context):
    page = await context.new_page()
    asked: list[float] = []
    loop = asyncio.get_running_loop()
    page.on("request", lambda r: asked.append(loop.time()) if "/subscriptions?" in r.url else None)
    await page.goto(hub.url + "/")
    await page.wait_for_selector("#topics li.hint")  # the stats stream is no subscription
    assert await streams_shown(page) == "0"
    async with hub.subscribe("panel/room"), hub.subscribe("panel/*"):
        async with hub.subscribe("panel/room"):
            await wait_for_topic_count(page, "panel/room", 2)
            await wait_for_topic_count(page, "panel/*", 1)
            assert await streams_shown(page) == "3"
            assert await page.get_attribute("#topics-status", "data-state") == "open"
        # Polled, not pushed: the next round shows the stream gone.
        await wait_for_topic_count(page, "panel/room", 1)
        assert await topic_counts(page) == {"panel/room": 1, "panel/*": 1}
        assert await streams_shown(page) == "2"
        # A pattern has no presence of its own: only the topic can be picked.
        assert await page.locator('#topics li[data-selector="panel/*"] button').count() == 0
        assert await page.locator('#topics li[data-selector="panel/room"] button').count() == 1
    await wait_for_topic_count(page, "panel/room", 0)
    await page.wait_for_selector("#topics li.hint")
    assert await streams_shown(page) == "0"
    # One round at a time, every 2 s (the page typed nothing that asks again at once).
    assert len(asked) >= 3
    assert min(b - a for a, b in itertools.pairwise(asked)) > 1.5


async def test_clicking_a_topic_shows_who_holds_its_streams_and_marks_the_consoles_own(hub, context):
    page = await context.new_page()
    await page.goto(hub.url + "/")
    # The console's own stream, named from the subscribe form's field.
    await page.fill('#subscribe-form [name="topics"]', "panel/room")
    await page.fill('#subscribe-form [name="presenceName"]', "the console")
    await page.click('#subscribe-form button[type="submit"]')
    await page.wait_for_selector('#log li[data-kind="open"]')
    async with hub.subscribe("panel/*"):
        async with hub.subscribe("panel/room", name="alice") as alice:
            await wait_for_topic_count(page, "panel/room", 2)
            assert await page.is_hidden("#presence")
            await page.click('#topics li[data-selector="panel/room"] button')
            shown = await wait_for_members(page, 3)
            assert await page.text_content("#presence-topic") == "panel/room"
            assert await page.text_content("#presence-count") == "3"
            by_name = {member["name"]: member for member in shown}
            assert by_name.keys() == {"alice", "the console", ""}
            # Another client's stream, by the id its response carried.
            assert by_name["alice"]["conn"] == alice.response.headers["Hub-Connection-Id"]
            assert by_name["alice"]["who"] == "alice"
            assert by_name["alice"]["you"] == ""
            assert by_name["alice"]["selector"] == "panel/room"
            # The console's own, compared by Hub-Connection-Id.
            assert by_name["the console"]["you"] == "true"
            assert by_name["the console"]["who"] == "the consoleyou"
            # A stream without a name is said to be one, through the pattern that gives it the topic.
            assert by_name[""]["who"] == "anonymous"
            assert by_name[""]["selector"] == "panel/*"
            assert all(re.fullmatch(r"\d\d:\d\d:\d\d", member["since"]) for member in shown)
        # Refreshed with the list.
        shown = await wait_for_members(page, 2)
        assert {member["name"] for member in shown} == {"the console", ""}
        assert await page.text_content("#presence-count") == "2"
    # Picked again: hidden.
    await page.click('#topics li[data-selector="panel/room"] button')
    await page.wait_for_selector("#presence", state="hidden")


async def test_with_auth_on_the_page_is_public_and_its_token_field_subscribes_and_publishes(
    hub_factory, context
):
    secret = "console-secret-of-at-least-32-bytes!"
    hub = await hub_factory(auth__jwt_secret=secret)
    token = mint(publish=["secured/*"], subscribe=["secured/*"], secret=secret)
    page = await context.new_page()
    await page.goto(hub.url + "/")
    await page.fill('#token-form [name="token"]', token)
    await page.fill('#subscribe-form [name="topics"]', "secured/*")
    await page.click('#subscribe-form button[type="submit"]')
    await page.wait_for_selector('#log li[data-kind="open"]')
    await page.fill('#publish-form [name="topic"]', "secured/room")
    await page.fill('#publish-form [name="data"]', "with a token")
    await page.click('#publish-form button[type="submit"]')
    (entry,) = await wait_for_entries(page, 1)
    assert entry["data"] == "with a token"

    # Without the token the hub refuses, and the console says so rather than staying silent.
    await page.fill('#token-form [name="token"]', "")
    await page.click('#publish-form button[type="submit"]')
    await page.wait_for_selector("#publish-result.error")
    assert "not published" in (await page.text_content("#publish-result") or "")


async def test_with_auth_on_a_refused_listing_shows_the_hubs_reason_and_the_console_still_works(
    hub_factory, context
):
    secret = "console-secret-of-at-least-32-bytes!"
    hub = await hub_factory(auth__jwt_secret=secret)
    page = await context.new_page()
    await page.goto(hub.url + "/")
    refusal = "#topics li.error"
    await page.wait_for_selector(refusal)
    assert await page.text_content(refusal) == (
        "401 token_required: listing every subscription needs a token with hub.control"
    )
    assert await page.text_content("#topics-status") == "refused"
    assert await streams_shown(page) == "\u2013"

    # A token that subscribes and publishes, without hub.control: refused still, and said so; the rest works.
    token = mint(publish=["secured/*"], subscribe=["secured/*"], secret=secret)
    await page.fill('#token-form [name="token"]', token)
    await page.wait_for_function(
        "() => document.querySelector('#topics li.error').textContent.startsWith('403')"
    )
    assert await page.text_content(refusal) == (
        "403 control_required: listing every subscription needs a token with hub.control: true"
    )
    await page.fill('#subscribe-form [name="topics"]', "secured/room")
    await page.click('#subscribe-form button[type="submit"]')
    await page.wait_for_selector('#log li[data-kind="open"]')
    await hub.publish(
        {"topic": "secured/room", "data": "still here"}, headers={"Authorization": f"Bearer {token}"}
    )
    (entry,) = await wait_for_entries(page, 1)
    assert entry["data"] == "still here"

    # With hub.control the list comes, the console's stream in it.
    await page.fill('#token-form [name="token"]', mint(subscribe=["secured/*"], control=True, secret=secret))
    await wait_for_topic_count(page, "secured/room", 1)
    assert await page.locator(refusal).count() == 0
    assert await page.text_content("#topics-status") == "live"


async def test_with_auth_on_the_charts_say_they_need_an_admin_token_and_draw_with_one(hub_factory, context):
    """/stats/stream showed every anonymous visitor the hub's figures; with auth on it needs a token with
    hub.admin, which the page sends from its token field."""
    secret = "console-secret-of-at-least-32-bytes!"
    hub = await hub_factory(auth__jwt_secret=secret)
    page = await context.new_page()
    await page.goto(hub.url + "/")
    await page.wait_for_function(
        "() => document.querySelector('#hub-status').textContent.includes('hub.admin')"
    )
    assert await page.text_content("#connections-now") == "\u2013"
    await page.fill('#token-form [name="token"]', mint(subscribe=["**"], secret=secret))
    await page.wait_for_function(
        "() => document.querySelector('#hub-status').textContent.includes('hub.admin: true')"
    )
    await page.fill('#token-form [name="token"]', mint(admin=True, secret=secret))
    await page.wait_for_function("() => document.querySelector('#hub-status').dataset.state === 'open'")
    await page.wait_for_function("() => document.querySelector('#connections-now').textContent === '0'")
    await page.wait_for_function("() => document.querySelector('#rate-now').textContent !== '\\u2013'")
