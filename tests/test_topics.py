from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import BadRequest
from hub.wire.topics import Selector, validate_topic


@pytest.mark.parametrize(
    "topic", ["a", "users/42/notifications", "é/🎉", "https://x.example/b/1", "a//b", "x" * 256]
)
def test_valid_topics(topic):
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    "topic",
    ["", "a b", "a\tb", "a\nb", "a\rb", "a\0b", "a\x7fb", "a\u2028b", "é" * 129, "a/*", "a*", 3, None],
)
def test_invalid_topics(topic):
    with pytest.raises(BadRequest):
        validate_topic(topic)


@pytest.mark.parametrize(
    ("selector", "topic", "expected"),
    [
        ("a/*", "a/1", True),
        ("a/*", "a/1/2", False),
        ("a/*", "a", False),
        ("a/*", "a/", True),
        ("*", "a", True),
        ("*", "a/b", False),
        ("a/**", "a", True),
        ("a/**", "a/b/c", True),
        ("a/**", "ab", False),
        ("**", "anything/at/all", True),
        ("*/x/**", "q/x", True),
        ("*/x/**", "q/y", False),
        ("exact", "exact", True),
        ("exact", "exactly", False),
    ],
)
def test_selector_matching(selector, topic, expected):
    assert Selector.parse(selector).matches(topic) is expected


@pytest.mark.parametrize("selector", ["a/**/b", "a*", "**x", "a/b**", "", "a b"])
def test_invalid_selectors(selector):
    with pytest.raises(BadRequest):
        Selector.parse(selector)


segments = st.lists(st.sampled_from(["a", "b", "[x]", "?", "\\", "é"]), min_size=1, max_size=4)


@given(
    pattern=st.lists(st.sampled_from(["a", "b", "*", "[x]", "?", "\\"]), min_size=1, max_size=4),
    tail=st.booleans(),
    topic=segments,
)
def test_redis_glob_never_misses_what_the_selector_matches(pattern, tail, topic):
    text = "/".join(pattern + (["**"] if tail else []))
    selector = Selector.parse(text)
    topic_text = "/".join(topic)
    if selector.matches(topic_text):
        assert redis_glob_match(selector.glob(), topic_text)


def redis_glob_match(glob: str, text: str) -> bool:
    """Redis's stringmatch for the subset we emit: `*` any run, `\\c` a literal c."""
    out, i = [], 0
    while i < len(glob):
        ch = glob[i]
        if ch == "\\":
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), text, re.S) is not None


def test_forbidden_characters_are_exactly_whitespace_and_controls():
    import sys
    import unicodedata

    from hub.wire.topics import _bad_char

    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        assert (_bad_char(ch) is not None) == (ch.isspace() or unicodedata.category(ch) == "Cc"), hex(code)


def test_a_topic_is_refused_exactly_for_whitespace_controls_and_stars():
    # Printable ASCII takes a shortcut past the full checks: it must agree with them.
    import unicodedata

    for code in range(0x3000):
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        refused = ch.isspace() or unicodedata.category(ch) == "Cc" or ch == "*"
        for topic in (ch, f"a/{ch}b"):
            try:
                validate_topic(topic)
            except BadRequest:
                assert refused, hex(code)
            else:
                assert not refused, hex(code)
