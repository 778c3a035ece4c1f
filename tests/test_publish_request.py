"""The publish body parser, alone: every malformed body is a clear 4xx, never anything else."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import HttpError
from hub.wire.event import Draft
from hub.wire.publish_request import PublishLimits, parse_publish, validate_event_name
from tests.test_payload import encodes_everywhere

LIMITS = PublishLimits(max_data_bytes=1000, max_batch=10, max_topics=5)
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def test_object_with_every_field():
    req = parse_publish(
        JSON,
        b'{"topic":"a","data":{"x":1},"event":"ping","retry":500,"retain":true}',
        LIMITS,
    )
    assert req.drafts == (Draft(("a",), {"x": 1}, "ping", 500, True),)
    assert req.batch is False


def test_parsed_data_is_encoded_once_and_the_envelope_embeds_it():
    req = parse_publish(JSON, b'[{"topic":"a","data":{"x": [1, 2]}},{"topic":"a","data":"s"}]', LIMITS)
    value, text = req.drafts
    assert value.encoded == b'{"x":[1,2]}'  # what validation measured, kept for Draft.body()
    assert text.encoded is None  # a string is measured without encoding it
    assert value.body() == b'{"t":["a"],"d":{"x":[1,2]}}'


def test_batch_and_topics():
    req = parse_publish(
        JSON + "; charset=utf-8", b'[{"topics":["a","b","a"],"data":"x"},{"topic":"c"}]', LIMITS
    )
    assert req.batch is True
    assert req.drafts == (Draft(("a", "b"), "x"), Draft(("c",), ""))


def test_form_like_mercure():
    body = b"topic=a&topic=b&data=hello+world&type=note&retry=10&retain=on"
    req = parse_publish(FORM, body, LIMITS)
    assert req.drafts == (Draft(("a", "b"), "hello world", "note", 10, True),)


def test_vendor_json_media_type():
    assert parse_publish("application/vnd.hub+json", b'{"topic":"a"}', LIMITS).drafts[0].topics == ("a",)


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        (JSON, b"", 400, "invalid_json"),
        (JSON, b"{", 400, "invalid_json"),
        (JSON, b"\xff\xfe", 400, "invalid_json"),
        (JSON, b"42", 400, "invalid_event"),
        (JSON, b'{"topic":"a","data":' + b"[" * 300 + b"]" * 300 + b"}", 400, "data_too_deep"),
        # parsed, then stored, then unsendable: orjson encodes 254 levels, and the envelope adds one
        (JSON, b'{"topic":"a","data":' + b"[" * 254 + b"1" + b"]" * 254 + b"}", 400, "data_too_deep"),
        (JSON, b'{"topic":"a","data":' + b'{"k":' * 65 + b"1" + b"}" * 65 + b"}", 400, "data_too_deep"),
        (JSON, b'[{"topic":"a"},{"topic":"a","data":' + b"[" * 65 + b"]" * 65 + b"}]", 400, "data_too_deep"),
        (JSON, b'{"topic":"a","data":' + b"9" * 400 + b"}", 400, "invalid_json"),
        (JSON, b'{"topic":"a","data":"\\ud800"}', 400, "invalid_json"),
        (JSON, b"[]", 400, "empty_batch"),
        (JSON, b"[1]", 400, "invalid_event"),
        (JSON, b"{}", 400, "missing_topic"),
        (JSON, b'{"data":"x"}', 400, "missing_topic"),
        (JSON, b'{"topic":"a","topics":["b"]}', 400, "invalid_field"),
        (JSON, b'{"topics":[]}', 400, "invalid_field"),
        (JSON, b'{"topics":"a"}', 400, "invalid_field"),
        (JSON, b'{"topic":"a b"}', 400, "invalid_topic"),
        (JSON, b'{"topic":"a/*"}', 400, "invalid_topic"),
        (JSON, b'{"topic":7}', 400, "invalid_topic"),
        (JSON, b'{"topic":"a","event":"x\\ny"}', 400, "invalid_event_name"),
        (JSON, b'{"topic":"a","event":"x\\ry"}', 400, "invalid_event_name"),
        (JSON, b'{"topic":"a","event":"x\\u0000"}', 400, "invalid_event_name"),
        (JSON, b'{"topic":"a","event":"x\\u2028"}', 400, "invalid_event_name"),
        (JSON, b'{"topic":"a","event":""}', 400, "invalid_event_name"),
        (JSON, b'{"topic":"a","event":5}', 400, "invalid_event_name"),
        (JSON, b'{"topic":"a","event":"reset"}', 400, "reserved_event_name"),
        (JSON, b'{"topic":"a","retry":-1}', 400, "invalid_field"),
        (JSON, b'{"topic":"a","retry":true}', 400, "invalid_field"),
        (JSON, b'{"topic":"a","retry":1.5}', 400, "invalid_field"),
        (JSON, b'{"topic":"a","retain":"yes"}', 400, "invalid_field"),
        (JSON, b'{"topic":"a","id":"mine"}', 400, "unknown_field"),
        (JSON, b'{"topic":"a","data":"' + b"x" * 1001 + b'"}', 413, "data_too_large"),
        (JSON, orjson.dumps([{"topic": "a"}] * 11), 413, "batch_too_large"),
        (JSON, orjson.dumps({"topics": list("abcdef")}), 413, "too_many_topics"),
        (JSON, b'[{"topic":"a"},{"topic":"b c"}]', 400, "invalid_topic"),
        (FORM, b"data=x", 400, "missing_topic"),
        (FORM, b"topic=a&bogus=1", 400, "unknown_field"),
        (FORM, b"topic=a&data=1&data=2", 400, "invalid_field"),
        (FORM, b"topic=a&retry=soon", 400, "invalid_field"),
        (FORM, b"topic=a&retain=maybe", 400, "invalid_field"),
        (FORM, b"topic=%ff", 400, "invalid_form"),
        (FORM, b"topic=a&event=x%0Ay", 400, "invalid_event_name"),
        ("text/plain", b"hi", 415, "unsupported_media_type"),
        ("", b'{"topic":"a"}', 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies_are_refused_clearly(content_type, body, status, code):
    with pytest.raises(HttpError) as info:
        parse_publish(content_type, body, LIMITS)
    assert (info.value.status, info.value.code) == (status, code)
    assert info.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "topic": st.text(max_size=10) | json_values,
        "topics": st.lists(st.text(max_size=5), max_size=7) | json_values,
        "data": json_values,
        "event": st.text(max_size=6) | json_values,
        "retry": st.integers(-5, 10**9) | json_values,
        "retain": json_values,
        "other": json_values,
    },
)


def deep_data(depth: int, kinds: str) -> bytes:
    """Data nested `depth` arrays and objects deep, as JSON text (orjson would not encode the deepest)."""
    opening = "".join("[" if kinds[i % len(kinds)] == "l" else '{"k":' for i in range(depth))
    closing = "".join("]" if kinds[i % len(kinds)] == "l" else "}" for i in reversed(range(depth)))
    return f'{{"topic":"a","data":{opening}1{closing}}}'.encode()


bodies = st.one_of(
    st.binary(max_size=200),
    fields.map(orjson.dumps),
    st.builds(deep_data, st.integers(0, 1100), st.text(alphabet="ld", min_size=1, max_size=3)),
    st.lists(fields, max_size=12).map(orjson.dumps),
    st.lists(
        st.tuples(st.sampled_from(["topic", "data", "type", "retry", "x"]), st.text(max_size=8)), max_size=6
    ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")),
)


def test_a_media_type_that_is_not_utf8_is_refused_in_valid_json():
    # aiohttp reads header bytes that are not UTF-8 as lone surrogates; the refusal quoted them and
    # could not itself be encoded, so the client got a 500
    with pytest.raises(HttpError) as refused:
        parse_publish("\udcacwM/\udce2Y", b"{}", LIMITS)
    assert refused.value.status == 415
    assert orjson.loads(refused.value.body())["error"]["code"] == "unsupported_media_type"


@settings(max_examples=1000)
@given(
    content_type=st.sampled_from([JSON, FORM, "text/plain", "", "application/x+json"])
    # what aiohttp makes of header bytes that are not UTF-8: lone surrogates
    | st.text(st.characters() | st.integers(0xDC80, 0xDCFF).map(chr), max_size=12),
    body=bodies,
)
def test_fuzz_parser_answers_drafts_or_a_4xx(content_type, body):
    try:
        req = parse_publish(content_type, body, LIMITS)
    except HttpError as exc:
        refusal = exc
    else:
        refusal = None
    if refusal is not None:
        assert 400 <= refusal.status < 500
        orjson.loads(refusal.body())
        return
    assert req.drafts
    for draft in req.drafts:
        assert 1 <= len(draft.topics) <= LIMITS.max_topics
        encodes_everywhere(draft)


def test_an_event_name_no_encoder_can_write_is_refused():
    # no parser here makes a lone surrogate, but a name that cannot be encoded must never be stored
    with pytest.raises(HttpError) as refused:
        validate_event_name("x\ud800")
    assert (refused.value.status, refused.value.code) == (400, "invalid_event_name")
