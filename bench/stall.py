"""The stall case of the fault run: Redis SIGSTOPped for longer than `redis.connect_timeout` while
publishers publish through two real hub processes, then SIGCONTed.

A stalled Redis keeps its sockets open and runs what waits in them once it goes on, so a publish that
timed out may still be delivered. The hub must answer 503 only for what it knows was never published,
and 504 `outcome_unknown` for the rest. Two kinds of publishers measure it:

- keyed publishers retry 503 and 504 (and broken connections) with the same Idempotency-Key, on either
  hub, until answered 200: every event must reach every subscriber of its topic exactly once;
- one unkeyed publisher never retries: an event it was answered 503 for must reach no one.

`/readyz` is polled on both hubs meanwhile: it must answer 503 during each stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench.faults import LARGE_LOAD, Acked, FaultPlan, FaultRun, Report, Subscriber, check
from bench.processes import HubProcess, RedisCluster, RedisProcess
from hub.brokers.cluster.partitions import Partitions


@dataclass(frozen=True)
class StallPlan:
    publishers: int = 4
    events_per_publisher: int = 150
    publish_interval: float = 0.02
    subscribers: int = 8
    topics: int = 4
    stalls: int = 2
    stall: float = 3.0  # seconds SIGSTOPped: longer than connect_timeout
    connect_timeout: float = 1.0


@dataclass
class StallReport:
    answers: Counter[str] = field(default_factory=Counter)  # keyed publishers' answers, by status
    unkeyed_answers: Counter[str] = field(default_factory=Counter)
    refused_but_delivered: int = 0  # unkeyed events answered 503 that some subscriber got anyway
    outcome_unknown_without_field: int = 0  # 504s whose body did not say "outcome": "unknown"
    not_ready_during_stalls: int = 0  # stalls during which /readyz answered 503 on every hub
    stalls: int = 0
    faults: Report = field(default_factory=Report)

    def ok(self) -> bool:
        return (
            self.faults.ok()
            and self.refused_but_delivered == 0
            and self.outcome_unknown_without_field == 0
            and self.not_ready_during_stalls == self.stalls
        )

    def lines(self) -> list[str]:
        out = [
            f"{'answers (keyed)':>28}: {dict(sorted(self.answers.items()))}",
            f"{'answers (unkeyed, no retry)':>28}: {dict(sorted(self.unkeyed_answers.items()))}",
            f"{'503 yet delivered (events)':>28}: {self.refused_but_delivered}",
            f"{'504 without outcome':>28}: {self.outcome_unknown_without_field}",
            f"{'stalls /readyz saw':>28}: {self.not_ready_during_stalls} of {self.stalls}",
        ]
        faults = self.faults
        for name in ("acknowledged", "delivered", "expected", "lost", "duplicated", "reordered", "resets"):
            out.append(f"{name:>28}: {getattr(faults, name)}")
        out.append(f"{'seconds':>28}: {faults.seconds}")
        return out


class StallRun(FaultRun):
    """The fault run's subscribers and checker; publishers and faults of its own."""

    def __init__(
        self,
        plan: StallPlan,
        redis: RedisProcess | RedisCluster,
        stalled: RedisProcess,
        unkeyed_topic: str,
        hubs: list[HubProcess],
    ) -> None:
        super().__init__(
            FaultPlan(
                publishers=plan.publishers,
                events_per_publisher=plan.events_per_publisher,
                publish_interval=plan.publish_interval,
                subscribers=plan.subscribers,
                topics=plan.topics,
                redis_kills=0,
                hub_kills=0,
            ),
            redis,
            hubs,
        )
        self.stall_plan = plan
        self.stalled = stalled  # the Redis, or the cluster node that serves fault/0
        self.unkeyed_topic = unkeyed_topic  # served by it, and read by a subscriber of its own
        self.stall_report = StallReport()
        self.refused_unkeyed: set[str] = set()  # data of the unkeyed events answered 503

    async def _post(
        self, session: aiohttp.ClientSession, hub: HubProcess, body: object, headers: dict[str, str]
    ) -> tuple[str, dict[str, object]]:
        try:
            async with session.post(hub.url + "/publish", json=body, headers=headers) as resp:
                doc = await resp.json(content_type=None)
                if resp.status == 504 and doc.get("outcome") != "unknown":
                    self.stall_report.outcome_unknown_without_field += 1
                return str(resp.status), doc
        except (TimeoutError, aiohttp.ClientError):
            return "no answer", {}

    async def publisher(self, session: aiohttp.ClientSession, index: int) -> None:
        plan = self.plan
        for number in range(plan.events_per_publisher):
            topic = f"fault/{self.rng.randrange(plan.topics)}"
            body = {"topic": topic, "data": {"p": index, "n": number}}
            headers = {"Idempotency-Key": f"{self.run_id}-{index}-{number}"}
            attempt = 0
            while True:
                status, doc = await self._post(
                    session, self.hubs[(index + attempt) % len(self.hubs)], body, headers
                )
                self.stall_report.answers[status] += 1
                if status == "200":
                    self.acked[str(doc["id"])] = Acked(topic, index, number)
                    break
                attempt += 1
                await asyncio.sleep(min(0.05 * attempt, 0.5))
            await asyncio.sleep(plan.publish_interval)

    async def unkeyed_publisher(self, session: aiohttp.ClientSession) -> None:
        plan = self.plan
        for number in range(plan.events_per_publisher):
            data = f"unkeyed-{number}"
            status, _ = await self._post(
                session, self.hubs[number % len(self.hubs)], {"topic": self.unkeyed_topic, "data": data}, {}
            )
            self.stall_report.unkeyed_answers[status] += 1
            if status == "503":
                self.refused_unkeyed.add(data)  # a string's data goes out as is
            await asyncio.sleep(plan.publish_interval)

    async def faults(self) -> None:
        plan = self.stall_plan
        redis = self.stalled
        assert redis.proc is not None
        duration = self.plan.events_per_publisher * self.plan.publish_interval
        gap = max(0.5, (duration - plan.stalls * plan.stall) / (plan.stalls + 1))
        async with aiohttp.ClientSession() as session:
            for _ in range(plan.stalls):
                await asyncio.sleep(gap)
                redis.proc.send_signal(signal.SIGSTOP)
                try:
                    unready = await self._unready_meanwhile(session, plan.stall)
                finally:
                    redis.proc.send_signal(signal.SIGCONT)
                self.stall_report.stalls += 1
                self.stall_report.not_ready_during_stalls += unready

    async def _unready_meanwhile(self, session: aiohttp.ClientSession, seconds: float) -> bool:
        """Whether every hub answered /readyz 503 at some point in the next `seconds`."""
        deadline = time.monotonic() + seconds
        unready: set[str] = set()
        while time.monotonic() < deadline:
            for hub in self.hubs:
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    async with session.get(
                        hub.url + "/readyz", timeout=aiohttp.ClientTimeout(total=0.5)
                    ) as resp:
                        if resp.status == 503:
                            unready.add(hub.url)
            await asyncio.sleep(0.1)
        return len(unready) == len(self.hubs)

    async def run_stalls(self) -> StallReport:
        plan = self.plan
        started = time.monotonic()
        subscribers = []
        for i in range(plan.subscribers):
            selectors = (
                ["fault/*"] if i % 3 == 2 else [f"fault/{i % plan.topics}", f"fault/{(i + 1) % plan.topics}"]
            )
            subscribers.append(Subscriber(i, selectors))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            unkeyed = Subscriber(len(subscribers), [self.unkeyed_topic])
            readers = [asyncio.create_task(self.subscriber(session, s)) for s in [*subscribers, unkeyed]]
            async with asyncio.timeout(15):
                await asyncio.gather(*(s.connected.wait() for s in [*subscribers, unkeyed]))
            faults = asyncio.create_task(self.faults())
            publish_timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=publish_timeout) as publishing:
                await asyncio.gather(
                    *(self.publisher(publishing, i) for i in range(plan.publishers)),
                    self.unkeyed_publisher(publishing),
                )
            await faults
            await self._settle(subscribers, 15.0)
            for task in readers:
                task.cancel()
            for task in readers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        report = self.stall_report
        report.refused_but_delivered = len(
            {data for _, data in unkeyed.received if data in self.refused_unkeyed}
        )
        report.faults.acknowledged = len(self.acked)
        check(subscribers, self.acked, report.faults, verbose=True)
        report.faults.seconds = round(time.monotonic() - started, 1)
        return report


async def run_stall_test(plan: StallPlan, cluster: bool = False) -> StallReport:
    prefix = "stall-" + uuid.uuid4().hex[:6]
    redis: RedisProcess | RedisCluster
    if cluster:
        # Three primaries, no replica: a node timeout past the stall, so the cluster never fails it.
        redis = await asyncio.to_thread(RedisCluster(node_timeout_ms=int(4000 * plan.stall)).start)
        parts = Partitions(16, prefix)
        stalled = redis.node_for_slot(parts.slots[parts.of_topic("fault/0")])
        unkeyed_topic = next(
            topic
            for topic in (f"unkeyed/{i}" for i in range(1000))
            if redis.node_for_slot(parts.slots[parts.of_topic(topic)]) is stalled
        )
    else:
        redis = stalled = RedisProcess().start()
        unkeyed_topic = "unkeyed/0"
    env = {
        # Ticks stop during a stall too, but only after two intervals: longer than a stall, so that
        # /readyz must learn it from the publishes that fail.
        "HUB_SSE_HEARTBEAT_INTERVAL": str(2 * plan.stall),
        "HUB_REDIS_CONNECT_TIMEOUT": str(plan.connect_timeout),
        "HUB_REDIS_PREFIX": prefix,
    }
    hubs = [HubProcess("--redis", redis.url, env=env) for _ in range(2)]
    try:
        await asyncio.gather(*(hub.ready() for hub in hubs))
        return await StallRun(plan, redis, stalled, unkeyed_topic, hubs).run_stalls()
    finally:
        for hub in hubs:
            hub.kill()
        redis.close()


def main(size: str, cluster: bool = False) -> int:
    plans = {
        "small": StallPlan(),
        "large": StallPlan(**LARGE_LOAD, stalls=3),
    }
    plan = plans[size]
    report = asyncio.run(run_stall_test(plan, cluster))
    where = "a Redis Cluster (the primary of fault/0)" if cluster else "one Redis"
    print(
        f"fault run, stall case ({size}, {where}, SIGSTOPped {plan.stalls} times for {plan.stall:g} s,"
        f" connect_timeout {plan.connect_timeout:g} s):"
    )
    print("\n".join(report.lines()))
    print("PASS" if report.ok() else "FAIL")
    return 0 if report.ok() else 1
