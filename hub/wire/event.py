"""Events, and the envelope that carries one through a broker. Pure, no I/O.

An envelope is `<id> <json>` as bytes: the id is assigned by the broker at publish time (in Redis, by the
publish script) and prefixed to the JSON body the publishing hub encoded, so no process decodes and
re-encodes an event just to add its id. An event whose data is bytes has the body `B<json>\n<bytes>`:
its fields as JSON without `d`, then the bytes as they are (Redis strings and messages carry any byte),
so that nothing is base64-encoded for the broker. A JSON body starts with `{` and compact JSON holds no
raw line break, so neither the marker nor the separator is ambiguous.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

import orjson

EPOCH_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__, and these are built per event.
@dataclass(slots=True)
class Draft:
    """An event as a publisher asked for it, before the broker gives it an id."""

    topics: tuple[str, ...]
    data: object  # bytes: published as bytes (no JSON value is)
    event: str | None = None
    retry: int | None = None
    retain: bool = False
    # `data` as compact JSON, when validation encoded it already (hub/wire/payload.py): the body embeds these
    # bytes rather than encode the value again.
    encoded: bytes | None = field(default=None, compare=False, repr=False)

    def data_size(self) -> int:
        """The bytes of `data` as compact JSON (a string's characters), without encoding it again."""
        if self.encoded is not None:
            return len(self.encoded)
        if isinstance(self.data, str | bytes):
            return len(self.data)
        return len(orjson.dumps(self.data))

    def body(self) -> bytes:
        data = self.data
        if type(data) is bytes:
            return BINARY + orjson.dumps(self._fields({"t": self.topics})) + b"\n" + data
        if self.encoded is not None:
            data = orjson.Fragment(self.encoded)
        return orjson.dumps(self._fields({"t": self.topics, "d": data}))

    def _fields(self, doc: dict[str, object]) -> dict[str, object]:
        if self.event is not None:
            doc["e"] = self.event
        if self.retry is not None:
            doc["r"] = self.retry
        if self.retain:
            doc["k"] = True
        return doc


BINARY = b"B"  # an envelope body that starts so carries bytes after its fields (see the module's doc)


# Immutable to the type checker (every field `Final`: mypy refuses an assignment), not at run time: a
# frozen dataclass's __init__ sets each field through object.__setattr__, which makes `open_envelope`, run
# for every event a hub receives, half again as slow (1.5 us -> 2.3 us here).
@dataclass(slots=True)
class Event:
    """A published event: a draft with its id. Never changed once made: an event under another id (a
    cluster subscriber's) is another `Event` (`relabeled`)."""

    id: Final[str]
    topics: Final[tuple[str, ...]]
    data: Final[object]
    event: Final[str | None] = None
    retry: Final[int | None] = None
    retain: Final[bool] = False
    # Bytes it came in (its envelope's body, or its data as published): what holding it for a subscriber
    # costs, about; 0 where nothing holds it (history read for a replay).
    size: Final[int] = field(default=0, compare=False, repr=False)

    @classmethod
    def from_draft(cls, id: str, draft: Draft) -> Event:
        return cls(
            id, draft.topics, draft.data, draft.event, draft.retry, draft.retain, size=draft.data_size()
        )

    def relabeled(self, id: str, topics: tuple[str, ...] | None = None) -> Event:
        """This event under another id (and, on a cluster, with only some of its topics)."""
        return Event(
            id,
            self.topics if topics is None else topics,
            self.data,
            self.event,
            self.retry,
            self.retain,
            size=self.size,
        )


class EnvelopeError(ValueError):
    """A broker message that is not an envelope this hub wrote."""


def envelope(id: str, body: bytes) -> bytes:
    return id.encode() + b" " + body


def envelope_id(message: bytes) -> bytes:
    """The id of an envelope without decoding its body: enough to drop a duplicate cheaply."""
    return message[: message.find(b" ")]


def open_envelope(message: bytes, id: str | None = None) -> Event:
    """The event an envelope carries, under its own id or `id`."""
    id_, sep, body = message.partition(b" ")
    if not sep or not id_:
        raise EnvelopeError("envelope without an id")
    try:
        if body[:1] == BINARY:
            fields, newline, data = body[1:].partition(b"\n")
            if not newline:
                raise EnvelopeError("binary envelope without its data")
            doc = orjson.loads(fields)
        else:
            doc = orjson.loads(body)
            data = doc["d"]
        topics = tuple(doc["t"])
        event, retry = doc.get("e"), doc.get("r")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise EnvelopeError(f"malformed envelope body: {exc}") from None
    if (
        not all(isinstance(t, str) for t in topics)
        or not (event is None or isinstance(event, str))
        or not (retry is None or type(retry) is int)
    ):
        raise EnvelopeError("malformed envelope fields")
    if id is None:
        try:
            id = id_.decode()
        except UnicodeDecodeError:
            raise EnvelopeError("envelope id is not UTF-8") from None
    return Event(id, topics, data, event, retry, bool(doc.get("k", False)), size=len(body))


# Every pair of epoch characters, by the 10 bits it encodes: three lookups make an epoch.
_EPOCH_PAIRS = tuple(a + b for a in EPOCH_ALPHABET for b in EPOCH_ALPHABET)


def new_epoch() -> str:
    """A fresh epoch tag, 30 random bits in 6 characters: ids from before a broker lost its data carry
    another one. Publishes propose one every time, so it is three lookups and Python's generator (seeded
    from the system at start and again in a forked child): no system call, which costs 0.8 us here and
    lets the scheduler hand the core to the next process. An epoch need not be secret, only fresh."""
    bits = random.getrandbits(30)
    return _EPOCH_PAIRS[bits & 1023] + _EPOCH_PAIRS[(bits >> 10) & 1023] + _EPOCH_PAIRS[(bits >> 20) & 1023]


def format_id(epoch: str, seq: int) -> str:
    return f"{epoch}-{seq}"
