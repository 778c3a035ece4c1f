"""The SSE wire format, read back by an independent parser (httpx-sse's)."""

from __future__ import annotations

import re

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import given
from hypothesis import strategies as st

from hub.wire import chunked, sse


def parse(raw: bytes) -> list[dict[str, object]]:
    """Events as a browser dispatches them: blocks without a data line dispatch nothing."""
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    events = []
    has_data = False
    for line in [*lines.decode(raw.decode("utf-8")), *lines.flush()]:
        if line.partition(":")[0] == "data":
            has_data = True
        event = decoder.decode(line)
        if event is not None and has_data:
            events.append({"id": event.id, "event": event.event, "data": event.data, "retry": event.retry})
        if not line:
            has_data = False
    return events


def normalized(data: str) -> str:
    # SSE cannot carry a CR: every line break is read back as LF. That is the format, not a loss.
    return re.sub(r"\r\n|\r|\n", "\n", data)


event_names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20)
ids = st.from_regex(r"[a-z2-7]{6}-[0-9]{1,12}", fullmatch=True)
nasty = st.sampled_from(["\r", "\n", "\r\n", "\0", "data: x", "id: 666", "event: reset", ":", "🎉", " "])
datas = st.lists(st.one_of(st.text(), nasty), max_size=8).map("".join)


@given(data=datas, id=ids, event=event_names, retry=st.none() | st.integers(0, 10**8))
def test_any_event_reads_back_as_itself(data, id, event, retry):
    raw = sse.encode_event(data, id=id, event=event, retry=retry)
    assert parse(raw) == [{"id": id, "event": event, "data": normalized(data), "retry": retry}]


@given(datas=st.lists(datas, min_size=1, max_size=5))
def test_no_data_can_inject_a_field_or_an_event(datas):
    raw = b"".join(sse.encode_event(d, id=f"abcdef-{i}") for i, d in enumerate(datas))
    got = parse(raw)
    assert [(e["id"], e["event"], e["data"], e["retry"]) for e in got] == [
        (f"abcdef-{i}", "message", normalized(d), None) for i, d in enumerate(datas)
    ]


def test_every_line_break_kind_splits_data_lines():
    raw = sse.encode_event("a\rb\nc\r\nd", id="x-1")
    assert raw == b"id: x-1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


def test_empty_data_is_still_an_event():
    assert sse.encode_event("") == b"data: \n\n"
    assert parse(sse.encode_event("")) == [{"id": "", "event": "message", "data": "", "retry": None}]


def test_leading_space_in_data_survives():
    assert parse(sse.encode_event("  two spaces"))[0]["data"] == "  two spaces"


def test_json_values_are_written_compact():
    assert sse.data_text({"a": [1, None, True], "b": "x"}) == '{"a":[1,null,true],"b":"x"}'
    assert sse.data_text("raw") == "raw"
    assert sse.data_text(42) == "42"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_field_values_with_line_breaks_are_refused(bad):
    with pytest.raises(ValueError, match="line break"):
        sse.encode_event("x", id=bad)
    with pytest.raises(ValueError, match="line break"):
        sse.encode_event("x", event=bad)


def test_comment_and_preamble_dispatch_nothing():
    raw = sse.preamble(3000, "hello\nworld") + sse.encode_comment() + sse.encode_retry(10)
    assert raw == b"retry: 3000\n: hello\n: world\n\n:\n\nretry: 10\n\n"
    assert parse(raw) == []


@given(st.binary(max_size=300))
def test_chunk_frame_is_length_prefixed(body):
    framed = chunked.frame(body)
    size, _, rest = framed.partition(b"\r\n")
    assert int(size, 16) == len(body)
    assert rest == body + b"\r\n"
