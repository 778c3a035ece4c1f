"""The streamed-body readers of POST /publish/stream, fed bodies cut at every possible place. Pure."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from hub.wire import sse
from hub.wire.publish_request import PublishLimits
from hub.wire.streamed_body import NdjsonLines, SseEvents, TextChunks, reader_for

LIMITS = PublishLimits(max_data_bytes=1000, max_batch=100, max_topics=10)
TOPICS = ("t",)


def cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def read_all(reader, chunks: list[bytes]):
    drafts = []
    for chunk in chunks:
        drafts.extend(reader.feed(chunk))
    drafts.extend(reader.end())
    return drafts


@given(st.text(), st.lists(st.integers(0, 10_000), max_size=8))
def test_text_chunks_concatenate_to_the_body_however_it_is_cut(text, cuts):
    drafts = read_all(TextChunks(TOPICS, "token", LIMITS), cut(text.encode(), cuts))
    assert "".join(d.data for d in drafts) == text
    assert all(len(d.data.encode()) <= LIMITS.max_data_bytes and d.data for d in drafts)
    assert {(d.topics, d.event) for d in drafts} <= {(TOPICS, "token")}


def test_a_long_chunk_is_split_between_characters():
    drafts = TextChunks(TOPICS, None, LIMITS).feed(("é" * 1500).encode())
    assert [len(d.data) for d in drafts] == [500, 500, 500]


events = st.lists(
    st.tuples(st.sampled_from([None, "message", "delta", "error"]), st.text(max_size=40)), max_size=5
)


@given(events, st.lists(st.integers(0, 10_000), max_size=8), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_sse_body_is_relayed_event_by_event_however_it_is_cut(evs, cuts, newline):
    body = b": an upstream comment\n" + b"".join(
        sse.encode_event(data, id="up-1", event=event) for event, data in evs
    )
    body = body.replace(b"\n", newline)
    drafts = read_all(SseEvents(TOPICS, "fallback", LIMITS), cut(body, cuts))
    assert [(d.event, d.data) for d in drafts] == [
        # `message` is the default type, which the wire leaves out: the query's event fills it in.
        (event if event not in (None, "message") else "fallback", re.sub(r"\r\n|\r|\n", "\n", data))
        for event, data in evs
    ]


def test_sse_like_an_llm_api():
    body = (
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}\r\n\r\n'
        b'data: {"choices":[{"delta":{"content":"lo"}}]}\r\n\r\n'
        b'event: usage\r\ndata: {"tokens": 2}\r\n\r\ndata: [DONE]\r\n\r\ndata: cut short'
    )
    drafts = read_all(SseEvents(TOPICS, None, LIMITS), [body[:7], body[7:60], body[60:]])
    assert [(d.event, d.data) for d in drafts] == [
        (None, '{"choices":[{"delta":{"content":"Hel"}}]}'),
        (None, '{"choices":[{"delta":{"content":"lo"}}]}'),
        ("usage", '{"tokens": 2}'),
        (None, "[DONE]"),
    ]


def test_sse_refusals():
    with pytest.raises(BadRequest):
        SseEvents(TOPICS, None, LIMITS).feed(b"event: reset\ndata: x\n\n")
    with pytest.raises(PayloadTooLarge):
        SseEvents(TOPICS, None, LIMITS).feed(b"data: " + b"x" * 2000 + b"\n\n")


@given(st.lists(st.integers(0, 10_000), max_size=8))
def test_ndjson_lines_are_publish_objects(cuts):
    lines = [
        {"data": "a"},
        {"topic": "other", "data": {"n": 1}, "event": "e"},
        {"topics": ["x", "y"], "data": 2, "retain": True},
    ]
    body = b"\n".join(orjson.dumps(line) for line in lines) + b"\n\n"
    drafts = read_all(NdjsonLines(TOPICS, "default", LIMITS), cut(body, cuts))
    assert [(d.topics, d.data, d.event, d.retain) for d in drafts] == [
        (TOPICS, "a", "default", False),
        (("other",), {"n": 1}, "e", False),
        (("x", "y"), 2, "default", True),
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json}\n", BadRequest),
        (b"[1, 2]\n", BadRequest),
        (b'{"data": "x", "id": "1"}\n', BadRequest),
        (b'{"data": "' + b"x" * 1200 + b'"}\n', PayloadTooLarge),
        (b"x" * 70_000, PayloadTooLarge),  # a line that never ends is not buffered forever
        # parsed, but no envelope could carry it: refused before it is published
        (b'{"data": ' + b"[" * 254 + b"1" + b"]" * 254 + b"}\n", BadRequest),
    ],
)
def test_ndjson_refusals(body, error):
    with pytest.raises(error):
        read_all(NdjsonLines(TOPICS, None, LIMITS), [body])


def test_other_media_types_are_refused():
    with pytest.raises(UnsupportedMediaType):
        reader_for("application/json", TOPICS, None, LIMITS)
    assert isinstance(reader_for("text/plain; charset=utf-8", TOPICS, None, LIMITS), TextChunks)
