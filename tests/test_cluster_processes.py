"""RedisCluster (bench/processes.py) against real redis-server processes: the cluster tests and the
benchmark stand on serves every shard, carries sharded pub/sub, moves a slot live and fails over."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from bench.processes import RedisCluster, RespConnection, keyslot


async def client_of(cluster: RedisCluster) -> ClusterClient:
    client = ClusterClient(host="127.0.0.1", port=cluster.nodes[0].port, decode_responses=True)
    # a ClusterPubSub of a client that has not loaded the slot map finds no node for any channel
    await client.initialize()
    return client


@pytest.fixture
async def client(redis_cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    client = await client_of(redis_cluster)
    yield client
    await client.aclose()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def our_redis_servers(ports: set[int]) -> list[int]:
    """Pids of redis-servers on these ports. redis-server retitles itself `redis-server 127.0.0.1:PORT`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("redis-server") and any(f"127.0.0.1:{port}" in cmdline for port in ports):
            pids.append(int(proc.name))
    return pids


async def test_cluster_serves_keys_on_each_of_its_three_shards(redis_cluster, client):
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    assert {redis_cluster.node_for_slot(slot) for slot in (0, 8000, 16383)} == set(primaries)
    prefix = unique("shard")
    for primary in primaries:
        key = redis_cluster.key_on(primary, prefix)
        assert await client.set(key, str(primary.port))
        assert await client.get(key) == str(primary.port)
        # on that shard's primary, and only there
        assert primary.call("GET", key) == str(primary.port)
        for other in primaries:
            if other is not primary:
                assert other.command("GET", key).startswith(b"-MOVED %d " % keyslot(key))


async def test_sharded_pubsub_reaches_a_subscriber_on_each_shard(redis_cluster, client):
    channels = {redis_cluster.key_on(primary, unique("ch")): primary for primary in redis_cluster.primaries()}
    pubsub = client.pubsub()
    try:
        for channel in channels:
            await pubsub.ssubscribe(channel)
        for channel, primary in channels.items():
            assert primary.call("PUBSUB", "SHARDNUMSUB", channel) == [channel, 1]
            assert await client.spublish(channel, f"to {channel}") == 1
        received = {}
        async with asyncio.timeout(5):
            while len(received) < len(channels):
                # short timeouts: get_sharded_message polls one node per call
                message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None:
                    received[message["channel"]] = message["data"]
        assert received == {channel: f"to {channel}" for channel in channels}
    finally:
        await pubsub.aclose()


async def test_reshard_moves_a_slot_with_its_keys_and_unsubscribes_its_sharded_subscribers(
    redis_cluster_factory,
):
    cluster = redis_cluster_factory()
    source, target, _ = cluster.primaries()
    key = cluster.key_on(source, "moving")
    slot = keyslot(key)
    channel = f"{{{key}}}:events"  # the key as hash tag: the same slot
    client = await client_of(cluster)
    subscriber = aredis.Redis(port=source.port, decode_responses=True)
    pubsub = subscriber.pubsub()
    try:
        await client.set(key, "kept")
        await client.set(f"{{{key}}}:other", "kept too")
        await pubsub.ssubscribe(channel)
        assert (await pubsub.get_message(timeout=1))["type"] == "ssubscribe"

        await asyncio.to_thread(cluster.reshard, [slot], target)

        assert cluster.node_for_slot(slot) is target
        assert cluster.node_for_slot(slot - 1 if slot else 1) is source  # only that slot moved
        assert target.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 2
        assert source.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert target.call("GET", key) == "kept"
        assert source.command("GET", key) == b"-MOVED %d 127.0.0.1:%d\r\n" % (slot, target.port)
        # the client still maps the slot to the source: it follows the MOVED
        assert await client.get(key) == "kept"
        assert await client.set(key, "written after")
        assert target.call("GET", key) == "written after"
        # Redis tells a sharded subscriber whose slot left the node: it must subscribe on the new owner
        message = await pubsub.get_message(timeout=2)
        assert message == {"type": "sunsubscribe", "pattern": None, "channel": channel, "data": 0}
        assert target.call("SPUBLISH", channel, "nobody") == 0
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
        await client.aclose()


async def test_reshard_of_a_range_moves_every_slot_in_it_and_back(redis_cluster, client):
    owner = redis_cluster.node_for_slot(100)
    assert redis_cluster.node_for_slot(299) is owner
    target = next(node for node in redis_cluster.primaries() if node is not owner)
    prefix = unique("ranged")
    inside = [key for key in (f"{prefix}:{n}" for n in range(20_000)) if 100 <= keyslot(key) < 300][:20]
    outside = [f"{prefix}:out:{n}" for n in range(20) if not 100 <= keyslot(f"{prefix}:out:{n}") < 300]
    for key in inside + outside:
        await client.set(key, key)

    await asyncio.to_thread(redis_cluster.reshard, range(100, 300), target)
    try:
        assert {redis_cluster.node_for_slot(slot) for slot in range(100, 300)} == {target}
        assert redis_cluster.node_for_slot(99) is owner
        assert redis_cluster.node_for_slot(300) is owner
        assert [target.call("GET", key) for key in inside] == inside
        assert [await client.get(key) for key in inside + outside] == inside + outside
    finally:
        # the session's cluster as the other tests found it
        await asyncio.to_thread(redis_cluster.reshard, range(100, 300), owner)
    assert [owner.call("GET", key) for key in inside] == inside


async def test_kill_primary_promotes_its_replica_and_restart_brings_it_back_as_a_replica(
    redis_cluster_factory,
):
    cluster = redis_cluster_factory(replicas=1)
    primaries = cluster.primaries()
    assert len(primaries) == 3
    assert all(len(cluster.replicas_of(primary)) == 1 for primary in primaries)
    victim = primaries[0]
    (replica,) = cluster.replicas_of(victim)
    key = cluster.key_on(victim, "survives")
    client = await client_of(cluster)
    try:
        # WAIT counts the writes of its own connection: on a new one it would return at once
        with RespConnection(victim.port) as conn:
            conn.call("SET", key, "replicated")
            assert conn.call("WAIT", 1, 2000) == 1  # on the replica before the primary dies

        promoted = await asyncio.to_thread(cluster.kill_primary, victim)

        assert promoted is replica
        assert victim.proc is not None
        assert victim.proc.returncode is not None
        assert set(cluster.primaries()) == {replica, *primaries[1:]}
        assert cluster.node_for_slot(keyslot(key)) is replica
        assert await client.get(key) == "replicated"
        assert await client.set(key, "after failover")

        await asyncio.to_thread(cluster.restart, victim)

        assert cluster.replicas_of(replica) == [victim]
        assert victim not in cluster.primaries()
        assert victim.command("GET", key).startswith(b"-MOVED")
        assert await client.get(key) == "after failover"
    finally:
        await client.aclose()


async def test_manual_failover_swaps_a_primary_and_its_replica_without_losing_writes(redis_cluster_factory):
    cluster = redis_cluster_factory(replicas=1)
    primary = cluster.primaries()[1]
    (replica,) = cluster.replicas_of(primary)
    client = await client_of(cluster)
    key = cluster.key_on(primary, "handover")
    try:
        for n in range(100):
            await client.rpush(key, n)

        assert await asyncio.to_thread(cluster.fail_over, primary) is replica  # by manual_failover

        assert replica in cluster.primaries()
        assert cluster.replicas_of(replica) == [primary]
        assert await client.llen(key) == 100
        assert replica.call("LLEN", key) == 100
    finally:
        await client.aclose()


def test_pause_stops_a_node_answering_until_resumed(redis_cluster):
    node = redis_cluster.nodes[2]
    redis_cluster.pause(node)
    try:
        with RespConnection(node.port, timeout=0.2) as conn, pytest.raises(TimeoutError):
            conn.call("PING")
    finally:
        redis_cluster.resume(node)
    assert node.ping()
    redis_cluster.wait_settled()


def test_close_leaves_no_redis_server_or_directory_behind_even_for_a_paused_node():
    cluster = RedisCluster().start()
    ports = {node.port for node in cluster.nodes}
    assert len(our_redis_servers(ports)) == 3
    assert all((node.dir / "nodes.conf").exists() for node in cluster.nodes)  # what restart() reads
    cluster.pause(cluster.nodes[1])
    cluster.close()
    assert our_redis_servers(ports) == []
    for node in cluster.nodes:
        assert node.proc is not None
        assert node.proc.returncode is not None  # reaped, not a zombie
        assert not node.dir.exists()
    cluster.close()


def test_cluster_that_cannot_start_says_why_and_leaves_nothing_behind():
    cluster = RedisCluster(args=("--maxmemory-policy", "no-such-policy"))
    with pytest.raises(RuntimeError, match="redis-server exited") as raised:
        cluster.start()
    assert "no-such-policy" in str(raised.value)  # redis-server's own complaint
    assert our_redis_servers({node.port for node in cluster.nodes}) == []
    assert not any(node.dir.exists() for node in cluster.nodes)


def test_keyslot_hashes_the_hash_tag_as_redis_does(redis_cluster):
    node = redis_cluster.nodes[0]
    for key in ("plain", "{user1}:a", "{user1}:b", "a{}b", "{}{x}", "ü"):
        assert keyslot(key) == node.call("CLUSTER", "KEYSLOT", key), key
    assert keyslot("{user1}:a") == keyslot("{user1}:b") == keyslot("user1")
