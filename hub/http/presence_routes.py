"""Presence and control: a topic's subscribers and who they are, every subscription, disconnects.
Answers for every hub process (the broker's directory); nothing here talks to a broker directly."""

from __future__ import annotations

from aiohttp import web

from hub.http.body import read_body
from hub.http.state import CONFIG, GUARD, PRESENCE
from hub.wire.presence import parse_disconnect, parse_limit
from hub.wire.topics import validate_topic


async def topic_subscribers(request: web.Request) -> web.Response:
    topic = validate_topic(request.match_info["topic"])
    request.app[GUARD].check_reading(request, topic)
    counts = await request.app[PRESENCE].counts(topic)
    return web.json_response(
        {
            "topic": topic,
            "subscribers": sum(counts.values()),
            "selectors": [{"selector": s, "subscribers": n} for s, n in sorted(counts.items())],
        }
    )


async def topic_presence(request: web.Request) -> web.Response:
    topic = validate_topic(request.match_info["topic"])
    limit = parse_limit(request.query)
    request.app[GUARD].check_reading(request, topic)
    presence = request.app[PRESENCE]
    counts = await presence.counts(topic)
    members = await presence.members(topic, limit)
    total = sum(counts.values())
    return web.json_response(
        {
            "topic": topic,
            "subscribers": total,
            "members": [{**member.fields(), "selector": selector} for selector, member in members],
            "truncated": len(members) < total,
        }
    )


async def subscriptions(request: web.Request) -> web.Response:
    limit = parse_limit(request.query)
    request.app[GUARD].check_control(request, "listing every subscription")
    streams, top = await request.app[PRESENCE].top(limit + 1)
    return web.json_response(
        {
            "streams": streams,
            "selectors": [{"selector": s, "subscribers": n} for s, n in top[:limit]],
            "truncated": len(top) > limit,
        }
    )


async def disconnect(request: web.Request) -> web.Response:
    request.app[GUARD].check_control(request, "disconnecting streams")
    body = await read_body(request, request.app[CONFIG].server.body_timeout)
    command = parse_disconnect(body)
    closed = await request.app[PRESENCE].disconnect(command)
    # Accepted: the other processes close theirs within a round of presence.interval.
    return web.json_response({"closed_here": closed}, status=202)


def add_presence_routes(app: web.Application) -> None:
    app.router.add_get("/topics/{topic:[\\s\\S]+}/subscribers", topic_subscribers)
    app.router.add_get("/topics/{topic:[\\s\\S]+}/presence", topic_presence)
    app.router.add_get("/subscriptions", subscriptions)
    app.router.add_post("/disconnect", disconnect)
