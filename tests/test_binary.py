"""Binary events on the wire, pure: the envelope, each format's marker, the publish parser and a byte
stream's resume point (hub/wire/binary.py and the modules it marks). Fuzzed with hypothesis."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from hub.wire import binary, formats, frames, sse
from hub.wire.event import Draft, EnvelopeError, Event, envelope, open_envelope
from hub.wire.formats import Format
from hub.wire.publish_request import PublishLimits, parse_publish, validate_event_name
from hub.wire.sse_parser import SseParser
from hub.wire.streamed_body import reader_for

LIMITS = PublishLimits(max_data_bytes=1024, max_batch=10, max_topics=4)
OCTETS = "application/octet-stream"
EVERY_BYTE = bytes(range(256))


def binary_event(data: bytes = EVERY_BYTE, event: str | None = None) -> Event:
    return Event("e-7", ("files/1",), data, event)


@given(st.binary(max_size=2048), st.one_of(st.none(), st.text(min_size=1, max_size=20)), st.booleans())
def test_a_binary_envelope_gives_back_the_bytes_and_fields_whatever_they_hold(data, event, retain):
    # Bytes that look like JSON, line breaks and the marker itself included.
    draft = Draft(("a/1", "b/2"), data, event, 1500, retain)
    opened = open_envelope(envelope("x-9", draft.body()))
    assert (opened.data, opened.topics, opened.event, opened.retry, opened.retain) == (
        data,
        ("a/1", "b/2"),
        event,
        1500,
        retain,
    )
    assert type(opened.data) is bytes
    assert Event.from_draft("x-9", draft).size == len(data)


def test_a_text_envelope_is_unchanged_and_a_text_that_looks_binary_stays_text():
    for data in ("B{}\nabc", "AAEC", {"b": "x"}):
        assert open_envelope(envelope("x-1", Draft(("t",), data).body())).data == data
    assert Draft(("t",), "x").body() == b'{"t":["t"],"d":"x"}'


@pytest.mark.parametrize("body", [b"B", b'B{"t":["a"]}', b"Bnot json\nxx", b'B{"t":5}\nxx', b"B[]\n"])
def test_a_broken_binary_envelope_is_refused_not_misread(body):
    with pytest.raises(EnvelopeError):
        open_envelope(b"x-1 " + body)


def test_sse_marks_bytes_by_type_and_field_and_never_a_text_event():
    body = frames.event_body(binary_event())
    assert body == (
        b"id: e-7\nevent: binary\nencoding: base64\ndata: " + base64.b64encode(EVERY_BYTE) + b"\n\n"
    )
    named = frames.event_body(binary_event(b"\x00", event="chunk"))
    assert named == b"id: e-7\nevent: chunk\nencoding: base64\ndata: AA==\n\n"
    assert b"encoding" not in frames.event_body(Event("e-8", ("t",), "AAEC"))
    # Read back by the hub's own parser: the field is there for whoever reads fields.
    [event] = SseParser().feed(body)
    assert (event.event, event.encoding, event.is_binary) == ("binary", "base64", True)
    assert event.data_bytes() == EVERY_BYTE
    [text] = SseParser().feed(b"data: AAEC\n\n")
    assert not text.is_binary
    with pytest.raises(ValueError, match="text"):
        text.data_bytes()


def test_ndjson_and_history_carry_base64_with_its_encoding():
    doc = orjson.loads(formats.ndjson_event(binary_event(b"\xff\x00"), "files/1"))
    assert doc == {"id": "e-7", "topic": "files/1", "event": "binary", "data": "/wA=", "encoding": "base64"}
    items = formats.json_array_items([binary_event(b"\x01", event="frame")], "files/1", first=True)
    assert orjson.loads(items)["event"] == "frame"
    assert "encoding" not in orjson.loads(formats.ndjson_event(Event("e-8", ("t",), "x"), "t"))


def test_the_byte_format_carries_only_bytes_and_the_text_format_only_text():
    raw, text = binary_event(b"\x00\x01"), Event("e-8", ("t",), {"done": True})
    for chunked in (False, True):
        assert frames.encoded_for(Format.BYTES, chunked, (), text) == b""
        assert frames.encoded_for(Format.TEXT, chunked, (), raw) == b""
    assert frames.encoded_for(Format.BYTES, False, (), raw) == b"\x00\x01"
    assert frames.encoded_for(Format.TEXT, False, (), text) == b'{"done":true}'


def test_accept_asks_for_the_byte_format():
    assert formats.from_accept("application/octet-stream") is Format.BYTES
    # A tie among application/* goes to NDJSON, as before bytes existed.
    assert formats.from_accept("application/*") is Format.NDJSON
    assert formats.from_accept("application/octet-stream;q=0.5, text/event-stream") is Format.SSE


def test_a_binary_publish_takes_its_fields_from_the_query():
    query = [("topic", "f/1"), ("topic", "f/2"), ("event", "chunk"), ("retry", "900"), ("retain", "true")]
    [draft] = parse_publish(OCTETS + "; x=1", b"\x00\n{", LIMITS, [*query, ("token", "t")]).drafts
    assert draft == Draft(("f/1", "f/2"), b"\x00\n{", "chunk", 900, True)
    [empty] = parse_publish(OCTETS, b"", LIMITS, [("topic", "f/1"), ("event", "binary")]).drafts
    assert (empty.data, empty.event) == (b"", None)  # `binary` is a binary event's type by default


@pytest.mark.parametrize(
    ("query", "body", "error", "code"),
    [
        ([], b"x", BadRequest, "missing_topic"),
        ([("topic", "f/1"), ("event", "a"), ("event", "b")], b"x", BadRequest, "invalid_field"),
        ([("topic", "f/1"), ("retry", "-1")], b"x", BadRequest, "invalid_field"),
        ([("topic", "f/1"), ("retain", "maybe")], b"x", BadRequest, "invalid_field"),
        ([("topic", "f/1"), ("event", "reset")], b"x", BadRequest, "reserved_event_name"),
        ([("topic", "f/1"), ("event", "a\nb")], b"x", BadRequest, "invalid_event_name"),
        ([("topic", "bad topic")], b"x", BadRequest, "invalid_topic"),
        ([("topic", "f/1")], b"x" * 1025, PayloadTooLarge, "data_too_large"),
    ],
)
def test_a_bad_binary_publish_is_a_4xx(query, body, error, code):
    with pytest.raises(error) as caught:
        parse_publish(OCTETS, body, LIMITS, query)
    assert caught.value.code == code


def test_binary_names_bytes_only():
    with pytest.raises(BadRequest, match="bytes"):
        parse_publish("application/json", b'{"topic":"t","data":"x","event":"binary"}', LIMITS)
    with pytest.raises(BadRequest):
        validate_event_name("binary")
    assert validate_event_name("binary", binary=True) is None
    with pytest.raises(UnsupportedMediaType):
        parse_publish("image/png", b"x", LIMITS, [("topic", "t")])


def test_a_streamed_octet_body_is_one_event_per_piece_cut_at_the_data_limit():
    reader = reader_for(OCTETS, ("f/1",), "chunk", LIMITS)
    drafts = reader.feed(b"\x00" * 2500) + reader.feed(b"\xff") + reader.end()
    assert [len(d.data) for d in drafts] == [1024, 1024, 452, 1]
    assert all(d.event == "chunk" and type(d.data) is bytes for d in drafts)


def test_a_relayed_sse_stream_keeps_its_binary_events_as_bytes():
    reader = reader_for("text/event-stream", ("copy",), None, LIMITS)
    stream = frames.event_body(binary_event(b"\x00\xff")) + b"event: binary\nencoding: base64\ndata: !!\n\n"
    drafts = reader.feed(frames.event_body(binary_event(b"\x00\xff")))
    assert [(d.data, d.event) for d in drafts] == [(b"\x00\xff", None)]
    reader = reader_for("text/event-stream", ("copy",), None, LIMITS)
    assert [d.data for d in reader.feed(stream)] == [b"\x00\xff"]
    with pytest.raises(BadRequest, match="base64"):
        reader.end()
    for block, message in [
        (b"event: binary\ndata: x\n\n", "bytes"),  # the bytes' type without their encoding
        (b"encoding: gzip\ndata: x\n\n", "gzip"),
    ]:
        with pytest.raises(BadRequest, match=message):
            reader_for("text/event-stream", ("copy",), None, LIMITS).feed(block)


@given(st.text(max_size=40) | st.from_regex(r"\A[a-z0-9_.-]{0,12}:[0-9]{0,20}\Z"))
def test_a_resume_point_is_read_or_refused_never_misread(text):
    head, sep, tail = text.rpartition(":")
    if sep and not (tail.isascii() and tail.isdigit() and tail == str(int(tail)) and int(tail) < 2**53):
        with pytest.raises(BadRequest, match="offset"):
            binary.split_offset(text)
        return
    head, offset = binary.split_offset(text)
    assert binary.join_offset(head or "", offset) == text or text.endswith(":0")


def test_a_resume_point_joins_an_id_and_an_offset():
    assert binary.split_offset("abc-17:4096") == ("abc-17", 4096)
    assert binary.split_offset("abc-17") == ("abc-17", 0)
    assert binary.split_offset("earliest:5") == ("earliest", 5)
    assert binary.split_offset(None) == (None, 0)
    for bad in ("abc-1:", "abc-1:-4", "abc-1:04", "abc-1:1e3", "abc-1:" + "9" * 20, "x:٣"):
        with pytest.raises(BadRequest):
            binary.split_offset(bad)
    assert binary.join_offset("abc-17", 0) == "abc-17"


def test_a_relayed_binary_event_is_bounded_by_its_bytes_not_its_base64():
    # 1000 bytes are 1336 characters of base64, over the 1024 the limit holds in bytes.
    reader = reader_for("text/event-stream", ("copy",), None, LIMITS)
    [draft] = reader.feed(frames.event_body(binary_event(bytes(1000))))
    assert draft.data == bytes(1000)
    with pytest.raises(PayloadTooLarge):
        reader_for("text/event-stream", ("copy",), None, LIMITS).feed(
            frames.event_body(binary_event(bytes(1025)))
        )


def test_a_binary_event_may_not_take_texts_default_type():
    with pytest.raises(BadRequest, match="text"):
        validate_event_name("message", binary=True)
    assert validate_event_name("message") == "message"


def test_one_counter_positions():
    assert binary.one_counter("abcdef-18")
    assert binary.one_counter("k2d7qa_5.1042")
    assert not binary.one_counter("k2d7qa_5.1042_9.7")
    assert not binary.one_counter("earliest")
    assert not binary.one_counter("")


def test_the_position_before_an_event_where_one_counter_names_it():
    assert binary.before("abcdef-18") == "abcdef-17"
    assert binary.before("abcdef-1") == "abcdef-0"
    assert binary.before("k2d7qa_5.1042") == "k2d7qa_5.1041"
    assert binary.before("k2d7qa_5.1042_9.7") is None  # which counter moved is not in the id
    assert binary.before("abcdef-0") is None
    assert binary.before("nonsense") is None


def test_sse_encodes_a_binary_value_through_the_one_entry_point():
    assert sse.encode_data_event(b"\x01", id="i-1", event=None) == (
        b"id: i-1\nevent: binary\nencoding: base64\ndata: AQ==\n\n"
    )
    assert sse.encode_data_event({"a": 1}, id="i-1") == b'id: i-1\ndata: {"a":1}\n\n'


def test_json_and_forms_carry_bytes_as_base64_marked_as_ndjson_gives_them():
    body = b'[{"topic": "f/1", "data": "AP8=", "encoding": "base64", "event": "binary"}, {"topic": "f/1"}]'
    first, second = parse_publish("application/json", body, LIMITS).drafts
    assert (first.data, first.event, second.data) == (b"\x00\xff", None, "")
    [form] = parse_publish(
        "application/x-www-form-urlencoded", b"topic=f/1&data=AP8%3D&encoding=base64", LIMITS
    ).drafts
    assert form.data == b"\x00\xff"
    # The hub's own NDJSON line, less its id and topic, publishes the same bytes again.
    line = orjson.loads(formats.ndjson_event(binary_event(), "files/1"))
    del line["id"], line["topic"]
    [again] = parse_publish("application/json", orjson.dumps({**line, "topic": "copy"}), LIMITS).drafts
    assert again.data == EVERY_BYTE


@pytest.mark.parametrize(
    ("doc", "error", "code"),
    [
        ({"data": "AAE", "encoding": "base64"}, BadRequest, "invalid_data"),  # bad padding
        ({"data": "AA E=", "encoding": "base64"}, BadRequest, "invalid_data"),
        ({"data": "AAEC", "encoding": "hex"}, BadRequest, "invalid_field"),
        ({"data": [1], "encoding": "base64"}, BadRequest, "invalid_field"),
        ({"data": "AAEC", "encoding": None}, BadRequest, "invalid_field"),
        ({"data": "A" * 1368, "encoding": "base64"}, PayloadTooLarge, "data_too_large"),  # 1026 bytes
        ({"data": "AAEC", "encoding": "base64", "event": "reset"}, BadRequest, "reserved_event_name"),
    ],
)
def test_a_bad_base64_publish_is_a_4xx(doc, error, code):
    with pytest.raises(error) as caught:
        parse_publish("application/json", orjson.dumps({"topic": "f/1", **doc}), LIMITS)
    assert caught.value.code == code
