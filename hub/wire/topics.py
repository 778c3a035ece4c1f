"""Topics and subscription selectors: validation and matching.

Pure functions only. A topic is 1-256 UTF-8 bytes, no whitespace or control characters, `/` separating
segments. A selector is a topic or a pattern: a segment `*` matches exactly one segment, a final `**`
matches any number (zero or more, as MQTT's `#`) of trailing segments. `*` is reserved for patterns, so
a published topic may not contain it at all: that keeps `a/*` from meaning two things.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hub.errors import BadRequest, Forbidden

MAX_TOPIC_BYTES = 256


# Whitespace (as str.isspace() sees it) and control characters (Unicode category Cc).
_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def _bad_char(text: str) -> str | None:
    found = _BAD_CHAR.search(text)
    return found.group() if found else None


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise BadRequest("invalid_topic", f"{what} must be a string")
    # The common case, checked per published event: printable ASCII other than the space is exactly
    # what the rules below allow of ASCII, at a third of their cost.
    if text.isascii() and 1 <= len(text) <= MAX_TOPIC_BYTES and text.isprintable() and " " not in text:
        return text
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest("invalid_topic", f"{what} is not valid UTF-8") from None
    if not 1 <= size <= MAX_TOPIC_BYTES:
        raise BadRequest("invalid_topic", f"{what} must be 1-{MAX_TOPIC_BYTES} bytes of UTF-8")
    bad = _bad_char(text)
    if bad is not None:
        raise BadRequest(
            "invalid_topic", f"{what} {text!r} contains a whitespace or control character {bad!r}"
        )
    return text


def validate_topic(topic: object) -> str:
    """Return `topic` if it is a valid topic to publish to, else raise `BadRequest`."""
    text = _check_text(topic, "topic")
    if "*" in text:
        raise BadRequest("invalid_topic", f"topic {text!r}: '*' is only allowed in selectors")
    return text


def validate_published_topic(topic: object) -> str:
    """`validate_topic`, and not one of the hub's own: a first segment starting with `$` is reserved
    for what the hub publishes itself (`$presence/<topic>`)."""
    text = validate_topic(topic)
    if text.startswith("$"):
        raise Forbidden("reserved_topic", f"topic {text!r}: topics starting with '$' are the hub's own")
    return text


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed subscription selector: an exact topic or a segment pattern."""

    text: str
    segments: tuple[str, ...] = field(compare=False, hash=False, repr=False)
    is_pattern: bool = field(compare=False, hash=False, repr=False)
    tail: bool = field(compare=False, hash=False, repr=False)  # ends with `**`

    @classmethod
    def parse(cls, text: object) -> Selector:
        value = _check_text(text, "selector")
        segments = tuple(value.split("/"))
        for i, seg in enumerate(segments):
            if "*" not in seg or seg == "*":
                continue
            if seg == "**" and i == len(segments) - 1:
                continue
            raise BadRequest(
                "invalid_selector",
                f"selector {value!r}: '*' must be a whole segment and '**' only the last one",
            )
        tail = segments[-1] == "**"
        is_pattern = "*" in value
        return cls(value, segments[:-1] if tail else segments, is_pattern, tail)

    def matches(self, topic: str) -> bool:
        if not self.is_pattern:
            return topic == self.text
        return self.matches_segments(topic.split("/"))

    def matches_segments(self, parts: list[str]) -> bool:
        segments = self.segments
        if self.tail:
            if len(parts) < len(segments):
                return False
        elif len(parts) != len(segments):
            return False
        return all(want in ("*", got) for want, got in zip(segments, parts, strict=False))

    def covers(self, other: Selector) -> bool:
        """Whether every topic `other` matches is matched by this selector too.

        Authorization rests on this: a subscription is allowed when each of its selectors is covered by
        one granted selector, so no event outside the grant can ever match it.
        """
        mine, theirs = self.segments, other.segments
        if not theirs:
            theirs = ("*",)  # a topic has at least one segment: `**` matches what `*/**` does
        if not self.tail:
            # `other` must match exactly as many segments as we do, no more.
            if other.tail or len(theirs) != len(mine):
                return False
        elif len(theirs) < len(mine):
            # `a/b/**` does not cover `a` (nor `a/**`): `a` has fewer segments than we require.
            return False
        # A `*` of ours covers any one segment of theirs, a literal or their `*`; a literal only itself.
        return all(want in ("*", got) for want, got in zip(mine, theirs, strict=False))

    def glob(self) -> str:
        """The selector as a Redis glob: a superset of what it matches (Redis `*` crosses `/`)."""
        out = []
        for seg in self.segments:
            out.append("*" if seg == "*" else glob_escape(seg))
        # `a/**` must match `a` itself too, so its glob is `a*`; the hub filters the rest.
        return "/".join(out) + ("*" if self.tail else "")


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters."""
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)
