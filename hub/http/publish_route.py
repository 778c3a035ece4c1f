"""POST /publish: what a publish must pass and what it answers, for aiohttp's request path and for the
fast path (`hub.http.fast_publish`) alike."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from aiohttp import web

from hub.config import Config
from hub.engine.fanout import Fanout
from hub.http.admission import Guard, Publisher
from hub.http.body import read_body
from hub.http.errors import body_too_large
from hub.http.metrics import Metrics
from hub.http.state import CONFIG, FANOUT, GUARD, METRICS
from hub.wire.event import Draft
from hub.wire.idempotency import Idempotency, scoped
from hub.wire.publish_request import PublishLimits, parse_idempotency_key, parse_publish


@dataclass(frozen=True, slots=True)
class Admitted:
    drafts: tuple[Draft, ...]
    idempotency: Idempotency | None
    batch: bool  # answered with {"ids": [...]} rather than {"id": ...}


def admit(
    guard: Guard,
    config: Config,
    publisher: Publisher,
    headers: Mapping[str, str],
    body: bytes,
    query: Sequence[tuple[str, str]] = (),
) -> Admitted:
    """The drafts of a publish, checked against its publisher's grants and budget; `query` names a
    binary publish's topics (the fast path takes none: a request with a query goes the route's way)."""
    limits = config.limits
    parsed = parse_publish(
        headers.get("Content-Type", ""),
        body,
        PublishLimits(limits.max_data_bytes, limits.max_batch, limits.max_topics),
        query,
    )
    guard.check_publish(publisher, parsed.drafts)
    key = parse_idempotency_key(headers.get("Idempotency-Key"))
    idempotency = None if key is None else scoped(publisher.key, key, parsed.drafts)
    return Admitted(parsed.drafts, idempotency, parsed.batch)


async def accept(fanout: Fanout, metrics: Metrics, admitted: Admitted) -> bytes:
    """The broker's acknowledgement of `admitted`, as the answer's body."""
    started = time.perf_counter()
    ids = await fanout.publish(admitted.drafts, admitted.idempotency)
    metrics.publish_latency.observe(time.perf_counter() - started)
    return orjson.dumps({"ids": ids} if admitted.batch else {"id": ids[0]})


async def publish(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if request.content_length is not None and request.content_length > config.limits.max_body_bytes:
        raise body_too_large(config.limits.max_body_bytes)
    guard = request.app[GUARD]
    # Who publishes is checked before the body is read: a missing or bad token costs us no reading.
    publisher = guard.publisher(request)
    body = await read_body(request, config.server.body_timeout)
    admitted = admit(guard, config, publisher, request.headers, body, list(request.query.items()))
    answer = await accept(request.app[FANOUT], request.app[METRICS], admitted)
    return web.Response(body=answer, content_type="application/json")
