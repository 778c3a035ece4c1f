"""This process's streams as presence sees them: who holds each, by selector, and what changed since the
directory last wrote them out for the other processes. No I/O, nothing per event: a stream is entered
when it subscribes and removed when it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from hub.wire.presence import Member
from hub.wire.topics import Selector

# What a join or leave of an exact topic is told to: ("join" | "leave", member, topic).
Listener = Callable[[str, Member, str], None]
# A change of one selector's members: conn -> the member who joined, or None for one who left.
Changes = dict[str, dict[str, Member | None]]


class Roster:
    def __init__(self) -> None:
        self.members: dict[str, dict[str, Member]] = {}  # selector -> conn -> member
        self.patterns: dict[str, Selector] = {}  # the selectors above that are patterns
        self.streams = 0
        self.changes: Changes = {}
        self.listener: Listener | None = None

    def join(self, member: Member, selectors: Iterable[Selector]) -> None:
        self.streams += 1
        for selector in selectors:
            text = selector.text
            group = self.members.get(text)
            if group is None:
                group = self.members[text] = {}
                if selector.is_pattern:
                    self.patterns[text] = selector
            group[member.conn] = member
            self.changes.setdefault(text, {})[member.conn] = member
            if self.listener is not None and not selector.is_pattern:
                self.listener("join", member, text)

    def leave(self, member: Member, selectors: Iterable[Selector]) -> None:
        self.streams -= 1
        for selector in selectors:
            text = selector.text
            group = self.members.get(text)
            if group is None or group.pop(member.conn, None) is None:
                continue
            if not group:
                del self.members[text]
                self.patterns.pop(text, None)
            self.changes.setdefault(text, {})[member.conn] = None
            if self.listener is not None and not selector.is_pattern:
                self.listener("leave", member, text)

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, {}
        return changes

    def count(self, selector: str) -> int:
        return len(self.members.get(selector, ()))

    def matching(self, topic: str) -> Iterator[str]:
        """The selectors held here whose streams receive `topic`'s events."""
        if topic in self.members:
            yield topic
        if self.patterns:
            parts = topic.split("/")
            for text, selector in self.patterns.items():
                if selector.matches_segments(parts):
                    yield text

    def counts(self) -> dict[str, int]:
        return {selector: len(group) for selector, group in self.members.items()}
