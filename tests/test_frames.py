"""An event as each kind of stream's bytes, heartbeats, and the block before live events. Pure."""

from __future__ import annotations

import orjson
import pytest

from hub.wire import chunked
from hub.wire.event import Event
from hub.wire.formats import Format
from hub.wire.frames import (
    HEARTBEATS,
    encoded_for,
    event_body,
    event_frame,
    relabeled,
    snapshot_bodies,
    wire,
)
from hub.wire.ids import Position, Snapshot
from hub.wire.topics import Selector


def event(i: int = 1, data: object = "hi", topics: tuple[str, ...] = ("a/1",)) -> Event:
    return Event(f"e-{i}", topics, data)


def test_an_empty_body_stays_empty_rather_than_become_the_last_chunk():
    assert wire(b"", is_chunked=True) == b""
    assert wire(b"x", is_chunked=True) == chunked.frame(b"x")
    assert wire(b"x", is_chunked=False) == b"x"


def test_a_text_or_byte_stream_gets_no_heartbeat_and_every_other_stream_one():
    for (fmt, _, _), beat in HEARTBEATS.items():
        assert (beat == b"") == (fmt in (Format.TEXT, Format.BYTES))
    assert HEARTBEATS[Format.SSE, False, False] == b":\n\n"
    assert HEARTBEATS[Format.SSE, True, True] == chunked.frame(b"event: heartbeat\ndata: \n\n")


def test_each_kind_of_stream_gets_its_own_bytes_of_one_event():
    e = event(topics=("b/1", "a/1"))
    assert encoded_for(Format.SSE, True, (), e) == event_frame(e) == chunked.frame(event_body(e))
    assert encoded_for(Format.SSE, False, (), e) == b"id: e-1\ndata: hi\n\n"
    assert encoded_for(Format.TEXT, False, (), e) == b"hi"
    ndjson = encoded_for(Format.NDJSON, False, (Selector.parse("a/*"),), e)
    assert orjson.loads(ndjson)["topic"] == "a/1"  # the topic the stream's selector matched
    assert encoded_for(Format.TEXT, True, (), event(data="")) == b""


def test_relabeled_is_the_same_event_under_another_id_and_itself_under_its_own():
    e = Event("e-1", ("a",), {"x": 1}, event="update", retry=10, retain=True)
    assert relabeled(e, "e-1") is e
    other = relabeled(e, "p0-5.p1-7")
    assert (other.id, other.topics, other.data, other.event, other.retry, other.retain) == (
        "p0-5.p1-7",
        ("a",),
        {"x": 1},
        "update",
        10,
        True,
    )


def test_a_snapshot_is_a_reset_then_its_events_in_batches_then_its_position():
    events = [event(i, "x" * 50) for i in range(1, 11)]
    snapshot = Snapshot(Position("ep", 10), list(events), reset="history_lost")
    bodies = list(snapshot_bodies(snapshot, batch=100))
    assert len(bodies) > 2  # cut into batches as they fill
    whole = b"".join(bodies)
    assert whole.startswith(b'event: reset\ndata: {"reason":"history_lost"}\n\n')
    assert whole.endswith(b"id: ep-10\n\n")
    assert whole.count(b"data: " + b"x" * 50) == 10
    assert not snapshot.events  # taken out as written: none is held once written


@pytest.mark.parametrize("fmt", [Format.NDJSON, Format.TEXT])
def test_only_sse_carries_a_position_and_only_text_carries_no_reset(fmt):
    snapshot = Snapshot(Position("ep", 1), [event(1)], reset="history_lost")
    whole = b"".join(snapshot_bodies(snapshot, fmt=fmt, selectors=(Selector.parse("a/1"),)))
    if fmt is Format.TEXT:
        assert whole == b"hi"
    else:
        lines = [orjson.loads(line) for line in whole.splitlines()]
        assert lines[0] == {"event": "reset", "data": {"reason": "history_lost"}}
        assert (lines[1]["id"], lines[1]["topic"], len(lines)) == ("e-1", "a/1", 2)
