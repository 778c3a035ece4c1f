"""The directory: who is subscribed across every hub process, and the commands they all obey.

Each process keeps its own streams in a `Roster`; its broker's directory shares them with the other
processes and answers for all of them. The memory broker's process is the whole hub: its directory is
its roster. Counts are of streams per selector (a stream of two selectors counts under each).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import Counter
from typing import Protocol

from hub.engine.roster import Roster
from hub.wire.presence import Disconnect, Member


class Owner(Protocol):
    """What a directory tells its process: commands to obey, and the members of a process that died."""

    def obey(self, command: Disconnect) -> object: ...

    def announces(self, topic: str) -> bool:
        """Whether `topic`'s joins and leaves are published."""

    def left(self, member: Member, topic: str) -> None:
        """`member`'s stream of `topic` is gone with its process."""


Listing = tuple[int, list[tuple[str, int]]]  # streams in all, and the selectors with the most


class Directory(ABC):
    def __init__(self) -> None:
        self.roster = Roster()
        self.owner: Owner | None = None

    async def start(self, roster: Roster, owner: Owner) -> None:
        """Share this process's `roster`; tell `owner` every command another process sends, and who
        left with a process that died."""
        self.roster = roster
        self.owner = owner

    async def close(self) -> None:
        return None

    @abstractmethod
    async def counts(self, topic: str) -> dict[str, int]:
        """The streams that receive `topic`'s events, by selector (the topic, and patterns matching it)."""

    @abstractmethod
    async def members(self, topic: str, limit: int) -> list[tuple[str, Member]]:
        """At most `limit` of those streams, each with its selector."""

    @abstractmethod
    async def top(self, limit: int) -> Listing:
        """Every process's streams in all, and the `limit` selectors with the most streams."""

    async def send(self, command: Disconnect) -> None:
        """Have every other process obey `command` (the caller obeys it here)."""
        return None


class LocalDirectory(Directory):
    """One process is the hub: its roster answers."""

    async def counts(self, topic: str) -> dict[str, int]:
        return local_counts(self.roster, topic)

    async def members(self, topic: str, limit: int) -> list[tuple[str, Member]]:
        return local_members(self.roster, topic, limit)

    async def top(self, limit: int) -> Listing:
        return self.roster.streams, top_of(Counter(self.roster.counts()), limit)


def local_counts(roster: Roster, topic: str) -> dict[str, int]:
    return {selector: roster.count(selector) for selector in roster.matching(topic)}


def local_members(roster: Roster, topic: str, limit: int) -> list[tuple[str, Member]]:
    found: list[tuple[str, Member]] = []
    for selector in roster.matching(topic):
        for member in roster.members.get(selector, {}).values():
            if len(found) >= limit:
                return found
            found.append((selector, member))
    return found


def top_of(counts: Counter[str], limit: int) -> list[tuple[str, int]]:
    """The `limit` largest, largest first, ties by name: the same order from every process."""
    return heapq.nsmallest(limit, ((s, n) for s, n in counts.items() if n > 0), key=lambda i: (-i[1], i[0]))
