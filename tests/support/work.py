"""Counting the work code does, rather than timing it: deterministic on a busy machine."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any


@dataclass
class Calls:
    count: int = 0


@contextlib.contextmanager
def counted_calls() -> Iterator[Calls]:
    """Count the Python function calls (and generator resumptions) made inside the block, on this
    thread. Code that awaits inside the block would count other tasks' calls too: use it on code that
    does not suspend."""
    calls = Calls()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            calls.count += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


def script_runs_us(redis: Any, sha: str) -> list[int]:
    """How long (µs, by Redis' own clock) each run of the script `sha` in `redis`'s SLOWLOG took: a
    server started with `--slowlog-log-slower-than 0` logs every command."""
    entries = redis.call("SLOWLOG", "GET", -1)
    return [int(e[2]) for e in entries if str(e[3][0]).upper() == "EVALSHA" and e[3][1] == sha]
