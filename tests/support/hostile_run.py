"""Batches of hostile requests against a live hub, each followed by the three checks of issue 18:

(a) Redis keys other than those the batch's accepted publishes write are byte for byte unchanged, on
    every node (`tests.support.redis_state`);
(b) an honest client still publishes, and resumes from the last real id it got with no `reset`: its
    replay, then live delivery (and an Idempotency-Key a hostile client used is still the honest
    client's own);
(c) a whole answer to every request (no connection closed or reset before its end), no 5xx answer,
    no JSON answer that does not parse, no 429 (a limit that refused a request hides what it tests),
    no ERROR log line, and no token in any log line (every logger is captured from DEBUG up).

Hostile requests come from another address (127.0.0.2) than the honest client (127.0.0.1), so that what
the hub keys per client keeps them apart. Hypothesis generates the batches in a worker thread (as
`tests.support.fuzz` does) and each runs on the hub's event loop. Shrinking is off: a hub that one batch
broke fails every later batch too, so the first failing batch is the one to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hub.http.state import CONFIG
from tests.support.hostile import Anchor
from tests.support.hub_client import HubUnderTest
from tests.support.raw_http import RawAnswer, RawRequest, send
from tests.support.redis_state import RedisState
from tests.support.sse_reader import SseStream

PROBE = "public/probe"  # the honest client's topic
HOSTILE_ADDRESS = "127.0.0.2"

# A test's own check of each answer: the kinds of problem it shows.
Check = Callable[[RawRequest, RawAnswer], list[str]]


@dataclass
class HostileRun:
    hub: HubUnderTest
    caplog: pytest.LogCaptureFixture
    redis_ports: Sequence[int]  # every node of the hub's Redis; empty on the memory broker
    admin: dict[str, str]  # the honest publisher's headers (a token when auth is on)
    secrets: Sequence[str] = ()  # what no log line may hold: the signatures of the tokens sent
    last_id: str = ""  # the id of the last event the honest client received
    honest_keys: set[str] = field(default_factory=set)  # the Idempotency-Keys it has published with
    anchors: list[Anchor] = field(default_factory=list)
    batches: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    found: dict[str, tuple[int, str]] = field(default_factory=dict)  # kind -> (times, first instance)

    @property
    def prefix(self) -> str:
        return self.hub.running.runner.app[CONFIG].redis.prefix

    async def start(self) -> None:
        """The honest client's first event, and the anchors positions are made from: its id (one
        partition on a cluster) and the position of a stream of every public topic (all partitions).
        Reading every partition first also gives each its epoch before the first snapshot of keys."""
        wide = await send(self.hub.url, RawRequest(b"GET", b"/events?topic=public/**"))
        assert wide.status == 200, wide
        async with self._subscribe(None) as stream:
            await self._publish("start", None)
            event = await stream.next_event()
            assert event.data == "start", event
            self.last_id = event.id
        position = [line for line in wide.body.split(b"\n") if line.startswith(b"id: ")]
        self.anchors = [Anchor(self.last_id), Anchor(position[-1][4:].decode())]

    async def run(
        self,
        batches: st.SearchStrategy[list[RawRequest]],
        examples: int,
        check: Check | None = None,
        seeds: Sequence[Sequence[RawRequest]] = (),
    ) -> None:
        """The `seeds` (the attacks the issue names, so that no draw can miss them), then `examples`
        batches from hypothesis, each checked; then fails listing every kind of problem found, each
        with the first batch that showed it."""
        for batch in [*seeds, *generate(batches, examples)]:
            await self.batch(batch, check)
        self.assert_clean()

    def assert_clean(self) -> None:
        if not self.found:
            return
        lines = [f"{len(self.found)} kinds of problem in {self.summary()}:"]
        for kind, (count, first) in self.found.items():
            lines.append(f"- {kind}: {count} times; first: {first}")
        raise AssertionError("\n".join(lines))

    async def batch(self, requests: Sequence[RawRequest], check: Check | None = None) -> None:
        """Send a batch, run the checks, and note each problem under its kind (see `assert_clean`)."""
        self.batches += 1
        problems: list[tuple[str, str]] = []
        before = self._keys()
        logged = len(self.caplog.records)
        written: list[str] = []
        published = False
        commanded = False  # a disconnect was accepted: the control stream may have a new command
        keys: list[str] = []
        for request in requests:
            answer = await send(self.hub.url, request, local_host=HOSTILE_ADDRESS)
            self.requests += 1
            self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
            where = f"{request.method.decode()} {_path(request.target)}"
            if answer.status == 0 or answer.cut_short:
                # The hub closed or reset the connection: the client never got (all of) its answer.
                what = "no answer" if answer.status == 0 else f"a {answer.status} cut short"
                problems.append((f"{what} on {where}", f"{answer.body[:300]!r} for {request!r}"))
            elif answer.status >= 500:
                problems.append((f"{answer.status} on {where}", f"{answer.body[:300]!r} for {request!r}"))
            elif answer.content_type == "application/json" and not _parses(answer.body):
                problems.append((f"JSON that does not parse on {where}", f"{answer.body[:300]!r}"))
            elif answer.status == 429:
                # No batch comes near a limit: a request a limit refused never reached what it tests.
                problems.append((f"429 on {where}", f"{answer.body[:300]!r} for {request!r}"))
            # A streamed publish publishes what came before a bad part of its body, and then refuses it.
            streamed = request.target.startswith(b"/publish/stream") and answer.status in (200, 400, 413)
            if request.writes and (answer.status == 200 or streamed):
                written += request.writes
                published = True
                if request.target.split(b"?")[0] == b"/publish":  # the one route that reads the key
                    keys += [
                        v.decode("latin-1") for n, v in request.headers if n.lower() == b"idempotency-key"
                    ]
            if request.target.split(b"?")[0] == b"/disconnect" and answer.status == 202:
                commanded = True
            if check is not None:
                problems += [
                    (kind, f"{answer.status} {answer.body[:300]!r} for {request!r}")
                    for kind in check(request, answer)
                ]
        after = self._keys()
        if before is not None and after is not None:
            problems += [
                (f"redis key changed ({kind})", change)
                for kind, change in before.changes(after, self.prefix, written, published, commanded)
            ]
        for record in self.caplog.records[logged:]:
            if record.levelno >= logging.ERROR:
                exc = f" ({type(record.exc_info[1]).__name__})" if record.exc_info else ""
                problems.append(
                    (f"logged {record.levelname} by {record.name}{exc}", record.getMessage()[:300])
                )
            text = record.getMessage() + (repr(record.exc_info[1]) if record.exc_info else "")
            if any(secret in text for secret in self.secrets):
                problems.append((f"a token in a {record.levelname} line by {record.name}", text[:300]))
        # A key the honest client sent before, with another body, is rightly refused (422): not one of these.
        fresh = [key for key in keys if key not in self.honest_keys]
        problems += await self.probe(fresh[0] if fresh else None)
        listing = "\n      ".join(repr(r) for r in requests)
        for kind, detail in problems:
            count, first = self.found.get(
                kind, (0, f"{detail}\n    in batch {self.batches}:\n      {listing}")
            )
            self.found[kind] = (count + 1, first)

    async def probe(self, idempotency_key: str | None = None) -> list[tuple[str, str]]:
        """(b): publish, resume from the last real id (the new event replayed, no reset), then a live
        event. Answers the problems found; the honest client's last id moves on only when all went well."""
        marker = f"probe-{self.batches}"
        try:
            status, text = await self._publish(marker, idempotency_key)
            if status != 200:
                return [(f"the honest publish answered {status}", text[:300])]
            async with self._subscribe(self.last_id) as stream:
                seen = []
                async with asyncio.timeout(5):
                    while True:
                        event = await stream.next_event(5)
                        seen.append((event.event, event.data[:80]))
                        if event.event == "reset":
                            return [("the honest resume got a reset", f"from {self.last_id!r}: {event.data}")]
                        if event.data == marker:
                            break
                status, text = await self._publish(marker + "-live", None)
                if status != 200:
                    return [(f"the honest publish answered {status}", text[:300])]
                event = await stream.next_event(5)
                if (event.event, event.data) != ("message", marker + "-live"):
                    return [("the honest live event was another", repr(event))]
                self.last_id = event.id
        except TimeoutError:
            key = f" (published with Idempotency-Key {idempotency_key!r})" if idempotency_key else ""
            return [("the honest resume missed its event", f"from {self.last_id!r}{key}: got {seen}")]
        except AssertionError as exc:
            return [("the honest resume was refused", f"from {self.last_id!r}: {exc}")]
        return []

    async def _publish(self, data: str, idempotency_key: str | None) -> tuple[int, str]:
        headers = dict(self.admin)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
            self.honest_keys.add(idempotency_key)
        body = {"topic": PROBE, "data": data}
        async with self.hub.session.post(self.hub.url + "/publish", json=body, headers=headers) as resp:
            return resp.status, await resp.text()

    @contextlib.asynccontextmanager
    async def _subscribe(self, last_id: str | None) -> AsyncIterator[SseStream]:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        url = self.hub.url + "/events"
        async with self.hub.session.get(url, params={"topic": PROBE}, headers=headers) as resp:
            assert resp.status == 200, f"{resp.status} {await resp.text()}"
            stream = SseStream(resp)
            await stream.until_comment()
            yield stream

    def _keys(self) -> RedisState | None:
        if not self.redis_ports:
            return None
        return RedisState.capture(self.redis_ports, self.prefix)

    def summary(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.batches} batches, {self.requests} requests ({statuses})"


def generate(strategy: st.SearchStrategy[list[RawRequest]], examples: int) -> list[list[RawRequest]]:
    """The batches, all drawn before the first is sent: hypothesis seeds the global `random` while it
    draws and takes any other use of it then (the hub's epochs, a cluster broker's jitter) for a
    strategy's, so nothing of the hub may run meanwhile."""
    drawn: list[list[RawRequest]] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=strategy)
    def draw(batch: list[RawRequest]) -> None:
        drawn.append(batch)

    draw()
    return drawn


def _path(target: bytes) -> str:
    path = target.split(b"?")[0].decode("utf-8", "replace")
    for route in ("/topics/", "/progress/"):
        if path.startswith(route):
            return route + "..."
    return path


def _parses(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True
