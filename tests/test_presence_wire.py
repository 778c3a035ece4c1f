"""hub/wire/presence.py: what a client sends about presence is bounded, and what comes back from Redis
is checked again."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import BadRequest, HttpError
from hub.wire.presence import (
    Disconnect,
    Member,
    decode_disconnect,
    decode_member,
    guarded_selector,
    parse_disconnect,
    parse_limit,
    parse_name,
    presence_topic,
)
from hub.wire.topics import Selector

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["sub", "name", "topic", "conn", "reason", "other"])


@given(st.binary(max_size=300) | st.dictionaries(fields, json_values, max_size=5).map(orjson.dumps))
def test_a_disconnect_body_parses_or_is_a_4xx(body):
    try:
        command = parse_disconnect(body)
    except HttpError as exc:
        refused: HttpError | None = exc
    else:
        refused = None
    if refused is not None:
        assert 400 <= refused.status < 500
        return
    # what one process sends, every other reads back the same
    assert decode_disconnect(command.encode()) == command
    assert {command.sub, command.name, command.topic, command.conn} != {None}


@given(st.binary(max_size=200) | st.dictionaries(st.text(max_size=6), json_values).map(orjson.dumps))
def test_whatever_redis_holds_decodes_to_a_member_or_none(raw):
    member = decode_member(raw)
    assert member is None or isinstance(member, Member)


def test_a_member_goes_through_redis_unchanged():
    member = Member("c0ffee", "alice", None, 1_764_900_000_000)
    assert decode_member(member.encode()) == member


def test_a_disconnect_matches_every_field_it_names():
    ann = Member("1", sub="ann", name="a")
    chat = (Selector.parse("chat/*"),)
    assert Disconnect(sub="ann", topic="chat/1").matches(ann, chat)
    assert not Disconnect(sub="ann", topic="news").matches(ann, chat)
    assert not Disconnect(sub="bob").matches(ann, chat)
    assert Disconnect(conn="1").matches(ann, ())
    assert not Disconnect(name="b", conn="1").matches(ann, ())


@pytest.mark.parametrize("name", ["", "x" * 65, "a\nb", "\x00", "tab\there"])
def test_a_bad_name_is_a_400(name):
    with pytest.raises(BadRequest):
        parse_name({"name": name}, auth=False)


def test_a_name_is_refused_with_auth_on_and_taken_without():
    assert parse_name({"name": "ann"}, auth=False) == "ann"
    assert parse_name({}, auth=True) is None
    with pytest.raises(BadRequest):
        parse_name({"name": "ann"}, auth=True)


@given(st.text(max_size=12))
def test_a_limit_is_a_number_from_1_to_1000_or_a_400(raw):
    try:
        limit = parse_limit({"limit": raw})
    except BadRequest:
        return
    assert 1 <= limit <= 1000
    assert raw == str(limit)


def test_the_system_topic_and_its_grant():
    assert presence_topic("chat/1") == "$presence/chat/1"
    assert presence_topic("x" * 250) is None  # past 256 bytes with its prefix
    assert guarded_selector(Selector.parse("$presence/chat/*")).text == "chat/*"
    assert guarded_selector(Selector.parse("$presence")).text == "$presence"
    assert guarded_selector(Selector.parse("chat/1")).text == "chat/1"
