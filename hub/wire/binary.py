"""Events whose data is bytes: how each stream format marks them, and where a raw byte stream resumes.
Pure.

Inside the hub an event's data is bytes exactly when it was published as bytes (`application/octet-
stream`): no JSON value parses to bytes, so the type alone tells them apart. Subscribers tell them apart by
a marker in every format that carries text:

- SSE: the data base64-encoded, a field line `encoding: base64` (parsers that read fields see it;
  EventSource ignores it, as the grammar says) and, when the publisher named no type, `event: binary`
  (a type no text event may take, so a browser knows it by its name alone; nor may a binary event take
  `message`, text's type, written without an `event:` line);
- NDJSON and history downloads: `"data"` base64-encoded beside `"encoding": "base64"`.

`?format=bytes` writes each event's raw bytes back to back. Its resume point is `<id>:<offset>`: the
stream that follows `<id>`, less its first `<offset>` bytes; the hub keeps no state for it.
"""

from __future__ import annotations

import base64
import binascii

from hub.errors import BadRequest
from hub.wire.ids import MAX_SEQ, parse_id, parse_seq

ENCODING = "base64"
EVENT = "binary"  # the type of a binary event published without one
# The response header of a byte stream: the position its first byte follows, what offsets count from.
STREAM_START = "Hub-Stream-Start"
_OFFSET_SEPARATOR = ":"


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str, where: str = "") -> bytes:
    """Base64 as a client sends it back (a relayed SSE stream): strict, padding and alphabet."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("invalid_data", f"{where}data marked base64 is not valid base64") from None


def event_name(event: str | None) -> str:
    return EVENT if event is None else event


def split_offset(last_event_id: str | None) -> tuple[str | None, int]:
    """A byte stream's resume point read into the id it follows and the bytes to skip after it. A
    value without an offset skips nothing; an offset that is not a plain decimal count is a 400."""
    if last_event_id is None:
        return None, 0
    head, sep, tail = last_event_id.rpartition(_OFFSET_SEPARATOR)
    if not sep:
        return last_event_id, 0
    offset = parse_seq(tail)
    if offset is None:
        raise BadRequest(
            "invalid_last_event_id",
            f"a byte stream resumes from <id>:<offset>, the offset a count of bytes up to {MAX_SEQ}",
        )
    return head, offset


def join_offset(start: str, offset: int) -> str:
    return f"{start}{_OFFSET_SEPARATOR}{offset}" if offset else start


def one_counter(position: str) -> bool:
    """Whether `position` names one counter: `<epoch>-<seq>`, or a cluster id of one partition."""
    if parse_id(position) is not None:
        return True
    head, sep, seq = position.rpartition(".")
    return bool(sep) and parse_seq(seq) is not None and head.count("_") == 1


def before(event_id: str) -> str | None:
    """The position just before `event_id` where one counter names it (`<epoch>-<seq>`, or a cluster
    id of one partition, `<digest>_<p>.<seq>`), so that a stream read from `earliest` resumes from a
    fixed place: one whose history was trimmed since is then refused rather than read from its new
    oldest event. None where the id names several counters."""
    position = parse_id(event_id)
    if position is not None:
        return f"{position.epoch}-{position.seq - 1}" if position.seq > 0 else None
    if not one_counter(event_id):
        return None
    head, _, seq = event_id.rpartition(".")
    number = int(seq)
    return f"{head}.{number - 1}" if number > 0 else None
