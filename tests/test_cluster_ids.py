"""Cluster ids (hub/wire/cluster_ids.py) and partitions, the pure parts: the broker itself runs in every
broker test on a cluster."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from hub.brokers.cluster.partitions import Partitions
from hub.wire.cluster_ids import Stamp, VectorCursor, digest, format_vector, parse_vector
from hub.wire.event import Event
from hub.wire.ids import MAX_SEQ, ContinuityLost, parse_id
from hub.wire.topics import Selector

epochs = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", min_size=6, max_size=6)
entries = st.dictionaries(st.integers(0, 63), st.tuples(epochs, st.integers(0, MAX_SEQ)), min_size=1)


@given(entries)
def test_a_vector_id_round_trips_and_is_no_one_redis_id(found):
    listed = [(p, epoch, seq) for p, (epoch, seq) in sorted(found.items())]
    text = format_vector(listed)
    vector = parse_vector(text, 64)
    assert vector is not None
    assert vector.seqs == {p: seq for p, _, seq in listed}
    assert vector.digest == digest((p, epoch) for p, epoch, _ in listed)
    assert parse_id(text) is None  # the two kinds of id never pass for each other
    assert parse_vector("abcdef-12", 64) is None


@pytest.mark.parametrize(
    "text",
    ["", "abcdef", "abcdef_", "abcdef_1", "abcdef_1.", "abcdef_.1", "ABCDEF_1.1", "abcde_1.1",
     "abcdef_2.1_1.1", "abcdef_1.1_1.2", "abcdef_16.1", "abcdef_1.-1", "abcdef_1.1 ", "abcdef_\u0661.1",
     "abcdef_1.1" + "_2.1" * 400, "abcdef_1.01", f"abcdef_1.{MAX_SEQ + 1}", "abcdef_1.99999999999999999999",
     "abcdef_1.1e9", "abcdef_1.+1"],
)  # fmt: skip
def test_malformed_vector_ids_are_refused(text):
    assert parse_vector(text, 16) is None


def test_a_digest_changes_with_any_epoch():
    base = digest([(1, "aaaaaa"), (2, "bbbbbb")])
    assert base != digest([(1, "aaaaaa"), (2, "bbbbbc")])
    assert base != digest([(1, "aaaaaa"), (3, "bbbbbb")])
    assert base == digest([(1, "aaaaaa"), (2, "bbbbbb")])


def test_partitions_spread_over_equal_slot_ranges_and_keys_share_their_slot():
    parts = Partitions(16, "hub")
    for p in parts.all:
        slot = parts.slots[p]
        assert p * REDIS_CLUSTER_HASH_SLOTS // 16 <= slot < (p + 1) * REDIS_CLUSTER_HASH_SLOTS // 16
        for key in (parts.keys[p].sequence, parts.keys[p].history("a/b{x}"), parts.channels[p]):
            assert key_slot(key.encode() if isinstance(key, str) else key) == slot
        assert parts.of_slot(slot) == p
        assert parts.of_channel(parts.channels[p]) == p
    assert parts.of_selector(Selector.parse("jobs/*")) == parts.all
    assert parts.of_selectors([Selector.parse("a"), Selector.parse("a")]) == (parts.of_topic("a"),)
    with pytest.raises(ValueError, match="partitions"):
        Partitions(0, "hub")


EVENT = Event("own", ("t",), None)


def _stamp(partition: int, seqs: tuple[int, ...], cross: tuple[str, ...] = ()) -> Stamp:
    return Stamp(partition, ("e0", "e1", "e2"), seqs, cross)


def test_a_cursor_places_held_events_above_its_floor_and_names_what_was_sent():
    cursor = VectorCursor((0, 2), {0: "e0", 2: "e2"}, {0: 10, 2: 5}, [Selector.parse("**")], lambda t: 0)
    assert cursor.relabels
    assert cursor.place(EVENT, _stamp(0, (10, 0, 3))) is None  # in the snapshot already
    # received before the snapshot's sync for partition 2 came back: the floor stands for it
    assert cursor.place(EVENT, _stamp(0, (11, 0, 3))) == format_vector([(0, "e0", 11), (2, "e2", 5)])
    assert cursor.place(EVENT, _stamp(2, (12, 0, 7))) == format_vector([(0, "e0", 12), (2, "e2", 7)])
    with pytest.raises(ContinuityLost):
        cursor.place(EVENT, Stamp(0, ("other", "e1", "e2"), (11, 0, 3)))
    with pytest.raises(ContinuityLost):
        cursor.place(Event("x-1", ("t",), None))  # no stamp: not a cluster event


def test_an_event_of_several_partitions_reaches_a_subscriber_of_both_once():
    partition_of = {"a": 0, "b": 2}.__getitem__
    both = VectorCursor((0, 2), {0: "e0", 2: "e2"}, {0: 0, 2: 0}, [Selector.parse("a"), Selector.parse("b")],
                        partition_of)  # fmt: skip
    only_b = VectorCursor((2,), {2: "e2"}, {2: 0}, [Selector.parse("b")], partition_of)
    copy_in_0 = _stamp(0, (1, 0, 0), cross=("b",))
    copy_in_2 = _stamp(2, (1, 0, 1), cross=("a",))
    assert not both.duplicate(0, copy_in_0.cross)
    assert both.duplicate(2, copy_in_2.cross)
    assert not only_b.duplicate(2, copy_in_2.cross)
    assert both.place(Event("own", ("b",), None), copy_in_2) is None
