"""Lossless delivery, against both brokers: ids, history, Last-Event-ID resume, reset, retained state,
idempotent publish."""

from __future__ import annotations

import asyncio
import itertools

import orjson

from hub.http.auth import mint
from hub.wire.ids import MAX_SEQ, RESET_EPOCH, RESET_UNKNOWN
from tests.support.hub_client import HubUnderTest
from tests.support.ids import advances, is_vector, names_event, plain, seq_in, vector


async def publish_many(hub: HubUnderTest, topic: str, n: int, start: int = 0) -> list[str]:
    doc = await hub.publish([{"topic": topic, "data": str(i)} for i in range(start, start + n)])
    return doc["ids"]


async def test_resume_from_last_event_id_header_gets_exactly_what_was_missed(hub):
    async with hub.subscribe("r") as stream:
        ids = await publish_many(hub, "r", 5)
        assert [e.data for e in await stream.take(2)] == ["0", "1"]
    ids += await publish_many(hub, "r", 3, start=5)
    async with hub.subscribe("r", headers={"Last-Event-ID": ids[1]}) as stream:
        got = await stream.take(6)
        assert [e.data for e in got] == [str(i) for i in range(2, 8)]
        assert [e.id for e in got] == ids[2:]
        await hub.publish({"topic": "r", "data": "live"})
        assert (await stream.next_event()).data == "live"


async def test_query_last_event_id_and_the_header_wins(hub):
    ids = await publish_many(hub, "q", 6)
    async with hub.subscribe("q", lastEventId=ids[2]) as stream:
        assert [e.data for e in await stream.take(3)] == ["3", "4", "5"]
    async with hub.subscribe("q", lastEventId=ids[0], headers={"Last-Event-ID": ids[4]}) as stream:
        assert (await stream.next_event()).data == "5"


async def test_earliest_replays_everything_retained(hub):
    await publish_many(hub, "e", 4)
    async with hub.subscribe("e", lastEventId="earliest") as stream:
        assert [e.data for e in await stream.take(4)] == ["0", "1", "2", "3"]


async def test_one_id_resumes_several_topics_and_patterns_in_order(hub, broker_kind):
    topics = ["m/a", "m/b", "m/c/d"]
    docs = []

    async def publish(i: int) -> None:
        docs.append(await hub.publish({"topic": topics[i % 3], "data": f"{topics[i % 3]}:{i}"}))

    async with hub.subscribe("m/a", "m/c/**") as stream:
        for i in range(4):
            await publish(i)
        seen = await stream.take(3)
    assert [e.data for e in seen] == ["m/a:0", "m/c/d:2", "m/a:3"]
    # The id the subscriber got: on one Redis the publish id itself; on a cluster, a position in every
    # partition the subscription reads (the publish id names only m/a's, so it cannot resume m/c/**).
    assert names_event(seen[-1].id, docs[3]["id"]), (seen[-1].id, docs[3]["id"])
    for i in range(4, 12):
        await publish(i)
    async with hub.subscribe("m/a", "m/c/**", headers={"Last-Event-ID": seen[-1].id}) as stream:
        got = await stream.take(5)
    expected = [f"{topics[i % 3]}:{i}" for i in range(4, 12) if i % 3 != 1]
    if broker_kind == "cluster":
        # Each topic in publish order; m/a and m/c/d are in different partitions, which no counter
        # orders against each other, so the replay may take them partition by partition.
        for topic in ("m/a", "m/c/d"):
            mine = [e.data for e in got if e.data.startswith(topic + ":")]
            assert mine == [d for d in expected if d.startswith(topic + ":")]
        assert sorted(e.data for e in got) == sorted(expected)
    else:
        assert [e.data for e in got] == expected  # one counter: publish order across topics
    assert all(advances(a, b) for a, b in itertools.pairwise([seen[-1].id] + [e.id for e in got]))


async def test_events_published_during_the_replay_are_neither_lost_nor_doubled(hub):
    ids = await publish_many(hub, "busy", 50)

    async def keep_publishing():
        for i in range(50, 250):
            await hub.publish({"topic": "busy", "data": str(i)})

    publisher = asyncio.create_task(keep_publishing())
    await asyncio.sleep(0.01)
    async with hub.subscribe("busy", headers={"Last-Event-ID": ids[9]}) as stream:
        got = await stream.take(240, timeout=20)
        await publisher
    assert [e.data for e in got] == [str(i) for i in range(10, 250)]


async def test_stream_opens_with_a_position_so_a_quiet_client_resumes_too(hub):
    async with hub.subscribe("quiet") as stream:
        position = stream.last_event_id
        assert position
    await hub.publish({"topic": "quiet", "data": "while away"})
    async with hub.subscribe("quiet", headers={"Last-Event-ID": position}) as stream:
        assert (await stream.next_event()).data == "while away"


async def reset_reason(stream) -> str:
    event = await stream.next_event()
    assert event.event == "reset"
    return orjson.loads(event.data)["reason"]


async def test_reset_for_an_id_from_another_epoch_or_not_ours(hub):
    await hub.publish({"topic": "x", "data": "state", "retain": True})
    for bad in ["zzzzzz-1", "not an id", "42"]:
        async with hub.subscribe("x", headers={"Last-Event-ID": bad}) as stream:
            assert await reset_reason(stream)
            assert (await stream.next_event()).data == "state"  # resync from the retained state


async def test_reset_when_history_was_trimmed_past_the_id(hub_factory):
    hub = await hub_factory(history__max_events=5)
    ids = []
    for i in range(30):
        ids += await publish_many(hub, "t", 1, start=i)
    async with hub.subscribe("t", headers={"Last-Event-ID": ids[2]}) as stream:
        assert "no longer retained" in await reset_reason(stream)
        await hub.publish({"topic": "t", "data": "after reset"})
        assert (await stream.next_event()).data == "after reset"
    async with hub.subscribe("t", headers={"Last-Event-ID": ids[27]}) as stream:
        assert [e.data for e in await stream.take(3)] == ["28", "29", "after reset"]


async def test_trimming_other_topics_never_resets_this_one(hub_factory):
    hub = await hub_factory(history__max_events=3)
    first = (await hub.publish({"topic": "calm", "data": "c"}))["id"]
    await publish_many(hub, "noisy", 20)
    async with hub.subscribe("calm", headers={"Last-Event-ID": first}) as stream:
        await hub.publish({"topic": "calm", "data": "next"})
        assert (await stream.next_event()).data == "next"


async def test_history_is_bounded_by_age(hub_factory):
    hub = await hub_factory(history__max_age=0.3)
    old = await publish_many(hub, "aged", 3)
    await asyncio.sleep(0.5)
    await hub.publish({"topic": "aged", "data": "fresh"})
    async with hub.subscribe("aged", lastEventId="earliest") as stream:
        assert (await stream.next_event()).data == "fresh"
    async with hub.subscribe("aged", headers={"Last-Event-ID": old[0]}) as stream:
        assert "no longer retained" in await reset_reason(stream)


async def test_retained_state_comes_first_then_live(hub, broker_kind):
    await hub.publish({"topic": "job/1", "data": {"p": 10}, "retain": True})
    await hub.publish({"topic": "job/1", "data": {"p": 20}, "retain": True})
    await hub.publish({"topic": "job/1", "data": "not state"})
    await hub.publish({"topic": "job/2", "data": {"p": 99}, "retain": True})
    async with hub.subscribe("job/*") as stream:
        got = await stream.take(2)
        if broker_kind == "cluster":
            # job/1 and job/2 are in different partitions, which no counter orders against each other.
            assert sorted(e.data for e in got) == ['{"p":20}', '{"p":99}']
        else:
            assert [e.data for e in got] == ['{"p":20}', '{"p":99}']  # one counter: publish order
        await hub.publish({"topic": "job/1", "data": "live"})
        assert (await stream.next_event()).data == "live"
    async with hub.subscribe("job/1", headers={"Last-Event-ID": got[-1].id}) as stream:
        await hub.publish({"topic": "job/1", "data": "only this"})
        # resuming past the retained event does not send it again
        assert (await stream.next_event()).data == "live"
        assert (await stream.next_event()).data == "only this"


async def test_idempotency_key_answers_the_first_result_and_delivers_once(hub):
    async with hub.subscribe("pay") as stream:
        headers = {"Idempotency-Key": "order-7"}
        first = await hub.publish({"topic": "pay", "data": "charge"}, headers=headers)
        again = await hub.publish({"topic": "pay", "data": "charge"}, headers=headers)
        assert first == again
        await hub.publish({"topic": "pay", "data": "next"})
        assert [e.data for e in await stream.take(2)] == ["charge", "next"]
    status, doc = await hub.post("/publish", json={"topic": "pay"}, headers={"Idempotency-Key": "bad key"})
    assert (status, doc["error"]["code"]) == (400, "invalid_idempotency_key")


async def test_live_events_during_a_long_replay_follow_it_without_gap_or_duplicate(hub_factory):
    hub = await hub_factory(history__max_events=5000)
    blob = "x" * 4000
    ids = []
    for start in range(0, 1500, 200):
        batch = [{"topic": "long", "data": f"{i} {blob}"} for i in range(start, min(start + 200, 1500))]
        ids += (await hub.publish(batch))["ids"]

    async def keep_publishing():
        for i in range(1500, 1800, 10):
            await hub.publish([{"topic": "long", "data": f"{j} {blob}"} for j in range(i, i + 10)])

    publisher = asyncio.create_task(keep_publishing())
    async with hub.subscribe("long", headers={"Last-Event-ID": ids[0]}) as stream:
        got = await stream.take(1799, timeout=30)
        await publisher
    assert [int(e.data.split(" ")[0]) for e in got] == list(range(1, 1800))


async def test_a_resume_past_max_replay_is_a_reset(hub_factory):
    hub = await hub_factory(history__max_replay=5)
    ids = await publish_many(hub, "many", 10)
    async with hub.subscribe("many", headers={"Last-Event-ID": ids[0]}) as stream:
        assert "more events" in await reset_reason(stream)
    async with hub.subscribe("many", headers={"Last-Event-ID": ids[5]}) as stream:
        assert [e.data for e in await stream.take(4)] == ["6", "7", "8", "9"]


async def test_a_resume_past_max_replay_bytes_is_a_reset_on_redis(hub_factory, broker_kind):
    """A replay comes from Redis in one reply, held whole until written: max_replay events of max_data
    bytes made one resume up to 2.5 GB. The memory broker replays the events it holds, copying nothing."""
    hub = await hub_factory(history__max_replay_bytes=50_000)
    ids = (await hub.publish([{"topic": "big", "data": f"{i}" + "x" * 9_999} for i in range(10)]))["ids"]
    async with hub.subscribe("big", headers={"Last-Event-ID": ids[0]}) as stream:
        if broker_kind == "memory":
            assert len(await stream.take(9)) == 9
        else:
            assert "more events" in await reset_reason(stream)
    async with hub.subscribe("big", headers={"Last-Event-ID": ids[5]}) as stream:
        assert [e.data[0] for e in await stream.take(4)] == ["6", "7", "8", "9"]


async def test_a_last_event_id_that_is_not_utf8_is_just_unknown(hub):
    async with hub.subscribe(
        "u", headers={"Last-Event-ID": "\udcff\udcfe-1".encode("utf-8", "surrogateescape").decode("latin-1")}
    ) as stream:
        assert await reset_reason(stream)


async def test_an_id_that_names_only_some_of_the_topics_gets_a_reset_on_a_cluster(hub, broker_kind):
    """A cluster id names a position per partition; resuming a wider subscription from a narrower id
    cannot prove what was missed in the others. One counter (memory, Redis) orders every topic, so there
    any id of ours resumes every topic."""
    first = await hub.publish({"topic": "wide/a", "data": "1"})
    await hub.publish({"topic": "wide/b/c", "data": "2"})
    async with hub.subscribe("wide/**", lastEventId=first["id"]) as stream:
        event = await stream.next_event()
    if broker_kind == "cluster":
        assert event.event == "reset"
        assert "names no position" in event.data
    else:
        assert (event.event, event.data) == ("message", "2")


def at_seq(event_id: str, seq: int | str) -> str:
    """`event_id` (a one-topic publish id) with its seq replaced: same epoch, or same digest and partition."""
    if is_vector(event_id):
        head, seqs = vector(event_id)
        (p,) = seqs
        return f"{head}_{p}.{seq}"
    return f"{plain(event_id)[0]}-{seq}"


async def test_a_resume_from_the_future_resets_that_stream_and_moves_no_shared_counter(hub):
    """A subscriber once rewrote Redis' counter and epoch with a Last-Event-ID ahead of it (`-1000000`
    started a new epoch, resetting every other client; a seq of 1e20 broke every later publish)."""
    first = (await hub.publish({"topic": "f", "data": "first"}))["id"]
    async with hub.subscribe("f", lastEventId=first) as bystander:
        for future in (seq_in(first) + 1, seq_in(first) + 1_000_000, MAX_SEQ):
            async with hub.subscribe("f", headers={"Last-Event-ID": at_seq(first, future)}) as stream:
                assert await reset_reason(stream) == RESET_EPOCH
        for past_any in (MAX_SEQ + 1, "99999999999999999999", "1e20", "-1", "01"):
            async with hub.subscribe("f", lastEventId=at_seq(first, past_any)) as stream:
                assert await reset_reason(stream) == RESET_UNKNOWN
        second = (await hub.publish({"topic": "f", "data": "second"}))["id"]
        # The same history goes on: the next seq of the same epoch (one Redis: of the same counter).
        assert at_seq(first, seq_in(first) + 1) == second or advances(first, second), (first, second)
        event = await bystander.next_event()
        assert (event.event, event.data) == ("message", "second")
    async with hub.subscribe("f", lastEventId=first) as stream:
        event = await stream.next_event()
        assert (event.event, event.data) == ("message", "second")


async def test_an_idempotency_key_sent_again_with_another_request_is_a_422_and_publishes_nothing(hub):
    headers = {"Idempotency-Key": "order-8"}
    async with hub.subscribe("pay", "refund") as stream:
        first = await hub.publish({"topic": "pay", "data": "charge"}, headers=headers)
        for other in (
            {"topic": "pay", "data": "charge twice"},
            {"topic": "refund", "data": "charge"},
            {"topic": "pay", "data": "charge", "retain": True},
            [{"topic": "pay", "data": "charge"}, {"topic": "refund", "data": "charge"}],
        ):
            status, doc = await hub.post("/publish", json=other, headers=headers)
            assert (status, doc["error"]["code"]) == (422, "idempotency_key_reused"), doc
        assert await hub.publish({"topic": "pay", "data": "charge"}, headers=headers) == first
        await hub.publish({"topic": "pay", "data": "next"})
        assert [e.data for e in await stream.take(2)] == ["charge", "next"]


async def test_an_idempotency_key_is_the_publishers_own_not_shared_with_others(hub_factory):
    """A token granted only `public/attacker`, publishing with `Idempotency-Key: order-7-created`, made
    the owner's later publish to `orders/7` with that key answer the attacker's id and publish nothing."""
    secret = "test-secret-of-at-least-32-bytes!"
    hub = await hub_factory(auth__jwt_secret=secret)
    attacker = {"Authorization": "Bearer " + mint(publish=["public/attacker"], secret=secret, subject="eve")}
    owner = {"Authorization": "Bearer " + mint(publish=["orders/**"], subscribe=["orders/**"], secret=secret,
                                                subject="shop")}  # fmt: skip
    key = {"Idempotency-Key": "order-7-created"}
    planted = await hub.publish({"topic": "public/attacker", "data": "x"}, headers=attacker | key)
    async with hub.subscribe("orders/7", headers=owner) as stream:
        real = await hub.publish({"topic": "orders/7", "data": "created"}, headers=owner | key)
        assert real["id"] != planted["id"]
        assert (await stream.next_event()).data == "created"
