"""Where a `?format=bytes` stream starts, and what of its replay a resuming client already has.

A raw byte stream has no room for ids or a reset, so its resume point travels outside it: the response's
`Hub-Stream-Start` header names the position its first byte follows, and a client that received N bytes
resumes with `Last-Event-ID: <start>:<N>` (`hub/wire/binary.py`). The hub replays what follows `<start>`
and skips N bytes of it: no state is kept for the client, and the bytes go on exactly where they broke.
What cannot be continued exactly is refused before the stream opens: a history lost since `<start>`
(409), an offset past what followed it (400). A stream no position could resume exactly (several
cluster partitions, `earliest` over several topics) gets no `Hub-Stream-Start`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hub.errors import BadRequest, Conflict
from hub.wire import binary
from hub.wire.formats import bytes_event
from hub.wire.ids import Since, SinceKind, Snapshot
from hub.wire.topics import Selector


@dataclass(frozen=True, slots=True)
class ByteStart:
    # What the stream's offsets count from (the Hub-Stream-Start header); None where no position could
    # make a resume give the same bytes (see `start_of`): such a stream is not resumable.
    start: str | None
    skip: int  # bytes of the replay the client already has


def start_of(
    since: Since[object],
    requested: str | None,
    offset: int,
    snapshot: Snapshot,
    selectors: Sequence[Selector],
) -> ByteStart:
    """Check `snapshot` (read from `since`, which the client gave as `requested`) against a byte stream's
    rules, and say where the stream starts. Drops retained events from a stream opened without a
    position: retained state is not part of a stream of bytes, and a resume could not count it.

    An offset resumes only a position of one counter (one Redis, the memory broker, one cluster
    partition), where a replay gives the events in the order they were delivered live: across cluster
    partitions it does not. And `earliest` is pinned to the position before its first event only for one
    topic: over several, a topic trimmed before the read would refuse that position at once."""
    if snapshot.reset is not None:
        raise Conflict(
            "history_lost",
            "the history after this position is no longer all retained, so the byte stream cannot be "
            f"continued exactly ({snapshot.reset}); read it again from a position the history holds",
        )
    if offset and (since.kind is not SinceKind.AFTER or not binary.one_counter(requested or "")):
        raise BadRequest(
            "invalid_last_event_id",
            "an offset counts from the position a byte stream's Hub-Stream-Start gave, and only a "
            "position of one counter can be resumed at an offset",
        )
    events = snapshot.events
    if since.kind is SinceKind.NEW:
        events.clear()
        start: str | None = str(snapshot.position)
    elif since.kind is SinceKind.EARLIEST:
        one_topic = len(selectors) == 1 and not selectors[0].is_pattern
        start = (binary.before(events[0].id) if events else str(snapshot.position)) if one_topic else None
    else:
        assert requested is not None
        start = requested
    if start is not None and not binary.one_counter(start):
        start = None
    if offset:
        held = sum(len(bytes_event(event)) for event in events)
        if offset > held:
            raise BadRequest(
                "invalid_last_event_id",
                f"the stream after {start} holds {held} bytes so far, not the {offset} to skip",
            )
    return ByteStart(start, offset)


def skipped(bodies: Iterator[bytes], skip: int) -> Iterator[bytes]:
    """`bodies` less their first `skip` bytes."""
    for body in bodies:
        if skip >= len(body):
            skip -= len(body)
            continue
        if skip:
            body, skip = body[skip:], 0
        yield body
