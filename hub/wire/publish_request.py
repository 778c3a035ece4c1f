"""Parsing and validating a publish request body into drafts. Pure: bytes in, drafts or an error out.

Accepts a JSON object, a JSON array of objects (a batch, accepted whole or not at all),
`application/x-www-form-urlencoded` with the same fields (`topic` repeated, Mercure's `type` for
`event`), and `application/octet-stream`: the body is one event's data as bytes, its other fields in the
query string. In JSON and forms, `"encoding": "base64"` makes `data` a binary event's bytes (as the
hub's NDJSON gives them), so that bytes go in batches too. Nothing here touches a broker: a request
that fails validation changes nothing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson

from hub.errors import BadRequest, Forbidden, PayloadTooLarge, UnsupportedMediaType
from hub.wire import binary
from hub.wire.event import Draft
from hub.wire.payload import encode_data
from hub.wire.topics import validate_published_topic

MAX_EVENT_NAME = 128
# Clients act on these (resync, liveness); a publisher must not be able to fake them.
RESERVED_EVENTS = frozenset({"reset", "heartbeat"})
# Names a binary event; a text event may not take it, so that a browser can tell bytes by the type alone.
BINARY_EVENT = "binary"
TEXT_EVENT = "message"  # and the other way round: a binary event may not take text's default type
OCTET_STREAM = "application/octet-stream"
MAX_RETRY_MS = 24 * 3600 * 1000
_FIELDS = frozenset({"topic", "topics", "data", "event", "retry", "retain", "encoding"})
_FORM_ALIASES = {"type": "event"}
_TRUE = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no", ""})


@dataclass(frozen=True, slots=True)
class PublishLimits:
    max_data_bytes: int
    max_batch: int
    max_topics: int


@dataclass(frozen=True, slots=True)
class PublishRequest:
    drafts: tuple[Draft, ...]
    batch: bool  # answer with {"ids": [...]} rather than {"id": ...}


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_publish(
    content_type: str, body: bytes, limits: PublishLimits, query: Sequence[tuple[str, str]] = ()
) -> PublishRequest:
    """`query`: the request's query pairs, read for a binary publish only (a JSON or form body holds its
    own fields, and a `?token=` may ride along with any)."""
    kind = media_type(content_type)
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return _parse_json(body, limits)
    if kind == "application/x-www-form-urlencoded":
        return PublishRequest((_parse_form(body, limits),), batch=False)
    if kind == OCTET_STREAM:
        return PublishRequest((parse_binary(query, body, limits),), batch=False)
    raise UnsupportedMediaType(
        "unsupported_media_type",
        "publish takes application/json, application/x-www-form-urlencoded or application/octet-stream"
        + (f", not {kind}" if kind else "; the request has no Content-Type"),
    )


def parse_binary(query: Sequence[tuple[str, str]], data: bytes, limits: PublishLimits) -> Draft:
    """One binary event: `data` as it came, `topic` (repeated), `event`, `retry` and `retain` from the
    query; other parameters (a `token`) are not the event's."""
    doc: dict[str, object] = {}
    topics: list[str] = []
    for name, value in query:
        if name == "topic":
            topics.append(value)
        elif name in ("event", "retry", "retain"):
            if name in doc:
                raise BadRequest("invalid_field", f"query parameter {name!r} is given twice")
            doc[name] = value
    doc["topics"] = topics
    if not topics:
        raise BadRequest("missing_topic", "a binary publish names its topics with ?topic=")
    if "retry" in doc:
        doc["retry"] = _form_int(doc["retry"], "retry")
    if "retain" in doc:
        doc["retain"] = _form_bool(doc["retain"], "retain")
    doc["data"] = data
    return parse_draft(doc, limits, "")


def _parse_json(body: bytes, limits: PublishLimits) -> PublishRequest:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"the body is not valid UTF-8 JSON: {exc}") from None
    if isinstance(doc, dict):
        return PublishRequest((parse_draft(doc, limits, ""),), batch=False)
    if isinstance(doc, list):
        if not doc:
            raise BadRequest("empty_batch", "a batch must hold at least one event")
        if len(doc) > limits.max_batch:
            raise PayloadTooLarge(
                "batch_too_large", f"a batch holds at most {limits.max_batch} events, got {len(doc)}"
            )
        drafts = []
        for i, item in enumerate(doc):
            if not isinstance(item, dict):
                raise BadRequest("invalid_event", f"[{i}]: each batch item must be a JSON object")
            drafts.append(parse_draft(item, limits, f"[{i}]."))
        return PublishRequest(tuple(drafts), batch=True)
    raise BadRequest("invalid_event", "the body must be a JSON object or an array of objects")


def _parse_form(body: bytes, limits: PublishLimits) -> Draft:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=10_000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("invalid_form", f"the form body is not valid UTF-8 form data: {exc}") from None
    doc: dict[str, object] = {}
    topics: list[str] = []
    for raw_name, value in pairs:
        name = _FORM_ALIASES.get(raw_name, raw_name)
        if name == "topic":
            topics.append(value)
            continue
        if name not in _FIELDS or name == "topics":
            raise BadRequest("unknown_field", f"unknown form field {raw_name!r}")
        if name in doc:
            raise BadRequest("invalid_field", f"form field {raw_name!r} is given twice")
        doc[name] = value
    if topics:
        doc["topics"] = topics
    if "retry" in doc:
        doc["retry"] = _form_int(doc["retry"], "retry")
    if "retain" in doc:
        doc["retain"] = _form_bool(doc["retain"], "retain")
    return parse_draft(doc, limits, "")


def _form_int(value: object, name: str) -> int:
    text = str(value)
    if not text.isascii() or not text.isdigit():
        raise BadRequest("invalid_field", f"{name} must be a whole number of milliseconds")
    return int(text)


def _form_bool(value: object, name: str) -> bool:
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequest("invalid_field", f"{name} must be true or false")


def parse_draft(doc: dict[str, object], limits: PublishLimits, where: str = "") -> Draft:
    """One publish object, as in a JSON body or an NDJSON line."""
    if not _FIELDS.issuperset(doc):
        unknown = sorted(doc.keys() - _FIELDS)[0]
        raise BadRequest("unknown_field", f"{where}unknown field {unknown!r}")
    topics = _topics(doc, limits, where)
    data = doc.get("data", "")
    if "encoding" in doc:
        data = _decoded(doc["encoding"], data, limits, where)
    if type(data) is bytes:  # a binary publish: JSON parses to no bytes
        encoded = None
        if len(data) > limits.max_data_bytes:
            raise PayloadTooLarge(
                "data_too_large", f"{where}data is {len(data)} bytes; the limit is {limits.max_data_bytes}"
            )
    else:
        encoded = encode_data(data, limits.max_data_bytes, where)
    event = doc.get("event")
    if event is not None:
        event = validate_event_name(event, where, binary=type(data) is bytes)
    retry = doc.get("retry")
    if retry is not None and (
        type(retry) is not int or not 0 <= retry <= MAX_RETRY_MS  # bool is an int: refuse it too
    ):
        raise BadRequest("invalid_field", f"{where}retry must be an integer from 0 to {MAX_RETRY_MS} ms")
    retain = doc.get("retain", False)
    if not isinstance(retain, bool):
        raise BadRequest("invalid_field", f"{where}retain must be true or false")
    return Draft(topics, data, event, retry, retain, encoded)


def _decoded(encoding: object, data: object, limits: PublishLimits, where: str) -> bytes:
    """A binary event's bytes sent as base64 in a JSON or form publish (as NDJSON and SSE give them)."""
    if encoding != binary.ENCODING:
        raise BadRequest("invalid_field", f'{where}encoding must be "{binary.ENCODING}"')
    if not isinstance(data, str):
        raise BadRequest("invalid_field", f"{where}data encoded as base64 must be a string")
    # Refused before it is decoded: base64 holds 3 bytes in each 4 characters.
    if len(data) > 4 * ((limits.max_data_bytes + 2) // 3):
        raise PayloadTooLarge(
            "data_too_large", f"{where}data is over {limits.max_data_bytes} bytes once decoded"
        )
    return binary.decode(data, where)


def _topics(doc: dict[str, object], limits: PublishLimits, where: str) -> tuple[str, ...]:
    if "topic" in doc and "topics" in doc:
        raise BadRequest("invalid_field", f"{where}give either topic or topics, not both")
    if "topic" in doc:
        try:
            return (validate_published_topic(doc["topic"]),)  # the common case, without building lists
        except (BadRequest, Forbidden) as exc:
            raise type(exc)(exc.code, where + exc.message) from None
    elif "topics" in doc:
        raw = doc["topics"]
        if not isinstance(raw, list) or not raw:
            raise BadRequest("invalid_field", f"{where}topics must be a non-empty list of topics")
    else:
        raise BadRequest("missing_topic", f"{where}a topic is required")
    assert isinstance(raw, list)
    if len(raw) > limits.max_topics:
        raise PayloadTooLarge("too_many_topics", f"{where}an event has at most {limits.max_topics} topics")
    try:
        topics = tuple(dict.fromkeys(validate_published_topic(t) for t in raw))
    except (BadRequest, Forbidden) as exc:
        raise type(exc)(exc.code, where + exc.message) from None
    return topics


def validate_event_name(name: object, where: str = "", *, binary: bool = False) -> str | None:
    """A publisher's event type; None for `binary` on a binary event, which is its type by default."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_EVENT_NAME:
        raise BadRequest(
            "invalid_event_name", f"{where}event must be a string of 1-{MAX_EVENT_NAME} characters"
        )
    for ch in name:
        # Cs: a lone surrogate, which no encoder can write
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            raise BadRequest(
                "invalid_event_name",
                f"{where}event {name!r} contains a line break or control character",
            )
    if name in RESERVED_EVENTS:
        raise BadRequest("reserved_event_name", f"{where}event {name!r} is reserved for the hub's own use")
    if name == BINARY_EVENT:
        if not binary:
            raise BadRequest("reserved_event_name", f"{where}event {name!r} names events whose data is bytes")
        return None
    if binary and name == TEXT_EVENT:
        # Written without an `event:` line, as text's default: a browser could not tell it from text.
        raise BadRequest("reserved_event_name", f"{where}event {name!r} names events whose data is text")
    return name


MAX_IDEMPOTENCY_KEY = 200


def parse_idempotency_key(value: str | None) -> str | None:
    """The `Idempotency-Key` header: 1-200 visible ASCII characters, or absent."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY or not all("!" <= ch <= "~" for ch in value):
        raise BadRequest(
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters",
        )
    return value
