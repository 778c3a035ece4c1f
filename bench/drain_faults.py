"""The fault run's drain case: rounds of SIGTERM on one of two hub processes (one Redis, AOF on) while
publishers publish and subscribers read, each hub restarted after its drain.

Each round, a burst of publishes goes straight to the hub about to stop, on new and on kept-alive
connections, the signal following them by 0-2 ms; half of them send their body 1-3 ms after their
headers, as a client may in two packets (such a publish used to hang until `server.shutdown_timeout`
once the signal came between the two). The publishers' traffic reaches it for a moment longer, as it
would through a load balancer that has not noticed yet. Every publish carries an Idempotency-Key and is
retried with it on the other hub until it is answered 200 (`hub.client`, one attempt a hub). Reported:
every attempt's answer by kind, the longest time to an answer of an attempt under way at a signal, how
long each hub took to exit, and, by the fault run's checker, that subscribers (resuming with
Last-Event-ID on the other hub) lost, doubled and reordered nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.faults import Acked, FaultPlan, FaultRun, Report
from bench.processes import HubProcess, RedisProcess
from hub.client import HubClient, HubRefused, HubUnreachable


@dataclass(frozen=True)
class DrainPlan:
    rounds: int = 6
    publishers: int = 4
    publish_interval: float = 0.01  # per publisher, between publishes
    burst: int = 8  # publishes sent to the hub about to stop, just before its signal
    subscribers: int = 8
    topics: int = 4
    lb_lag: float = 0.05  # seconds the publishers keep sending to a hub after its signal
    gap: float = 0.5  # seconds between a hub being back and the next signal
    shutdown_timeout: float = 10.0
    seed: int = 1

    def fault_plan(self) -> FaultPlan:
        return FaultPlan(
            publishers=self.publishers,
            events_per_publisher=0,
            publish_interval=self.publish_interval,
            subscribers=self.subscribers,
            topics=self.topics,
            redis_kills=0,
            hub_kills=0,
            seed=self.seed,
        )


@dataclass
class DrainReport(Report):
    rounds: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # every publish attempt, by its outcome
    at_signal: Counter[str] = field(default_factory=Counter)  # attempts under way at a signal
    max_answer_at_signal: float = 0.0  # seconds from sending to the answer, of those
    max_answer: float = 0.0  # of every attempt
    exit_times: list[float] = field(default_factory=list)  # seconds from a signal to the exit

    def lines(self) -> list[str]:
        # the kill run's counters that this run leaves at 0
        unused = {"refused_publishes", "redis_kills", "hub_kills", "reshards", "catch_ups"}
        return [line for line in super().lines() if line.split(":")[0].strip() not in unused]


@dataclass(frozen=True)
class _Event:
    publisher: int
    number: int
    topic: str
    key: str

    def data(self) -> dict[str, int]:
        return {"p": self.publisher, "n": self.number}

    def wire(self) -> bytes:
        body = orjson.dumps({"topic": self.topic, "data": self.data()})
        head = f"Idempotency-Key: {self.key}\r\nContent-Type: application/json\r\n"
        return (
            f"POST /publish HTTP/1.1\r\nHost: hub\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def acked(self) -> Acked:
        return Acked(self.topic, self.publisher, self.number)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    """A response's status and JSON body; status 0 if the connection closed without one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0, {}
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
    doc = orjson.loads(await reader.readexactly(length))
    return int(lines[0].split()[1]), doc if isinstance(doc, dict) else {}


@dataclass
class _Attempt:
    hub: int
    started: float
    ended: float = 0.0
    outcome: str = ""


class DrainRun(FaultRun):
    def __init__(self, plan: DrainPlan, redis: RedisProcess, hubs: list[HubProcess]) -> None:
        super().__init__(plan.fault_plan(), redis, hubs)
        self.drain_plan = plan
        self.report: DrainReport = DrainReport()
        self.attempts: list[_Attempt] = []
        self.signals: list[float] = []
        self.rounds_done = asyncio.Event()
        self.keys = 0
        self.burst_ready = 0  # burst publishes waiting for the word to go

    def new_event(self, publisher: int) -> _Event:
        number = self.keys
        self.keys += 1
        topic = f"fault/{self.rng.randrange(self.plan.topics)}"
        return _Event(publisher, number, topic, f"{self.run_id}-{number}")

    async def publish(
        self, session: aiohttp.ClientSession, event: _Event, preferred: int, attempt: int = 0
    ) -> None:
        """Publish `event` with `hub.client`, one attempt per hub, its Idempotency-Key reused on
        whichever hub is up until one answers 200."""
        while True:
            index = preferred if attempt == 0 else self.hubs.index(self.live_hub(preferred + attempt))
            record = _Attempt(index, time.monotonic())
            self.attempts.append(record)
            client = HubClient(self.hubs[index].url, session=session, publish_retries=0)
            try:
                event_id = await client.publish(event.topic, event.data(), idempotency_key=event.key)
                record.outcome = "200"
                self.acked[event_id] = event.acked()
                return
            except HubRefused as exc:
                record.outcome = f"{exc.status} {exc.code}"
            except HubUnreachable as exc:
                cause = exc.__cause__
                if isinstance(cause, aiohttp.ServerDisconnectedError):
                    record.outcome = "closed unanswered"
                elif isinstance(cause, aiohttp.ClientConnectorError):
                    record.outcome = "connection refused"
                elif isinstance(cause, OSError) and cause.errno is not None:
                    record.outcome = f"{type(cause).__name__}: {os.strerror(cause.errno)}"
                else:
                    record.outcome = type(cause).__name__
            finally:
                record.ended = time.monotonic()
            attempt += 1
            await asyncio.sleep(min(0.02 * attempt, 0.2))

    async def burst_publish(
        self, session: aiohttp.ClientSession, victim: int, go: asyncio.Event, warm: bool, split: bool
    ) -> None:
        """A publish written straight to `victim` on its own connection (`warm`: one that has
        answered a publish before) once `go` is set, just before the signal (`split`: its headers
        then, its body 1-3 ms later, as a client may send them in two packets); then, if it was not
        answered 200, retried as any other."""
        hub = self.hubs[victim]
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        try:
            if warm:
                first = self.new_event(-1)
                record = _Attempt(victim, time.monotonic())
                self.attempts.append(record)
                writer.write(first.wire())
                status, doc = await _read_answer(reader)
                record.ended, record.outcome = time.monotonic(), str(status)
                if status == 200:
                    self.acked[str(doc["id"])] = first.acked()
                else:
                    await self.publish(session, first, victim, attempt=1)
            event = self.new_event(-1)
            self.burst_ready += 1
            await go.wait()
            record = _Attempt(victim, time.monotonic())
            self.attempts.append(record)
            wire = event.wire()
            if split:
                head, _, body = wire.partition(b"\r\n\r\n")
                writer.write(head + b"\r\n\r\n")
                await asyncio.sleep(self.rng.uniform(0.001, 0.003))
                writer.write(body)
            else:
                writer.write(wire)
            try:
                async with asyncio.timeout(self.drain_plan.shutdown_timeout + 5):
                    status, doc = await _read_answer(reader)
            except TimeoutError:
                status, doc = -1, {}
            record.ended = time.monotonic()
            if status == 200:
                record.outcome = "200"
                self.acked[str(doc["id"])] = event.acked()
                return
            error = doc.get("error")
            code = error.get("code", "?") if isinstance(error, dict) else "?"
            record.outcome = {0: "closed unanswered", -1: "no answer in time"}.get(status, f"{status} {code}")
        finally:
            writer.close()
        await self.publish(session, event, victim, attempt=1)

    async def publisher(self, session: aiohttp.ClientSession, index: int) -> None:
        while not self.rounds_done.is_set():
            await self.publish(session, self.new_event(index), self.hubs.index(self.live_hub(index)))
            await asyncio.sleep(self.plan.publish_interval)

    async def faults(self) -> None:
        plan = self.drain_plan
        report = self.report
        async with aiohttp.ClientSession() as burst_session:
            for n in range(plan.rounds):
                await asyncio.sleep(plan.gap)
                victim = n % len(self.hubs)
                proc = self.hubs[victim].proc
                assert proc is not None
                go = asyncio.Event()
                self.burst_ready = 0
                burst = [
                    asyncio.create_task(
                        self.burst_publish(burst_session, victim, go, warm=i % 2 == 1, split=i % 4 >= 2)
                    )
                    for i in range(plan.burst)
                ]
                while self.burst_ready + sum(t.done() for t in burst) < len(burst):
                    await asyncio.sleep(0.001)
                go.set()
                await asyncio.sleep(self.rng.uniform(0, 0.002))  # the requests go out meanwhile
                signalled = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                self.signals.append(signalled)
                await asyncio.sleep(plan.lb_lag)
                self.up[victim] = False
                await asyncio.to_thread(proc.wait, plan.shutdown_timeout + 10)
                report.exit_times.append(round(time.monotonic() - signalled, 3))
                await asyncio.gather(*burst)
                self.hubs[victim].start()
                await self.hubs[victim].ready()
                self.up[victim] = True
                report.rounds += 1
        self.rounds_done.set()

    def summarize(self) -> None:
        report = self.report
        for attempt in self.attempts:
            took = attempt.ended - attempt.started
            report.answers[attempt.outcome] += 1
            report.max_answer = max(report.max_answer, took)
            if any(attempt.started <= t <= attempt.ended for t in self.signals):
                report.at_signal[attempt.outcome] += 1
                report.max_answer_at_signal = max(report.max_answer_at_signal, took)
        report.max_answer = round(report.max_answer, 3)
        report.max_answer_at_signal = round(report.max_answer_at_signal, 3)


async def run_drain_test(plan: DrainPlan) -> DrainReport:
    redis = RedisProcess("--appendonly", "yes", "--appendfsync", "always").start()
    env = {
        "HUB_SSE_HEARTBEAT_INTERVAL": "1",
        "HUB_REDIS_CONNECT_TIMEOUT": "1",
        "HUB_SERVER_SHUTDOWN_TIMEOUT": str(plan.shutdown_timeout),
    }
    hubs = [HubProcess("--redis", redis.url, env=env) for _ in range(2)]
    try:
        await asyncio.gather(*(hub.ready() for hub in hubs))
        run = DrainRun(plan, redis, hubs)
        report = await run.run()
        assert isinstance(report, DrainReport)
        run.summarize()
        return report
    finally:
        for hub in hubs:
            hub.kill()
        redis.close()


def main(size: str) -> int:
    plans = {
        "small": DrainPlan(),
        "large": DrainPlan(rounds=16, publishers=8, burst=16, subscribers=24, topics=8),
    }
    plan = plans[size]
    report = asyncio.run(run_drain_test(plan))
    print(f"drain run ({size}: {plan.rounds} SIGTERMs, shutdown_timeout {plan.shutdown_timeout:g} s):")
    print("\n".join(report.lines()))
    ok = report.ok() and max(report.exit_times, default=0) < plan.shutdown_timeout / 2
    ok = ok and report.max_answer_at_signal < plan.shutdown_timeout / 2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1
