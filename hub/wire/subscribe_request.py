"""Parsing a subscribe request's query into what the engine needs. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hub.errors import BadRequest
from hub.wire.formats import Format, from_accept
from hub.wire.topics import Selector

FORMATS = tuple(f.value for f in Format)


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    selectors: tuple[Selector, ...]
    heartbeat_event: bool
    format: Format = Format.SSE


def parse_subscribe(
    topics: Sequence[str], query: Mapping[str, str], *, max_topics: int, accept: str | None = None
) -> SubscribeRequest:
    """`?format=` wins over `accept` (the Accept header): a link can always say what it wants."""
    if not topics:
        raise BadRequest(
            "missing_topic", "subscribe with at least one ?topic=, or a token that grants subscriptions"
        )
    if len(topics) > max_topics:
        raise BadRequest(
            "too_many_topics", f"a subscription holds at most {max_topics} topics, got {len(topics)}"
        )
    selectors = tuple(dict.fromkeys(Selector.parse(t) for t in topics))
    heartbeat = query.get("heartbeat", "comment")
    if heartbeat not in ("comment", "event"):
        raise BadRequest("invalid_parameter", "heartbeat must be 'comment' or 'event'")
    fmt = query.get("format")
    if fmt is None:
        chosen = from_accept(accept)
    elif fmt in FORMATS:
        chosen = Format(fmt)
    else:
        raise BadRequest("invalid_parameter", f"format must be one of {', '.join(FORMATS)}")
    return SubscribeRequest(selectors, heartbeat_event=heartbeat == "event", format=chosen)
