"""Comparing event ids across brokers: what a subscriber received against what a publish answered.

Memory and one-Redis ids are `<epoch>-<seq>`, one counter per broker: a subscriber gets the publish
response's id exactly, and these helpers compare such ids exactly.

A Redis Cluster id is a vector `<digest>_<p>.<seq>_<q>.<seq>...`, one position per partition (see
`hub.wire.cluster_ids`): the publish response names the event's own partitions, a subscriber's id names every
partition its selectors involve. The subscriber's id names an event when, in a partition the event is in,
it holds exactly the event's seq there. An event of topics in several partitions reaches a subscriber
through one of them; its id may hold an older position for the others (that copy had not arrived yet,
and resuming skips it as a duplicate). The other entries are what the process had received of those
partitions, so one id alone cannot prove which event it came with: check a stream's ids with
`names_events` (in order, none twice) and its data as well.

Parsed here independently of `hub.wire.cluster_ids`, so a bug there cannot hide itself.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

_PLAIN = re.compile(r"([a-z0-9]+)-([0-9]+)")
_VECTOR = re.compile(r"([a-z0-9]{6})((?:_[0-9]+\.[0-9]+)+)")


def is_vector(event_id: str) -> bool:
    return _VECTOR.fullmatch(event_id) is not None


def vector(event_id: str) -> tuple[str, dict[int, int]]:
    """A cluster id's digest and its partition -> seq entries; AssertionError for anything else."""
    match = _VECTOR.fullmatch(event_id)
    assert match is not None, f"not a cluster id: {event_id!r}"
    seqs: dict[int, int] = {}
    for entry in match.group(2)[1:].split("_"):
        p, seq = entry.split(".")
        assert all(int(p) > q for q in seqs), f"partitions not ascending: {event_id!r}"
        seqs[int(p)] = int(seq)
    return match.group(1), seqs


def plain(event_id: str) -> tuple[str, int]:
    """A memory or one-Redis id's epoch and seq; AssertionError for anything else."""
    match = _PLAIN.fullmatch(event_id)
    assert match is not None, f"not an <epoch>-<seq> id: {event_id!r}"
    return match.group(1), int(match.group(2))


def names_event(received_id: str, published_id: str) -> bool:
    """Whether a subscriber's id names the event a publish answered `published_id` for."""
    if not is_vector(published_id):
        return received_id == published_id
    if not is_vector(received_id):
        return False
    received, published = vector(received_id)[1], vector(published_id)[1]
    return any(received.get(p) == seq for p, seq in published.items())


def order_key(event_id: str) -> tuple[int, ...]:
    """Sorts the ids of one stream (or one topic's publish responses) in delivery order. Plain ids: the
    seq. Cluster ids of one stream name the same partitions, and no entry ever decreases: the entries."""
    if is_vector(event_id):
        return tuple(vector(event_id)[1].values())
    return (plain(event_id)[1],)


def advances(earlier: str, later: str) -> bool:
    """Whether `later` comes strictly after `earlier` in one stream: a greater seq (plain ids, one epoch),
    or the same partitions with no entry lower and one higher (cluster ids, one digest)."""
    if is_vector(earlier) or is_vector(later):
        (d1, a), (d2, b) = vector(earlier), vector(later)
        return d1 == d2 and a.keys() == b.keys() and all(b[p] >= a[p] for p in a) and a != b
    (e1, s1), (e2, s2) = plain(earlier), plain(later)
    return e1 == e2 and s2 > s1


def names_events(received_ids: Sequence[str], published_ids: Sequence[str]) -> bool:
    """Whether a stream's ids name these events one to one, in this order, each once."""
    return (
        len(received_ids) == len(published_ids)
        and all(names_event(r, p) for r, p in zip(received_ids, published_ids, strict=True))
        and all(advances(a, b) for a, b in itertools.pairwise(received_ids))
    )


def seq_in(event_id: str, topic_partition: int | None = None) -> int:
    """The seq a publish id gives its event: plain ids, the seq; cluster ids, the seq in the event's one
    partition (or in `topic_partition` for an event of several)."""
    if not is_vector(event_id):
        return plain(event_id)[1]
    seqs = vector(event_id)[1]
    if topic_partition is None:
        assert len(seqs) == 1, f"an event of several partitions: say which: {event_id!r}"
        return next(iter(seqs.values()))
    return seqs[topic_partition]
