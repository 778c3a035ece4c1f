"""A set of selectors indexed by segment, so that asking whether it allows a topic or a selector costs
what the topic's segments do, not what the set's size does.

Pure: built once per verified token (and once for the public topics), then only read. It answers
exactly what `any(s.matches(topic))` and `any(s.covers(selector))` over its selectors would.
"""

from __future__ import annotations

from collections.abc import Iterable

from hub.wire.topics import Selector

_ANY = "*"


class _Node:
    __slots__ = ("children", "exact", "tail")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.exact = False  # a selector ends here: it matches exactly this many segments
        self.tail = False  # a selector `…/**` ends here: it matches this many segments or more


class SelectorSet:
    """Selectors in a trie by segment: a literal segment, or `*`, leads to the next node."""

    __slots__ = ("_exact", "_root", "size")

    def __init__(self, selectors: Iterable[Selector] = ()) -> None:
        self._root = _Node()
        self._exact: set[str] = set()  # plain topics: the common grant, one lookup
        self.size = 0
        for selector in selectors:
            self.add(selector)

    def add(self, selector: Selector) -> None:
        self.size += 1
        if not selector.is_pattern:
            self._exact.add(selector.text)
            return
        node = self._root
        for segment in selector.segments:
            node = node.children.setdefault(segment, _Node())
        if selector.tail:
            node.tail = True
        else:
            node.exact = True

    def matches(self, topic: str) -> bool:
        """Whether one of the selectors matches the topic."""
        return topic in self._exact or self._allows(topic.split("/"), tail=False)

    def covers(self, selector: Selector) -> bool:
        """Whether one of the selectors matches every topic that `selector` matches."""
        if not selector.is_pattern:
            return self.matches(selector.text)
        # An exact topic never covers a pattern: only the trie can. `**` is `*/**` (a topic has a segment).
        return self._allows(list(selector.segments) or [_ANY], tail=selector.tail)

    def _allows(self, segments: list[str], *, tail: bool) -> bool:
        # The nodes reached so far: one per granted prefix at most, so the walk is bounded by the
        # segments asked for times the trie's width at each depth, never by the set's size.
        level = [self._root]
        for segment in segments:
            following: list[_Node] = []
            for node in level:
                if node.tail:
                    return True  # a granted `…/**` here: whatever follows is within it
                # A granted literal covers only itself; a `*` asked for needs a granted `*`.
                child = node.children.get(segment) if segment != _ANY else None
                if child is not None:
                    following.append(child)
                wildcard = node.children.get(_ANY)
                if wildcard is not None:
                    following.append(wildcard)
            if not following:
                return False
            level = following
        return any(node.tail or (node.exact and not tail) for node in level)
