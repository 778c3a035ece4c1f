"""`python -m bench parse`: what parsing a publish costs, and encoding its envelope bodies, per request;
and what opening an envelope costs, per event a hub receives from Redis.

A micro-benchmark of the pure publish path (`hub/wire/`: publish_request.py, payload.py, `Draft.body()`) over
typical bodies, and of `open_envelope` (an `Event` made per message), in one process: no server, no I/O.
Best of seven repeats, in microseconds.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import TypeVar

import orjson

from hub.wire.event import envelope, open_envelope
from hub.wire.publish_request import PublishLimits, parse_publish

T = TypeVar("T")
LIMITS = PublishLimits(max_data_bytes=256 * 1024, max_batch=1000, max_topics=10)
_SMALL = {"topic": "public/a", "data": {"user": "ann", "n": 3, "ok": True}}
BODIES = {
    "small object": orjson.dumps(_SMALL),
    "1 KB string": orjson.dumps({"topic": "public/a", "data": "x" * 1024}),
    "1 KB non-ASCII string": orjson.dumps({"topic": "public/a", "data": "é" * 512}),
    "batch of 50 small": orjson.dumps([_SMALL] * 50),
    "2,000 small objects": orjson.dumps(
        {"topic": "public/a", "data": [{"i": i, "name": "item"} for i in range(2000)]}
    ),
}


def parse(body: bytes) -> None:
    parse_publish("application/json", body, LIMITS)


def parse_and_envelope(body: bytes) -> None:
    for draft in parse_publish("application/json", body, LIMITS).drafts:
        draft.body()  # as the Redis brokers do before the publish script


def best(fn: Callable[[T], None], arg: T) -> float:
    timer = timeit.Timer(lambda: fn(arg))
    number, _ = timer.autorange()
    return min(timer.repeat(7, number)) / number * 1e6


def open_all(messages: list[bytes]) -> None:
    for message in messages:
        open_envelope(message)


def main() -> int:
    print(f"{'body':24s} {'parse':>10s} {'+ bodies':>10s} {'open':>10s}")
    for name, body in BODIES.items():
        drafts = parse_publish("application/json", body, LIMITS).drafts
        # the envelopes a receiving hub opens for this request (one per event), as Redis delivers them
        messages = [envelope(f"k2d7qa-{i + 1000}", draft.body()) for i, draft in enumerate(drafts)]
        print(
            f"{name:24s} {best(parse, body):7.2f} us {best(parse_and_envelope, body):7.2f} us"
            f" {best(open_all, messages):7.2f} us"
        )
    return 0
