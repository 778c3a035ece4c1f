"""hub/engine/roster.py: this process's streams by selector, and what changed since it was last read."""

from __future__ import annotations

from hub.engine.roster import Roster
from hub.wire.presence import Member
from hub.wire.topics import Selector


def selectors(*texts: str) -> tuple[Selector, ...]:
    return tuple(Selector.parse(t) for t in texts)


def test_joins_and_leaves_count_and_change_per_selector():
    roster = Roster()
    told: list[tuple[str, str, str]] = []
    roster.listener = lambda kind, member, topic: told.append((kind, member.conn, topic))
    ann, bob = Member("a"), Member("b")
    roster.join(ann, selectors("chat/1", "chat/*"))
    roster.join(bob, selectors("chat/1"))
    assert roster.counts() == {"chat/1": 2, "chat/*": 1}
    assert sorted(roster.matching("chat/1")) == ["chat/*", "chat/1"]
    assert list(roster.matching("chat/2")) == ["chat/*"]
    assert roster.take_changes() == {"chat/1": {"a": ann, "b": bob}, "chat/*": {"a": ann}}
    assert roster.take_changes() == {}
    roster.leave(ann, selectors("chat/1", "chat/*"))
    assert roster.take_changes() == {"chat/1": {"a": None}, "chat/*": {"a": None}}
    assert roster.counts() == {"chat/1": 1}
    assert roster.patterns == {}
    roster.leave(bob, selectors("chat/1"))
    assert (roster.members, roster.streams) == ({}, 0)
    # patterns neither join nor leave: only their exact topics' streams are announced
    assert told == [
        ("join", "a", "chat/1"),
        ("join", "b", "chat/1"),
        ("leave", "a", "chat/1"),
        ("leave", "b", "chat/1"),
    ]
