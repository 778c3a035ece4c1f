"""Job progress as events: `POST /progress/{job}` bodies turned into retained drafts on `jobs/{job}`. Pure.

    {"current": 3, "total": 10, "message": "…"}   -> event `progress`, data with the percent computed
    {"done": true, "result": …}                   -> event `done`
    {"error": "…"}                                -> event `error`

Each is retained, so that whoever opens the job's page late sees where it stands at once.
"""

from __future__ import annotations

import math
from typing import TypeGuard

import orjson

from hub.errors import BadRequest
from hub.wire.event import Draft
from hub.wire.payload import encode_data
from hub.wire.topics import validate_topic

_FIELDS = {
    "progress": frozenset({"current", "total", "message"}),
    "done": frozenset({"done", "result", "message"}),
    "error": frozenset({"error", "message"}),
}


def job_topic(job: str) -> str:
    return validate_topic(f"jobs/{job}")


def parse_progress(job: str, body: bytes, max_data_bytes: int) -> Draft:
    topic = job_topic(job)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"the body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("invalid_progress", "the body must be a JSON object")
    kind = "error" if "error" in doc else "done" if "done" in doc else "progress"
    unknown = sorted(doc.keys() - _FIELDS[kind])
    if unknown:
        raise BadRequest("unknown_field", f"unknown field {unknown[0]!r} in a {kind} update")
    message = doc.get("message")
    if message is not None and not isinstance(message, str):
        raise BadRequest("invalid_field", "message must be a string")
    data: dict[str, object]
    if kind == "error":
        if not isinstance(doc["error"], str) or not doc["error"]:
            raise BadRequest("invalid_field", "error must be a non-empty string saying what went wrong")
        data = {"error": doc["error"]}
    elif kind == "done":
        if doc["done"] is not True:
            raise BadRequest("invalid_field", "done must be true; send progress updates without it")
        data = {"result": doc.get("result"), "percent": 100.0}
    else:
        current, total = doc.get("current"), doc.get("total")
        if not _count(current):
            raise BadRequest("invalid_field", "current must be a number, 0 or more")
        if total is not None and not (_count(total) and total > 0):
            raise BadRequest("invalid_field", "total must be a number above 0, or absent")
        percent = None if total is None else min(100.0, round(100.0 * current / total, 2))
        data = {"current": current, "total": total, "percent": percent}
    if message is not None:
        data["message"] = message
    encoded = encode_data(data, max_data_bytes, what="the update")
    return Draft((topic,), data, kind, None, True, encoded)


def _count(value: object) -> TypeGuard[int | float]:
    # bool is an int to Python, and NaN or infinity would make the percent meaningless.
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )
