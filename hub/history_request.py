"""Parsing a history request's query into what the engine needs. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hub.errors import BadRequest
from hub.history import MAX_LAST_EVENT_ID, Position, parse_id

HISTORY_FORMATS = ("json", "ndjson")
MAX_LIMIT = 1_000_000_000  # no real bound: without `limit` a download is every retained event anyway


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    after: Position | None
    limit: int | None  # None: every retained event
    format: str  # one of HISTORY_FORMATS


def parse_history(query: Mapping[str, str]) -> HistoryRequest:
    after_text = query.get("after", "")
    after = None
    if after_text:
        after = parse_id(after_text)
        if after is None:
            shown = after_text[:MAX_LAST_EVENT_ID]
            raise BadRequest("invalid_parameter", f"after {shown!r} is not an event id of this hub")
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
