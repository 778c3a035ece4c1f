"""Event data bounds, alone: what passes encodes in every form the hub writes; what is too deep or too
large is a clear 4xx, before anything is stored."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import HttpError
from hub.wire import formats
from hub.wire.event import Draft, Event
from hub.wire.frames import event_body
from hub.wire.payload import MAX_DATA_DEPTH, ORJSON_MAX_DEPTH, check_data, encode_data
from hub.wire.progress import parse_progress
from hub.wire.sse import data_text


def nested(depth: int, kinds: str = "l", leaf: object = 1) -> object:
    """`leaf` inside `depth` arrays (`l`) or objects (`d`), cycling through `kinds` from the outside in."""
    value = leaf
    for level in reversed(range(depth)):
        value = [value] if kinds[level % len(kinds)] == "l" else {"k": value}
    return value


def depth_of(value: object) -> int:
    """Arrays and objects on the deepest path, an empty one included: a walk, to check against."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def encodes_everywhere(data: object) -> None:
    """Every form an accepted event is written in: the broker envelope, SSE, NDJSON, history."""
    draft = data if isinstance(data, Draft) else Draft(("t",), data, "e", 1, True)
    orjson.loads(draft.body())
    event = Event.from_draft("abc-1", draft)
    event_body(event)
    orjson.loads(formats.ndjson_event(event, draft.topics[0]))
    items = formats.json_array_items([event], draft.topics[0], first=True)
    orjson.loads(b"[" + items + formats.json_array_end(False))
    formats.text_event(event)


def test_orjson_encodes_exactly_its_depth_limit():
    # check_data leans on this limit: if orjson changes it, the bound must be looked at again
    orjson.dumps(nested(ORJSON_MAX_DEPTH))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(nested(ORJSON_MAX_DEPTH + 1))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(nested(ORJSON_MAX_DEPTH, leaf=[]))  # an empty array is a level too
    orjson.loads(b"[" * 1024 + b"]" * 1024)  # it parses deeper than it encodes: the attack


@pytest.mark.parametrize("kinds", ["l", "d", "ld", "dl"])
@pytest.mark.parametrize("leaf", [1, "s", None])
def test_data_at_the_depth_bound_passes_and_encodes_everywhere(kinds, leaf):
    data = nested(MAX_DATA_DEPTH, kinds, leaf)
    assert check_data(data, 10_000) == len(orjson.dumps(data))
    encodes_everywhere(data)


@pytest.mark.parametrize("kinds", ["l", "d", "ld"])
@pytest.mark.parametrize(
    ("depth", "leaf"),
    [
        (MAX_DATA_DEPTH + 1, 1),
        (MAX_DATA_DEPTH, []),
        (MAX_DATA_DEPTH, {}),
        (ORJSON_MAX_DEPTH - 1, 1),  # the one the attack used: stored, then not sent
        (ORJSON_MAX_DEPTH, 1),
        (1023, 1),  # the deepest orjson parses
    ],
)
def test_data_past_the_depth_bound_is_a_400(kinds, depth, leaf):
    with pytest.raises(HttpError) as refused:
        check_data(nested(depth, kinds, leaf), 10**6, "[3].")
    assert (refused.value.status, refused.value.code) == (400, "data_too_deep")
    assert refused.value.message.startswith("[3].data nests")


def test_a_wide_shallow_value_is_not_too_deep():
    data = [{"a": [i, {"b": []}]} for i in range(5000)]
    check_data(data, 10**6)


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1},
        list(range(33)),  # more values than the walk looks at: encoded padded
        [{"i": i} for i in range(2000)],
        {"items": [{"i": i, "tags": [i]} for i in range(50)]},
        nested(MAX_DATA_DEPTH),
        (1, [2, (3,)]),  # a tuple is no JSON type the walk knows: the padded encode judges it
    ],
)
def test_encode_data_returns_the_compact_json_once_for_the_envelope_to_embed(data):
    encoded = encode_data(data, 10**6)
    assert encoded == orjson.dumps(data)
    # The envelope writes these bytes as they are (a value that encoded otherwise would show it).
    assert Draft(("t",), data, encoded=b'"embedded"').body() == b'{"t":["t"],"d":"embedded"}'


def test_a_string_is_measured_not_encoded():
    assert encode_data("é" * 10, 20) is None
    with pytest.raises(HttpError) as refused:
        encode_data("é" * 11, 20)
    assert (refused.value.status, refused.value.code) == (413, "data_too_large")


def test_too_large_and_too_deep_is_refused_as_too_large_first():
    # as before the encode was shared: size is judged first, for wide values and narrow ones alike
    for data in (nested(MAX_DATA_DEPTH + 1, leaf="x" * 100), [nested(MAX_DATA_DEPTH + 1)] * 40):
        with pytest.raises(HttpError) as refused:
            check_data(data, 50)
        assert (refused.value.status, refused.value.code) == (413, "data_too_large")


def test_brackets_inside_strings_are_not_nesting():
    check_data(["[" * 500, "{" * 500], 10_000)


def test_size_is_counted_as_written():
    assert check_data("é" * 10, 20) == 20
    assert check_data({"a": "é"}, 100) == len('{"a":"é"}'.encode())
    with pytest.raises(HttpError) as refused:
        check_data("é" * 11, 20)
    assert (refused.value.status, refused.value.code) == (413, "data_too_large")


@pytest.mark.parametrize("data", ["a\ud800", [2**64], {"a": [-(2**63) - 1]}])
def test_what_no_parser_makes_is_still_refused_not_stored(data):
    with pytest.raises(HttpError) as refused:
        check_data(data, 100)
    assert (refused.value.status, refused.value.code) == (400, "invalid_data")


@pytest.mark.parametrize("depth", [MAX_DATA_DEPTH, ORJSON_MAX_DEPTH - 1, ORJSON_MAX_DEPTH])
def test_progress_result_nested_too_deep_is_a_400(depth):
    # the update wraps the result in an object of its own: the result gets one level less
    body = b'{"done": true, "result": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    with pytest.raises(HttpError) as refused:
        parse_progress("j", body, 10**6)
    assert (refused.value.status, refused.value.code) == (400, "data_too_deep")
    encodes_everywhere(parse_progress("j", orjson.dumps({"done": True, "result": nested(63)}), 10**6).data)


shapes = st.recursive(
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=3) | st.just([]) | st.just({}),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    shape=shapes,
    depth=st.integers(0, 300),
    kinds=st.text(alphabet="ld", min_size=1, max_size=4),
    siblings=st.integers(0, 3),
)
def test_fuzz_data_passes_exactly_when_shallow_enough_and_then_encodes(shape, depth, kinds, siblings):
    # a deep spine with other values beside it, so the deepest path is not always the first
    data = nested(depth, kinds, shape)
    if depth and isinstance(data, list):  # (at depth 0 it is `shape` itself)
        data.extend([shape] * siblings)
    if depth_of(data) > MAX_DATA_DEPTH:
        with pytest.raises(HttpError) as refused:
            check_data(data, 10**7)
        assert (refused.value.status, refused.value.code) == (400, "data_too_deep")
        return
    size = check_data(data, 10**7)
    assert size == len(data_text(data).encode())
    encodes_everywhere(data)
    # the bytes the envelope embeds are exactly the value's compact JSON, however it was encoded
    encoded = encode_data(data, 10**7)
    assert encoded == (None if isinstance(data, str) else orjson.dumps(data))
    assert Draft(("t",), data, encoded=encoded).body() == Draft(("t",), data).body()
