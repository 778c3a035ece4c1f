"""The NDJSON and text stream formats, and choosing a format by Accept."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.wire import formats
from hub.wire.event import Event
from hub.wire.formats import Format, from_accept
from hub.wire.topics import Selector

# What a publisher can send as data: any JSON value (orjson refuses integers past 64 bits and NaN).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
nasty = st.sampled_from(["\r", "\n", "\r\n", "\0", "\u2028", '"', "\\", "🎉", " ", "", "data: x"])
texts = st.lists(st.one_of(st.text(), nasty), max_size=8).map("".join)


def event(data: object, seq: int = 1, topics: tuple[str, ...] = ("a",), name: str | None = None) -> Event:
    return Event(f"abcdef-{seq}", topics, data, name)


@given(st.lists(st.one_of(json_values, texts), max_size=10))
def test_ndjson_round_trips_any_data_one_line_per_event(datas):
    raw = b"".join(formats.ndjson_event(event(d, i), "a") for i, d in enumerate(datas))
    lines = raw.split(b"\n")
    assert lines[-1] == b""
    objects = [json.loads(line) for line in lines[:-1]]
    assert [o["data"] for o in objects] == datas
    assert [o["id"] for o in objects] == [f"abcdef-{i}" for i in range(len(datas))]


@given(st.lists(texts, max_size=10))
def test_text_streams_concatenate_to_exactly_the_data(tokens):
    raw = b"".join(formats.text_event(event(t)) for t in tokens)
    assert raw.decode("utf-8") == "".join(tokens)


@given(json_values.filter(lambda value: not isinstance(value, str)))
def test_text_writes_a_json_value_as_compact_json(value):
    raw = formats.text_event(event(value))
    assert json.loads(raw) == value
    assert b"\n" not in raw


def test_ndjson_object_has_id_topic_event_and_data():
    line = formats.ndjson_event(event({"x": 1}, 7, name="progress"), "jobs/1")
    assert line == b'{"id":"abcdef-7","topic":"jobs/1","event":"progress","data":{"x":1}}\n'
    assert json.loads(formats.ndjson_event(event("hi"), "a"))["event"] == "message"


def test_ndjson_reset_and_heartbeats_are_lines():
    assert json.loads(formats.ndjson_reset("why")) == {"event": "reset", "data": {"reason": "why"}}
    assert formats.NDJSON_HEARTBEAT == b"\n"
    assert json.loads(formats.NDJSON_HEARTBEAT_EVENT) == {"event": "heartbeat"}


def test_first_topic_is_the_first_of_the_events_topics_a_selector_matches():
    multi = event("x", topics=("b/1", "a/1", "a/2"))
    assert formats.first_topic(multi, [Selector.parse("a/*")]) == "a/1"
    assert formats.first_topic(multi, [Selector.parse("a/2"), Selector.parse("b/*")]) == "b/1"
    assert formats.first_topic(event("x", topics=("only",)), [Selector.parse("**")]) == "only"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, Format.SSE),
        ("", Format.SSE),
        ("*/*", Format.SSE),
        ("text/event-stream", Format.SSE),
        ("application/x-ndjson", Format.NDJSON),
        ("Application/X-NDJSON; charset=utf-8", Format.NDJSON),
        ("text/plain", Format.TEXT),
        ("text/plain;q=0.5, application/x-ndjson;q=0.9", Format.NDJSON),
        ("text/plain, */*;q=0.1", Format.TEXT),
        # axios' default: everything equally fine, so the default format
        ("application/json, text/plain, */*", Format.SSE),
        # a browser's navigation
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", Format.SSE),
        ("text/*", Format.SSE),
        ("text/event-stream;q=0, text/*", Format.TEXT),
        ("application/json", Format.SSE),  # nothing we have: the default rather than a 406
        ("text/plain;q=junk", Format.SSE),
        ("text/plain;q=2", Format.SSE),
        (",,;;=;q", Format.SSE),
    ],
)
def test_accept_negotiation(accept, expected):
    assert from_accept(accept) is expected


@given(st.text(max_size=80))
def test_any_accept_header_picks_a_format(accept):
    assert from_accept(accept) in Format
