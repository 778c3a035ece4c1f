"""Presence on the wire: who holds a stream, the system topics of joins and leaves, and the control
commands every hub process obeys (disconnects). Pure: values in, values or bytes out.

What a client sends here (a name, a disconnect request) is bounded and checked before anything is
kept or sent to other processes; what comes back from Redis is checked again, since any client of that
Redis could have written it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from hub.errors import BadRequest
from hub.wire.topics import Selector, validate_topic

# Topics whose first segment starts with `$` are the hub's own: no one publishes to them.
SYSTEM_PREFIX = "$"
# `$presence/<topic>` carries `join` and `leave` for `<topic>`, readable with `<topic>`'s grant.
PRESENCE_PREFIX = "$presence/"
JOIN = "join"
LEAVE = "leave"

MAX_NAME = 64  # characters of a client-supplied name
MAX_SUB = 256  # bytes of a sub, as a token's sub is kept (hub.http.auth.MAX_SUBJECT_BYTES)
MAX_CONN = 64
MAX_REASON = 256
MAX_LISTED = 1000  # members or selectors one answer lists


@dataclass(frozen=True, slots=True)
class Member:
    """One stream as others see it: its connection id, who holds it, since when (ms since the epoch)."""

    conn: str
    sub: str | None = None
    name: str | None = None
    since: int = 0

    def fields(self) -> dict[str, object]:
        return {"conn": self.conn, "sub": self.sub, "name": self.name, "since": self.since}

    def encode(self) -> bytes:
        return orjson.dumps(self.fields())


def decode_member(raw: bytes | str) -> Member | None:
    """A member as a process wrote it into Redis, or None for anything else."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    conn, sub, name, since = doc.get("conn"), doc.get("sub"), doc.get("name"), doc.get("since")
    if not isinstance(conn, str) or not 0 < len(conn) <= MAX_CONN:
        return None
    if not (sub is None or isinstance(sub, str)) or not (name is None or isinstance(name, str)):
        return None
    if type(since) is not int:
        return None
    return Member(conn, sub, name, since)


def parse_name(query: Mapping[str, str], *, auth: bool) -> str | None:
    """A subscriber's `?name=`, shown in presence when auth is off. With auth on, presence shows the
    token's sub, and a name of the client's own choosing would let it pass for someone else."""
    name = query.get("name")
    if name is None:
        return None
    if auth:
        raise BadRequest(
            "invalid_parameter",
            "name is only taken with auth off; with auth on presence shows the token's sub",
        )
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise BadRequest("invalid_parameter", f"name must be 1-{MAX_NAME} printable characters")
    return name


def is_system(topic: str) -> bool:
    return topic.startswith(SYSTEM_PREFIX)


def presence_topic(topic: str) -> str | None:
    """The system topic of `topic`'s joins and leaves, or None when it would be over the topic limit."""
    name = PRESENCE_PREFIX + topic
    try:
        return validate_topic(name)
    except BadRequest:
        return None


def guarded_selector(selector: Selector) -> Selector:
    """The selector whose grant reads `selector`: `$presence/<s>` is read with `<s>`'s."""
    if selector.text.startswith(PRESENCE_PREFIX) and len(selector.text) > len(PRESENCE_PREFIX):
        return Selector.parse(selector.text[len(PRESENCE_PREFIX) :])
    return selector


def presence_data(member: Member, topic: str) -> dict[str, object]:
    """A `join` or `leave` event's data."""
    return {**member.fields(), "topic": topic}


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the streams that match every field given: a sub, a name, a topic (any of whose events the
    stream receives), a connection id."""

    sub: str | None = None
    name: str | None = None
    topic: str | None = None
    conn: str | None = None
    reason: str = ""

    def matches(self, member: Member, selectors: Sequence[Selector]) -> bool:
        if self.conn is not None and member.conn != self.conn:
            return False
        if self.sub is not None and member.sub != self.sub:
            return False
        if self.name is not None and member.name != self.name:
            return False
        topic = self.topic
        return topic is None or any(selector.matches(topic) for selector in selectors)

    def encode(self) -> bytes:
        fields = {"sub": self.sub, "name": self.name, "topic": self.topic, "conn": self.conn}
        return orjson.dumps({**{k: v for k, v in fields.items() if v is not None}, "reason": self.reason})


def parse_disconnect(body: bytes) -> Disconnect:
    """A `POST /disconnect` body; raises `BadRequest`."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("invalid_json", "the body must be a JSON object") from None
    return _disconnect(doc, strict=True)


def decode_disconnect(raw: bytes) -> Disconnect | None:
    """A disconnect as another process sent it, or None for anything that is not one."""
    try:
        return _disconnect(orjson.loads(raw), strict=False)
    except (orjson.JSONDecodeError, BadRequest):
        return None


_FIELDS = {"sub": MAX_SUB, "name": MAX_NAME, "topic": 0, "conn": MAX_CONN, "reason": MAX_REASON}


def _disconnect(doc: object, *, strict: bool) -> Disconnect:
    if not isinstance(doc, dict):
        raise BadRequest("invalid_json", "the body must be a JSON object")
    unknown = set(doc) - set(_FIELDS)
    if unknown and strict:
        raise BadRequest("invalid_field", f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
    values: dict[str, str] = {}
    for key, limit in _FIELDS.items():
        value = doc.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadRequest("invalid_field", f"{key} must be a string")
        if key == "topic":
            value = validate_topic(value)
        elif len(value.encode("utf-8", "surrogatepass")) > limit or (key != "reason" and not value):
            raise BadRequest("invalid_field", f"{key} must be 1-{limit} bytes")
        values[key] = value
    if not values.keys() - {"reason"}:
        raise BadRequest("missing_field", "say whose streams to close: sub, name, topic or conn")
    return Disconnect(**values)


def parse_limit(query: Mapping[str, str], default: int = 100) -> int:
    raw = query.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= MAX_LISTED):
        raise BadRequest("invalid_parameter", f"limit must be an integer from 1 to {MAX_LISTED}")
    return int(raw)
