"""Parsing a history request's query into what the engine needs. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hub.errors import BadRequest
from hub.wire.ids import MAX_LAST_EVENT_ID

HISTORY_FORMATS = ("json", "ndjson")
MAX_LIMIT = 1_000_000_000  # no real bound: without `limit` a download is every retained event anyway


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    after: str | None  # an event id, which only the broker can place (see `Broker.resolve_after`)
    limit: int | None  # None: every retained event
    format: str  # one of HISTORY_FORMATS


def parse_history(query: Mapping[str, str]) -> HistoryRequest:
    after = query.get("after") or None
    if after is not None and len(after) > MAX_LAST_EVENT_ID:
        raise BadRequest("invalid_parameter", f"after {after[:60]!r}... is not an event id of this hub")
    limit = None
    limit_text = query.get("limit")
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 10):
            raise BadRequest("invalid_parameter", f"limit must be an integer from 1 to {MAX_LIMIT}")
        limit = int(limit_text)
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest("invalid_parameter", f"limit must be an integer from 1 to {MAX_LIMIT}")
    fmt = query.get("format", "json")
    if fmt not in HISTORY_FORMATS:
        raise BadRequest("invalid_parameter", f"format must be one of {', '.join(HISTORY_FORMATS)}")
    return HistoryRequest(after, limit, fmt)
