"""The scripts' KEYS and ARGV builders (hub/brokers/script_args.py) against the scripts that read them, and
resume positions read once, per broker. Pure: Redis runs these calls in every broker test."""

from __future__ import annotations

import re

import pytest

from hub.brokers import redis_scripts
from hub.brokers.cluster.partitions import Partitions
from hub.brokers.redis_keys import RedisKeys
from hub.brokers.script_args import (
    HistoryBounds,
    PublishRecord,
    ScriptCall,
    ScriptEvent,
    history_page_call,
    publish_call,
    snapshot_call,
    sweep_call,
)
from hub.brokers.topic_ttl import SWEEP
from hub.config import HistoryConfig
from hub.wire.cluster_ids import VectorId, format_vector, parse_vector
from hub.wire.ids import Position, SinceKind, parse_id, parse_since
from hub.wire.topics import Selector

KEYS = RedisKeys("hub")
BOUNDS = HistoryBounds.of(HistoryConfig())
EVENTS = [ScriptEvent(("a", "b/c"), b'{"d":1}', True), ScriptEvent(("a",), b'{"d":2}', False)]


def _publish(keys: RedisKeys = KEYS, *, events=EVENTS, sharded: bool = False) -> ScriptCall:
    return publish_call(
        keys, BOUNDS, events, record=PublishRecord(keys.publish_token("x"), 120, "fp"),
        evidence=("abcdef", 7), sharded=sharded,
    )  # fmt: skip


def _snapshot(selectors: list[str], *, sharded: bool = False) -> ScriptCall:
    return snapshot_call(
        KEYS, BOUNDS, [Selector.parse(s) for s in selectors], mode=SinceKind.AFTER,
        after=Position("abcdef", 3), token=b"tok", channel=b"ch", evidence=("abcdef", 9), sharded=sharded,
    )  # fmt: skip


def _read(script: str, what: str) -> int:
    """The highest fixed position `script` reads of KEYS or ARGV (`KEYS[3]`, not `ARGV[i + 1]`)."""
    return max(int(n) for n in re.findall(rf"{what}\[(\d+)\]", script))


def _start(script: str) -> int:
    """Where the script starts reading the variable part of its ARGV (`local i = 13`)."""
    found = re.search(r"^local i = (\d+)", script, re.MULTILINE)
    assert found is not None
    return int(found.group(1))


def test_the_publish_call_lays_out_what_the_publish_script_reads():
    call = _publish()
    fixed = _start(redis_scripts.PUBLISH) - 1
    assert _read(redis_scripts.PUBLISH, "ARGV") == fixed
    assert _read(redis_scripts.PUBLISH, "KEYS") == len(call.keys) == 7
    assert call.args[:3] == [KEYS.history_prefix, KEYS.channel_prefix, 120]
    assert call.args[4:6] == ["abcdef", 7]
    assert call.args[8] == len(EVENTS)
    assert call.args[9:11] == ["", "fp"]  # no shard channel on one Redis
    assert call.args[fixed:] == [2, "a", "b/c", b'{"d":1}', 1, 1, "a", b'{"d":2}', 0]


def test_a_cluster_publish_call_declares_every_history_it_writes_once_and_its_shard_channel():
    keys = Partitions(16, "hub").keys[3]
    call = _publish(keys, sharded=True)
    assert call.keys[7:] == [keys.history("a"), keys.history("b/c")]
    assert call.args[9] == keys.shard_channel
    probe = _publish(keys, events=[], sharded=True)  # the refusals probe: no event, no history
    assert len(probe.keys) == 7
    assert probe.args[8] == 0


def test_the_snapshot_call_lays_out_what_the_snapshot_script_reads():
    call = _snapshot(["x", "jobs/*/done", "org/**"])
    fixed = _start(redis_scripts.SNAPSHOT) - 1
    assert _read(redis_scripts.SNAPSHOT, "ARGV") == fixed
    assert _read(redis_scripts.SNAPSHOT, "KEYS") == len(call.keys) == 5
    assert call.args[:1] + call.args[2:9] == [KEYS.history_prefix, "after", "abcdef", 3, b"ch", b"tok",
                                             BOUNDS.max_replay, "PUBLISH"]  # fmt: skip
    assert call.args[9:14] == ["abcdef", 9, "", 0, ""]  # the evidence; no continuity check
    assert call.args[fixed:] == [1, "x", 2, 3, "jobs/*/done", 0, 1, "org", 1]
    sharded = _snapshot(["x", "y/*"], sharded=True)
    assert sharded.args[8] == "SPUBLISH"
    assert sharded.keys[5:] == [KEYS.history("x")]  # the exact topics' histories, declared


def test_the_history_page_and_sweep_calls_lay_out_what_their_scripts_read():
    page = history_page_call(KEYS, "a/b", Position("abcdef", 2**70), 10)
    assert _read(redis_scripts.HISTORY_PAGE, "KEYS") == len(page.keys) == 2
    assert _read(redis_scripts.HISTORY_PAGE, "ARGV") == len(page.args) == 2
    assert page.args == [f"({2**63 - 1}-0", 10]  # past every id Redis can hold: reads nothing
    assert history_page_call(KEYS, "a/b", None, 10).args[0] == "-"
    sweep = sweep_call(KEYS, ttl_ms=5000, batch=500)
    assert _read(SWEEP, "KEYS") == len(sweep.keys) == 6
    assert _read(SWEEP, "ARGV") == len(sweep.args) == 3
    assert sweep.args == [KEYS.history_prefix, 5000, 500]


@pytest.mark.parametrize(
    "script", [redis_scripts.PUBLISH, redis_scripts.SNAPSHOT, SWEEP, redis_scripts.HISTORY_PAGE]
)
def test_no_script_spells_a_key(script):
    # A key's name is RedisKeys' to give: a script puts the prefix it is given before a topic.
    assert not re.search(r"':[a-z]+:'", script)
    assert "prefix .. ':" not in script


def test_a_partitions_keys_and_channel_share_its_slot_and_each_topic_key_is_the_prefix_and_topic():
    keys = RedisKeys.of_partition("hub", "p3.0")
    assert keys.prefix == "hub:{p3.0}"
    assert keys.history("a/b") == keys.history_prefix + "a/b"
    assert keys.channel("a/b") == (keys.channel_prefix + "a/b").encode()
    assert keys.shard_channel == b"hub:{p3.0}:events"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (None, SinceKind.NEW),
        ("", SinceKind.NEW),
        ("earliest", SinceKind.EARLIEST),
        ("nope", SinceKind.UNKNOWN),
    ],
)
def test_a_last_event_id_is_read_once_into_the_brokers_own_position(text, kind):
    assert parse_since(text, parse_id).kind is kind
    assert parse_since(text, parse_id).position is None


def test_each_broker_reads_only_its_own_kind_of_id():
    one, vector = "abcdef-12", format_vector([(2, "abcdef", 12)])
    since = parse_since(one, parse_id)
    assert since.kind is SinceKind.AFTER
    assert since.position == Position("abcdef", 12)
    assert parse_since(vector, parse_id).kind is SinceKind.UNKNOWN

    def parse(text: str) -> VectorId | None:
        return parse_vector(text, 16)

    assert parse_since(one, parse).kind is SinceKind.UNKNOWN  # a one-Redis id on a cluster: resync
    since_vector = parse_since(vector, parse)
    assert since_vector.kind is SinceKind.AFTER
    assert since_vector.position is not None
    assert since_vector.position.seqs == {2: 12}
