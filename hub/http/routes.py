"""Routes: parse the request, call the engine, answer. Nothing here talks to a broker directly."""

from __future__ import annotations

import logging
import secrets
import time
from importlib import resources

import orjson
from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub import __version__
from hub.engine.history import history_pages
from hub.engine.outbox import Outbox
from hub.errors import HttpError, ShuttingDown
from hub.http.byte_stream import skipped, start_of
from hub.http.console import add_console_routes
from hub.http.detach import DetachableResponse, StreamProtocol, detach, log_stream
from hub.http.expiry import StreamExpiry
from hub.http.limits import Lease
from hub.http.presence_routes import add_presence_routes
from hub.http.progress_route import progress
from hub.http.publish_route import publish
from hub.http.replay import BoundedWriter, write_replay
from hub.http.state import CONFIG, DRAIN, FANOUT, GUARD, METRICS
from hub.http.stream_publish import publish_stream
from hub.redact import redact_query
from hub.wire import binary, formats, sse
from hub.wire.formats import CONTENT_TYPES, Format
from hub.wire.frames import snapshot_bodies
from hub.wire.history_request import HistoryRequest, parse_history
from hub.wire.presence import Member, parse_name
from hub.wire.subscribe_request import SubscribeRequest, parse_subscribe
from hub.wire.topics import Selector, validate_topic

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# The stream's id in presence (and for POST /disconnect), for a client to know itself among the members.
CONNECTION_ID = "Hub-Connection-Id"
STREAM_HEADERS = {
    fmt: {
        **SSE_HEADERS,
        "Content-Type": content_type,
        # Publishers choose the bytes: a browser must not guess a text stream into HTML.
        "X-Content-Type-Options": "nosniff",
    }
    for fmt, content_type in CONTENT_TYPES.items()
}


async def events(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    guard = request.app[GUARD]
    # No topic, and a token: the topics are the token's own grants.
    topics = request.query.getall("topic", []) or guard.granted_topics(request)
    sub = parse_subscribe(
        topics, request.query, max_topics=config.limits.max_topics, accept=request.headers.get("Accept")
    )
    expires = guard.check_subscribe(request, sub.selectors)
    name = parse_name(request.query, auth=config.auth.enabled)
    if request.app[DRAIN].begun:
        # Its streams were told to reconnect and closed: a new one would have to be closed at once.
        raise ShuttingDown("the hub is shutting down; subscribe again (to another replica)")
    lease = guard.open_stream(request)
    if log.isEnabledFor(logging.DEBUG):
        log_stream("open", lease.client, redact_query(request.path_qs))
    try:
        member = Member(secrets.token_hex(8), guard.subject(request), name, int(time.time() * 1000))
        return await _stream(request, sub, lease, expires, member)
    except BaseException:
        lease.release()  # refused by the broker, or cancelled: no stream (a second release is a no-op)
        raise


async def _stream(
    request: web.Request, sub: SubscribeRequest, lease: Lease, expires: float | None, member: Member
) -> web.StreamResponse:
    config = request.app[CONFIG]
    fanout = request.app[FANOUT]
    outbox = Outbox(
        sub.selectors,
        heartbeat_event=sub.heartbeat_event,
        max_buffer=config.sse.max_buffer,
        chunked=request.version >= HttpVersion11,  # what aiohttp does for a body of unknown length
        format=sub.format,
    )
    outbox.member = member
    # The header wins: a browser reconnecting sends its newest id there, while its URL still carries
    # the ?lastEventId= it was first opened with.
    requested = request.headers.get("Last-Event-ID", request.query.get("lastEventId"))
    offset = 0
    if sub.format is Format.BYTES:
        requested, offset = binary.split_offset(requested)
    since = fanout.parse_since(requested)
    # Subscribed before the headers go out: once a client sees the stream open, nothing it should
    # receive can slip past; and a broker outage is a clean 503 rather than a stream that stays silent.
    snapshot = await fanout.subscribe(outbox, since)
    headers = {**STREAM_HEADERS[sub.format], CONNECTION_ID: member.conn}
    detached = False
    try:
        byte_start = None
        if sub.format is Format.BYTES:
            byte_start = start_of(since, requested, offset, snapshot, sub.selectors)
            if byte_start.start is not None:
                headers[binary.STREAM_START] = byte_start.start
        response = DetachableResponse(headers=headers)
        # Every end of a live stream closes its connection (the hub, not aiohttp, owns it by then).
        response.force_close()
        await response.prepare(request)  # sends the headers at once, whatever follows
        if sub.format is Format.SSE:
            await response.write(sse.preamble(config.sse.retry, "broadcast-hub"))
        # Live events are held meanwhile. The bodies take the snapshot's events as they go: a long
        # replay's memory goes as it is written, and all of it once a client that stopped reading is cut.
        position = snapshot.position
        bodies = snapshot_bodies(snapshot, fmt=sub.format, selectors=sub.selectors)
        if byte_start is not None and byte_start.skip:
            bodies = skipped(bodies, byte_start.skip)
        del snapshot
        transport = request.transport
        if transport is None:
            return response
        if not await write_replay(
            response,
            transport,
            bodies,
            max_buffer=config.sse.max_buffer,
            drain_timeout=config.sse.drain_timeout,
            closed=lambda: outbox.closed,
        ):
            fanout.cut_off(outbox)
            return response
        if transport.is_closing() or outbox.closed:
            return response
        fanout.start_writing(outbox, transport, position)
        if outbox.closed:
            return response
        expiry = None
        if expires is not None:
            notice = config.auth.expiry_notice
            expiry = StreamExpiry(fanout, outbox, expires, notice=notice, retry_ms=config.sse.retry)
        # From here the stream lives on in the fan-out alone: the unsubscribe is the protocol's.
        detach(request, response, StreamProtocol(fanout, outbox, lease, expiry))
        detached = True
        return response
    except ConnectionResetError:
        return response  # the client left while its replay was being written
    finally:
        if not detached:
            fanout.unsubscribe(outbox)
            lease.release()
            log_stream("closed", lease.client)


async def metrics(request: web.Request) -> web.Response:
    request.app[GUARD].check_admin(request)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def stats(request: web.Request) -> web.Response:
    request.app[GUARD].check_admin(request)
    return web.json_response(request.app[METRICS].stats())


async def topic_history(request: web.Request) -> web.StreamResponse:
    topic = validate_topic(request.match_info["topic"])
    query = parse_history(request.query)
    guard = request.app[GUARD]
    # Reading a topic's past is reading the topic: the same grant as subscribing to it.
    guard.check_subscribe(request, [Selector.parse(topic)])
    # A download can be long: it holds a place among the client's streams while it runs.
    lease = guard.open_stream(request)
    try:
        return await _write_history(request, topic, query)
    finally:
        lease.release()


async def _write_history(request: web.Request, topic: str, query: HistoryRequest) -> web.StreamResponse:
    pages = history_pages(request.app[FANOUT].broker, topic, query.after, query.limit)
    # The first page before the headers: an `after` from a lost history is still a clean 409, an outage
    # a 503.
    first = await anext(pages, None)
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if query.format == "ndjson":
        headers["Content-Type"] = "application/x-ndjson"
        headers["Content-Disposition"] = formats.attachment(topic, "ndjson")
    else:
        headers["Content-Type"] = "application/json"
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        await pages.aclose()
        return response
    # Written as the client reads it: one that stops reading is cut off, and its pages go with it.
    config = request.app[CONFIG]
    out = BoundedWriter(
        response, transport, max_buffer=config.sse.max_buffer, drain_timeout=config.sse.drain_timeout
    )
    empty = True
    try:
        if query.format == "json" and not await out.write(b"["):
            return response
        page, first = first, None
        while page is not None:
            body = (
                b"".join(formats.ndjson_event(event, topic) for event in page)
                if query.format == "ndjson"
                else formats.json_array_items(page, topic, first=empty)
            )
            if not await out.write(body):
                log.debug("history of %r cut off: the client did not read it", topic)
                return response
            empty = False
            page = await anext(pages, None)
        if query.format == "json":
            await out.write(formats.json_array_end(empty))
    except HttpError as exc:
        # Too late for a status: cut the body off, so that no client takes a partial history for all.
        log.warning("history of %r cut off: %s", topic, exc.message)
        transport.abort()
    except ConnectionResetError:
        pass  # the client left before the end of its download
    finally:
        await pages.aclose()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    fanout = request.app[FANOUT]
    ready = fanout.ready
    return web.json_response(
        {
            "status": "ready" if ready else "unavailable",
            "broker": fanout.broker.name,
            "connected": fanout.broker.ready,
            "heartbeat_age": round(fanout.heartbeat_age, 3),
        },
        status=200 if ready else 503,
    )


def openapi_handler() -> Handler:
    # Read once per app: the description ships in the package and does not change while it runs. Its
    # version is the package's, which lives in one place.
    described = orjson.loads(resources.files("hub").joinpath("openapi.json").read_bytes())
    described["info"]["version"] = __version__
    document = orjson.dumps(described)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    return openapi


def add_routes(app: web.Application) -> None:
    app.router.add_get("/events", events, allow_head=False)
    app.router.add_post("/publish", publish)
    app.router.add_post("/publish/stream", publish_stream)
    # Any job name reaches the handler, line breaks included, to be refused there with a clear 400.
    app.router.add_post(r"/progress/{job:[\s\S]+}", progress)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stats", stats)
    # A topic holds `/`s of its own; and any character at all, so that a bad one is a 400 naming it
    # rather than a 404.
    app.router.add_get("/topics/{topic:[\\s\\S]+}/history", topic_history, allow_head=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi_handler())
    add_presence_routes(app)
    add_console_routes(app)
