"""Two replicas behind nginx (Debian's, with the project's own config) while events flow: rolling restarts,
each replica draining on SIGTERM (a short jittered `retry:`, streams closed, in-flight publishes finished)
and coming back, the next one going down 1 or 5 s after it is back; and a replica frozen and killed with
publishes in flight. Every request through nginx must be answered by a replica (no 502, no other 5xx),
and every subscriber must end with every acknowledged event, in order, none twice."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.processes import HubProcess
from hub.client import HubClient, Subscription
from hub.http.server import free_port

ROOT = Path(__file__).parent.parent.parent
SHUTDOWN_TIMEOUT = 3.0
SURGE = 16  # publishers more while a replica stops
STEADY = 6  # publishers all along
# What nginx answered, per request: the client's status, then each replica's it tried ("502, 200": the
# first could not be reached or closed the connection, the next one answered).
ACCESS_LOG_FORMAT = "$status $request_method $uri [$upstream_status]"


@contextlib.contextmanager
def nginx_in_front(tmp_path: Path, upstream_ports: list[int]) -> Iterator[str]:
    """deploy/nginx/nginx.conf as it is, but for the port it listens on and an access log; our replicas as
    its upstream. The log is tmp_path/logs/access.log, in ACCESS_LOG_FORMAT."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = (ROOT / "deploy/nginx/nginx.conf").read_text()
    assert conf.count("listen 80;") == 1
    assert conf.count("http {") == 1
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    log = f"log_format hub '{ACCESS_LOG_FORMAT}'; access_log {tmp_path}/logs/access.log hub;"
    (tmp_path / "nginx.conf").write_text(conf.replace("http {", "http {\n    " + log, 1))
    # deploy/nginx/hub-upstream.conf too, its servers' parameters kept: our replicas for compose's.
    upstream = (ROOT / "deploy/nginx/hub-upstream.conf").read_text()
    names = list(dict.fromkeys(re.findall(r"^\s*server\s+([\w.-]+:\d+)", upstream, re.M)))
    assert len(names) == len(upstream_ports)
    for name, p in zip(names, upstream_ports, strict=True):
        upstream = re.sub(rf"(?m)^(\s*server\s+){re.escape(name)}\b", rf"\g<1>127.0.0.1:{p}", upstream)
    (tmp_path / "hub-upstream.conf").write_text(upstream)
    (tmp_path / "logs").mkdir()
    directives = f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/logs/error.log;"
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", directives],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def access_log(tmp_path: Path) -> list[tuple[int, str, str, str]]:
    """(status, method, path, the replicas' statuses) of each request nginx logged."""
    out = []
    for line in (tmp_path / "logs/access.log").read_text().splitlines():
        status, method, path, upstream = line.split(" ", 3)
        out.append((int(status), method, path, upstream.strip("[]")))
    return out


@pytest.fixture
async def replicas(redis_server) -> AsyncIterator[list[HubProcess]]:
    # Async, so that the replicas stop before the event loop closes: the threads reading their output
    # end with them, and the loop's shutdown waits on those threads.
    env = {
        "HUB_REDIS_PREFIX": "roll" + uuid.uuid4().hex[:8],
        "HUB_SSE_RETRY": "400",  # clients come back within 100-400 ms of a drain
        "HUB_SSE_HEARTBEAT_INTERVAL": "1",
        "HUB_SERVER_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    procs = [HubProcess("--redis", redis_server.url, env=env) for _ in range(2)]
    yield procs
    for proc in procs:
        proc.stop()


class Publisher:
    """Publishes name:0, name:1, ... until stopped, one at a time, on a keep-alive session to nginx.

    `keyed`: to roll/<name> with an Idempotency-Key; a publish not answered 200 is sent again under the
    same key until it is. `plain` (what curl does) and `progress` (POST /progress/<name>, on jobs/<name>):
    no key, so an answer other than 200 is counted and the event given up, as it may or may not have
    been published."""

    def __init__(self, session: aiohttp.ClientSession, url: str, name: str, kind: str) -> None:
        self.session, self.url, self.name, self.kind = session, url, name, kind
        self.acknowledged: list[str] = []
        self.answers: collections.Counter[int | str] = collections.Counter()

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            data = f"{self.name}:{n}"
            headers = {"Idempotency-Key": data} if self.kind == "keyed" else {}
            while not await self.publish(data, headers) and self.kind == "keyed":
                await asyncio.sleep(0.05)  # through the restart: the same key until acknowledged
            n += 1
            await asyncio.sleep(0.005)

    async def publish(self, data: str, headers: dict[str, str]) -> bool:
        if self.kind == "progress":
            path, body = f"/progress/{self.name}", {"current": 1, "total": 2, "message": data}
        else:
            path, body = "/publish", {"topic": f"roll/{self.name}", "data": data}
        try:
            async with self.session.post(self.url + path, json=body, headers=headers) as resp:
                await resp.read()
                self.answers[resp.status] += 1
                if resp.status == 200:
                    self.acknowledged.append(data)
                    return True
        except aiohttp.ClientError as exc:  # nginx itself stays up: this would be a finding
            self.answers[type(exc).__name__] += 1
        return False


KINDS = ("keyed", "plain", "keyed", "progress")


def publishers(
    session: aiohttp.ClientSession, url: str, prefix: str, count: int, kinds: tuple[str, ...] = KINDS
) -> list[Publisher]:
    """`count` publishers named after `prefix`, of `kinds` in turn."""
    return [Publisher(session, url, f"{prefix}-{n}", kinds[n % len(kinds)]) for n in range(count)]


async def _restart(replica: HubProcess, session: aiohttp.ClientSession, url: str, n: int) -> list[Publisher]:
    """SIGTERM, off the event loop (publishers and subscribers keep going meanwhile), with a surge of
    publishes around it, then start it again and wait until it is ready; the surge's publishers.

    The surge: requests nginx writes on kept-alive connections at the moment the replica closes them,
    which a steady trickle of publishes meets only now and then."""
    surge = publishers(session, url, f"surge{n}", SURGE)
    over = asyncio.Event()
    surging = [asyncio.create_task(p.run(over)) for p in surge]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    code = await asyncio.to_thread(replica.stop)
    drained = time.monotonic() - started
    over.set()
    await asyncio.gather(*surging)
    assert code == 0  # it drains, exits 0...
    assert drained < SHUTDOWN_TIMEOUT + 2  # ...within its timeout
    replica.start()
    await replica.ready()
    return surge


class Watch:
    """Subscribers to roll/* through nginx, each collecting the data of the events it receives until
    "end"; opened, and seen open, before anything is published, so that they must miss nothing."""

    def __init__(self, client: HubClient, count: int = 4) -> None:
        self.subscriptions = [client.subscribe("roll/*", "jobs/*", heartbeat_timeout=3) for _ in range(count)]
        self.received: list[list[str]] = [[] for _ in self.subscriptions]
        self._readers: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        self._readers = [
            asyncio.create_task(self._collect(s, into))
            for s, into in zip(self.subscriptions, self.received, strict=True)
        ]
        async with asyncio.timeout(10):
            while not all(s.connections for s in self.subscriptions):
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the stream's first bytes, after which nothing it should get is missed

    @staticmethod
    async def _collect(subscription: Subscription, into: list[str]) -> None:
        async for event in subscription:
            assert event.event != "reset", "continuity was lost"
            into.append(json.loads(event.data)["message"] if event.event == "progress" else event.data)
            if event.data == "end":
                return

    async def end(self, session: aiohttp.ClientSession, url: str) -> None:
        """Publish "end", wait until every subscriber has it (or 30 s), close them."""
        ender = Publisher(session, url, "end", "keyed")
        while not await ender.publish("end", {"Idempotency-Key": "roll-end"}):
            await asyncio.sleep(0.05)
        _done, late = await asyncio.wait(self._readers, timeout=30)
        missing = [
            f"#{i}: {len(got)} events, last {got[-3:]}, {s.connections} connections, "
            f"{s.failures} failures in a row, {s.stalls} stalls"
            for i, (got, s, r) in enumerate(
                zip(self.received, self.subscriptions, self._readers, strict=True)
            )
            if r in late
        ]
        for reader in late:
            reader.cancel()
        for subscription in self.subscriptions:
            await subscription.aclose()
        assert not missing, f"streams without the last event: {'; '.join(missing)}"


def check(tmp_path: Path, title: str, publishers: list[Publisher], watch: Watch) -> None:
    """Every request nginx took answered without a 5xx, every publish 200, and every subscriber with
    each publisher's acknowledged events, once each, in order."""
    log = access_log(tmp_path)
    answered = collections.Counter(
        (method, "/progress/{job}" if path.startswith("/progress/") else path, status)
        for status, method, path, _ in log
    )
    retried = sum(1 for *_, upstream in log if "," in upstream)
    kinds = {
        kind: dict(sum((p.answers for p in publishers if p.kind == kind), collections.Counter()))
        for kind in sorted(set(KINDS))
    }
    print(
        f"{title}: publishes answered {kinds}; nginx answered {dict(answered)}; "
        f"sent again to the other replica {retried}"
    )
    failed = {key: n for key, n in answered.items() if key[2] >= 500}
    assert not failed, f"nginx answered {failed} (all: {dict(answered)})"
    for publisher in publishers:
        assert set(publisher.answers) == {200}, f"{publisher.name}: {publisher.answers}"
    for got in watch.received:
        assert got[-1] == "end"
        for publisher in publishers:
            mine = [data for data in got if data.startswith(publisher.name + ":")]
            twice = [data for data, n in collections.Counter(mine).items() if n > 1]
            assert not twice, f"published twice: {twice}"
            assert mine == publisher.acknowledged, f"{publisher.name}: not every event, or not in order"


@pytest.mark.parametrize(("gap", "restarts"), [(1.0, 3), (5.0, 2)], ids=["1s-apart", "5s-apart"])
async def test_rolling_restarts_behind_nginx_answer_every_request_and_lose_nothing(
    replicas, tmp_path, gap, restarts
):
    """With nginx's defaults (max_fails=1, fail_timeout=10s) the replica just back still counted as
    down when the next one drained: 502s for seconds. A request nginx wrote on a keep-alive connection
    the draining replica was closing was a 502 too, unless nginx could send it again: a publish only
    with a key (the replicas share its record on Redis), buffered; a stream only if buffered."""
    await asyncio.gather(*(r.ready() for r in replicas))
    with nginx_in_front(tmp_path, [r.port for r in replicas]) as url:
        async with HubClient(url) as client, aiohttp.ClientSession() as session:
            watch = Watch(client)
            await watch.open()
            steady = publishers(session, url, "steady", STEADY)
            stop = asyncio.Event()
            publishing = [asyncio.create_task(p.run(stop)) for p in steady]
            await asyncio.sleep(0.5)
            surges: list[Publisher] = []
            for n in range(restarts):
                surges += await _restart(replicas[n % len(replicas)], session, url, n)
                await asyncio.sleep(gap if n < restarts - 1 else 0.5)  # events flow through it too
            stop.set()
            await asyncio.gather(*publishing)
            await watch.end(session, url)
    check(tmp_path, f"{restarts} restarts {gap:g} s apart", steady + surges, watch)
    for publisher in steady:
        assert len(publisher.acknowledged) > 50 * restarts
    assert sum(s.connections for s in watch.subscriptions) > len(watch.subscriptions)  # streams moved


async def test_a_publish_a_killed_replica_ran_is_answered_by_the_other_and_published_once(
    replicas, redis_server, tmp_path
):
    """Publishes a replica had sent to Redis when it froze (SIGSTOP), then died (SIGKILL), unanswered:
    nginx sends each again to the other replica, which answers the first one's ids from the record of
    its Idempotency-Key (the client's, or the one nginx made up) rather than publish it twice."""
    await asyncio.gather(*(r.ready() for r in replicas))
    victim = replicas[0]
    assert victim.proc is not None
    assert redis_server.proc is not None
    with nginx_in_front(tmp_path, [r.port for r in replicas]) as url:
        async with HubClient(url) as client, aiohttp.ClientSession() as session:
            watch = Watch(client)
            await watch.open()
            # Not progress: a report a replica may have run and died without answering is a 502.
            many = publishers(session, url, "kill", SURGE, ("keyed", "plain"))
            stop = asyncio.Event()
            publishing = [asyncio.create_task(p.run(stop)) for p in many]
            await asyncio.sleep(0.3)
            # Redis paused a moment, so that the replica's publishes wait in it, sent; the replica
            # frozen; Redis runs them; then the replica dies without a word about them.
            redis_server.proc.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(0.2)
                victim.proc.send_signal(signal.SIGSTOP)
            finally:
                redis_server.proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(victim.kill)
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*publishing)
            await watch.end(session, url)
    check(tmp_path, "a replica killed", many, watch)


def _connect_until(port: int, stop: threading.Event, outcomes: collections.Counter[str]) -> None:
    """New connections, one after another, each sending a request: what became of each."""
    request = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        with socket.socket() as sock:
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError as exc:  # refused (or reset in the handshake): nothing was sent
                outcomes[f"not connected: {type(exc).__name__}"] += 1
                continue
            try:
                sock.sendall(request)
                outcomes["answered" if sock.recv(12) == b"HTTP/1.1 200" else "other answer"] += 1
            except OSError as exc:  # sent, and reset: nginx may not send a POST again
                outcomes[f"sent, then {type(exc).__name__}"] += 1


async def test_a_draining_replica_answers_each_new_connection_or_refuses_it_never_resets_it(replicas):
    """The drain accepted the connections the kernel had completed, then awaited, then stopped
    listening: one completed meanwhile was reset once its request was sent (1-3 of ~4,500 in each of 8
    rounds), which nginx may not send again if it is a POST (a progress report: a 502)."""
    replica = replicas[0]
    for _ in range(2):
        await replica.ready()
        stop, outcomes = threading.Event(), collections.Counter[str]()
        threads = [
            threading.Thread(target=_connect_until, args=(replica.port, stop, outcomes)) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        try:
            await asyncio.sleep(0.2)
            assert await asyncio.to_thread(replica.stop) == 0
            await asyncio.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert outcomes["answered"] > 0
        assert outcomes["not connected: ConnectionRefusedError"] > 0
        assert not [what for what in outcomes if what.startswith("sent, then")], dict(outcomes)
        replica.start()
