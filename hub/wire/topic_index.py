"""A set of topics that answers which of them a selector matches, touching only those it could match.

Pure, no I/O. Topics are kept in a tree by segment, so a pattern walks down its literal segments and
only then fans out: `public/**` visits the topics under `public/`, never the rest. A `*` segment visits
every child at its level, so a pattern starting with `*` costs the topics' first segments (and the
subtrees it goes on into), not just its matches. A topic removed takes its nodes with it (those that
lead to no other topic), so an index of one-off topics does not keep their paths.
"""

from __future__ import annotations

from collections.abc import Iterator

from hub.wire.topics import Selector


class _Node:
    __slots__ = ("children", "topic")

    def __init__(self) -> None:
        self.children: dict[str, _Node] | None = None  # a leaf has none: most nodes are leaves
        self.topic: str | None = None  # set when a topic ends here


class TopicIndex:
    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, topic: str) -> bool:
        node: _Node | None = self._root
        for segment in topic.split("/"):
            children = node.children if node is not None else None
            node = children.get(segment) if children is not None else None
        return node is not None and node.topic is not None

    def add(self, topic: str) -> None:
        node = self._root
        for segment in topic.split("/"):
            children = node.children
            if children is None:
                children = node.children = {}
            child = children.get(segment)
            if child is None:
                child = children[segment] = _Node()
            node = child
        if node.topic is None:
            node.topic = topic
            self._count += 1

    def remove(self, topic: str) -> None:
        path = [self._root]
        for segment in topic.split("/"):
            children = path[-1].children
            child = children.get(segment) if children is not None else None
            if child is None:
                return
            path.append(child)
        if path[-1].topic is None:
            return
        path[-1].topic = None
        self._count -= 1
        # Prune upward: a node with no topic and no children leads nowhere.
        for segment, node, parent in zip(
            reversed(topic.split("/")), reversed(path[1:]), reversed(path[:-1]), strict=True
        ):
            if node.topic is not None or node.children:
                return
            assert parent.children is not None
            del parent.children[segment]
            if not parent.children:
                parent.children = None

    def matching(self, selector: Selector) -> Iterator[str]:
        """The topics held that `selector` matches, each once, in no particular order."""
        if not selector.is_pattern:
            if selector.text in self:
                yield selector.text
            return
        level = [self._root]
        for segment in selector.segments:
            below: list[_Node] = []
            for node in level:
                children = node.children
                if children is None:
                    continue
                if segment == "*":
                    below.extend(children.values())
                else:
                    child = children.get(segment)
                    if child is not None:
                        below.append(child)
            if not below:
                return
            level = below
        if not selector.tail:
            for node in level:
                if node.topic is not None:
                    yield node.topic
            return
        # `**`: each node reached and everything under it (zero or more further segments)
        stack = level
        while stack:
            node = stack.pop()
            if node.topic is not None:
                yield node.topic
            if node.children is not None:
                stack.extend(node.children.values())
