"""The KEYS and ARGV of every Lua script the hub runs, built in one place for both Redis brokers.

Each builder takes named values and lays them out in the order its script reads them; the positions are
written down here, beside the builder, and each script names them once at its top (`redis_scripts`,
`topic_ttl`). Key names come from `RedisKeys`: a script never spells a key, it is given the key or, for
per-topic keys, the prefix to put before the topic. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from hub.brokers.redis_keys import RedisKeys
from hub.config import HistoryConfig
from hub.wire.event import new_epoch
from hub.wire.idempotency import Idempotency
from hub.wire.ids import Position, SinceKind
from hub.wire.topics import Selector

Arg = bytes | str | int


class ScriptCall(NamedTuple):
    keys: list[str]
    args: list[Arg]


@dataclass(frozen=True, slots=True)
class HistoryBounds:
    """`history.*` as the scripts take it, computed once per broker."""

    max_events: int  # per topic
    max_age_ms: int  # 0: none
    ttl_ms: int  # 0: kept forever
    max_replay: int  # events one snapshot replays; past it, reset 'too_much'
    max_replay_bytes: int  # bytes of history one snapshot reads; past them, reset 'too_much'

    @classmethod
    def of(cls, history: HistoryConfig) -> HistoryBounds:
        return cls(
            history.max_events,
            int(history.max_age * 1000),
            ttl_ms(history),
            history.max_replay,
            history.max_replay_bytes,
        )


class ScriptEvent(NamedTuple):
    """One event of a publish call: its topics (on a cluster, those of the partition called), its
    envelope body, and whether it is retained."""

    topics: Sequence[str]
    body: bytes
    retain: bool


def ttl_ms(history: HistoryConfig) -> int:
    """`history.ttl` as the scripts take it: ms, 0 for never (a ttl under 1 ms is still a ttl)."""
    return max(1, round(history.ttl * 1000)) if history.ttl > 0 else 0


# The newest position a hub had from this Redis (or partition), received or answered to its own
# publishes: the only evidence on which the scripts start a new epoch. ('', 0): none.
Evidence = tuple[str, int]
# The last event a hub received from a partition (topic, seq, envelope): a promoted replica that lacks it
# hands its seq out again (see `snapshot_call`).
Received = tuple[str, int, bytes]


# How long a publish without an Idempotency-Key keeps its first answer, for a retry of the same call.
PUBLISH_TOKEN_TTL = 120


class PublishRecord(NamedTuple):
    """Where a publish call records its first answer: the key, for how long (s), and the request's
    fingerprint ('' for a one-off token)."""

    key: str
    ttl: int
    fingerprint: str


def publish_record(
    keys: RedisKeys, idempotency: Idempotency | None, window: float, one_off: str
) -> PublishRecord:
    """The Idempotency-Key's record, kept for the idempotency `window`; without one, a token named
    `one_off`, unique to this call, that its retries on a lost connection find."""
    if idempotency is None:
        return PublishRecord(keys.publish_token(one_off), PUBLISH_TOKEN_TTL, "")
    return PublishRecord(keys.idempotency(idempotency.name), int(window), idempotency.fingerprint)


def publish_call(
    keys: RedisKeys,
    bounds: HistoryBounds,
    events: Sequence[ScriptEvent],
    *,
    record: PublishRecord,
    evidence: Evidence,
    sharded: bool,
) -> ScriptCall:
    """The PUBLISH script's call. With no event, it publishes nothing: a probe that Redis takes its
    writes.

    KEYS: 1 sequence hash, 2 topic registry, 3 retained hash, 4 this call's record (`record.key`: its first
    answer, for retries and Idempotency-Key), 5 topic names index, 6 retained names index, 7 the cursor of
    their catching up with topics an older hub wrote; on a cluster (`sharded`), every history the call
    writes follows, declared only: while the slot migrates, Redis then answers TRYAGAIN before running
    anything, rather than fail the script half-way on a key that has moved already.
    ARGV: 1 history key prefix, 2 channel prefix (one Redis: each topic's own channel), 3 token lifetime
    (s), 4 a fresh epoch, 5-6 the hub's evidence (epoch, seq), 7 max events per topic, 8 max age (ms),
    9 the event count, 10 the partition's sharded channel ('' on one Redis), 11 the request's fingerprint,
    12 `history.ttl` (ms); from 13, per event: its topic count, the topics, its body, '1' to retain.
    """
    args: list[Arg] = [
        keys.history_prefix,
        keys.channel_prefix,
        record.ttl,
        new_epoch(),
        *evidence,
        bounds.max_events,
        bounds.max_age_ms,
        len(events),
        keys.shard_channel if sharded else "",
        record.fingerprint,
        bounds.ttl_ms,
    ]
    histories: dict[str, None] = {}
    for event in events:
        args.append(len(event.topics))
        args.extend(event.topics)
        args.append(event.body)
        args.append(1 if event.retain else 0)
        if sharded:
            histories.update(dict.fromkeys(keys.history(t) for t in event.topics))
    call_keys = [keys.sequence, keys.topics, keys.retained, record.key]
    call_keys += [keys.topic_names, keys.retained_names, keys.names_cursor, *histories]
    return ScriptCall(call_keys, args)


def snapshot_call(
    keys: RedisKeys,
    bounds: HistoryBounds,
    selectors: Sequence[Selector],
    *,
    mode: SinceKind,
    after: Position | None,
    token: bytes,
    channel: bytes,
    evidence: Evidence,
    received: Received | None = None,
    sharded: bool,
) -> ScriptCall:
    """The SNAPSHOT script's call: read what a subscriber gets before live events, then publish `token`
    on `channel` (on a cluster, with the position read: `<token> <epoch>-<seq>`).

    KEYS: 1 sequence hash, 2 topic registry, 3 retained hash, 4 topic names index, 5 retained names index;
    on a cluster the exact topics' histories follow, declared only.
    ARGV: 1 history key prefix, 2 a fresh epoch, 3 the mode (`SinceKind`'s value), 4-5 the client's
    position (epoch, seq; '' and 0 for none), 6 the channel and 7 the token to publish when done, 8 the
    most events to replay, 9 'SPUBLISH' on a cluster (else 'PUBLISH'), 10-11 the hub's evidence (epoch,
    seq), 12-14 the continuity check (`received`: topic, seq, envelope; '', 0, '' for none), 15 the most
    bytes to replay, 16 the exact topic count, the topics, then the pattern count and per pattern: its
    segment count, its segments joined by '/', '1' if it ends in `**`.
    """
    exact = [s.text for s in selectors if not s.is_pattern]
    patterns = [s for s in selectors if s.is_pattern]
    topic, seq, envelope = received or ("", 0, "")
    args: list[Arg] = [
        keys.history_prefix,
        new_epoch(),
        mode.value,
        after.epoch if after else "",
        after.seq if after else 0,
        channel,
        token,
        bounds.max_replay,
        "SPUBLISH" if sharded else "PUBLISH",
        *evidence,
        topic,
        seq,
        envelope,
        bounds.max_replay_bytes,
        len(exact),
        *exact,
        len(patterns),
    ]
    for pattern in patterns:
        args.extend((len(pattern.segments), "/".join(pattern.segments), 1 if pattern.tail else 0))
    call_keys = [keys.sequence, keys.topics, keys.retained, keys.topic_names, keys.retained_names]
    if sharded:
        call_keys += [keys.history(t) for t in exact]
    return ScriptCall(call_keys, args)


def history_start(after: Position | None) -> str:
    """The XRANGE start that reads a topic's history after `after` (entry ids are `<seq>-0`). Redis'
    counter is a signed 64-bit integer and XRANGE refuses ids past it: an `after` beyond every possible
    id reads nothing."""
    return "-" if after is None else f"({min(after.seq, 2**63 - 1)}-0"


def history_page_call(keys: RedisKeys, topic: str, after: Position | None, limit: int) -> ScriptCall:
    """The HISTORY_PAGE script's call (a cluster's history read, on the topic's shard).

    KEYS: 1 sequence hash, 2 the topic's history. ARGV: 1 the exclusive start (`history_start`), 2 the
    most entries."""
    return ScriptCall([keys.sequence, keys.history(topic)], [history_start(after), limit])


def sweep_call(keys: RedisKeys, *, ttl_ms: int, batch: int) -> ScriptCall:
    """The SWEEP script's call (`hub.brokers.topic_ttl`).

    KEYS: 1 sequence hash, 2 topic registry, 3 retained hash, 4 topic names index, 5 retained names index,
    6 the counter's marks. ARGV: 1 history key prefix, 2 `history.ttl` (ms), 3 the most topics to drop."""
    call_keys = [keys.sequence, keys.topics, keys.retained, keys.topic_names, keys.retained_names, keys.marks]
    return ScriptCall(call_keys, [keys.history_prefix, ttl_ms, batch])
