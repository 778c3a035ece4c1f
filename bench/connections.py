"""`python -m bench connections`: tens of thousands of concurrent SSE streams on one machine, with no
process above the machine's open-file limit.

One redis-server, `hub serve --workers N --redis ...` (the workers share the port with SO_REUSEPORT), and
G load generators (bench/loadgen.c with --await-event), each opening its share of the streams from
several 127.0.0.x source addresses. Every process keeps the hard open-file limit it was given (the soft
limit is raised to it, never above): no process needs more, because none holds more than its share.
Once every generator has opened its streams, ONE event is published once, and every stream must receive
it. Measured: the time until all streams are open (the slowest generator's), the workers' RSS before and
after (summed over them) and per stream, how the kernel spread the streams over the workers, and how
long the last stream waited for the event after it was published.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.load import build_loadgen, rss_kib, stop
from bench.processes import RedisProcess
from hub.http.limits import budget_for
from hub.http.server import free_port

# A generator's descriptors beyond its streams: stdio, epoll, the loader's.
GENERATOR_RESERVE = 64
# Each source address has the ephemeral port range (about 28,000 ports) to itself for the hub's port;
# at most this many streams per address leaves room for TIME_WAITs of earlier runs.
STREAMS_PER_ADDRESS = 8000
START_TIMEOUT = 60.0


@dataclass
class Run:
    subs: int
    workers: int
    generators: int
    connect_s: float = 0.0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    per_worker: list[int] = field(default_factory=list)
    received: int = 0
    publish_to_first_ms: float = 0.0
    publish_to_last_ms: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / max(1, sum(self.per_worker) or self.subs)

    @property
    def ok(self) -> bool:
        return not self.failures and self.received == self.subs

    def figures(self) -> dict[str, Any]:
        return {
            "subs": self.subs,
            "workers": self.workers,
            "generators": self.generators,
            "connect_s": round(self.connect_s, 3),
            "rss_before_mib": round(self.rss_before_kib / 1024, 1),
            "rss_after_mib": round(self.rss_after_kib / 1024, 1),
            "kib_per_connection": round(self.kib_per_connection, 2),
            "per_worker": self.per_worker,
            "received": self.received,
            "publish_to_first_ms": round(self.publish_to_first_ms, 1),
            "publish_to_last_ms": round(self.publish_to_last_ms, 1),
            "failures": self.failures,
        }


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` as evenly as integers go."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def hold_hard_limit() -> int:
    """Raise this process's soft open-file limit to its hard one (never above), for it and what it
    starts; the hard limit is returned."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return 1_000_000 if hard == resource.RLIM_INFINITY else hard


def check_fits(subs: int, workers: int, generators: int, limit: int) -> list[str]:
    """Why this split cannot work under `limit` open files per process (empty: it can, if the kernel
    spreads the streams evenly over the workers)."""
    problems = []
    if max(shares(subs, generators)) + GENERATOR_RESERVE > limit:
        problems.append(
            f"a generator would hold {max(shares(subs, generators))} streams: use more generators"
        )
    if -(-subs // workers) > budget_for(limit):
        problems.append(
            f"a worker would hold {-(-subs // workers)} streams even if spread evenly: use more workers"
        )
    return problems


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def worker_pids(hub_pid: int) -> list[int]:
    """The `hub serve --workers` process's workers: its spawned children (not multiprocessing's
    resource tracker, also its child)."""
    pids = []
    for pid in children(hub_pid):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return sorted(pids)


def established_inodes(port: int) -> set[str]:
    """Socket inodes of the established TCP connections whose local port is `port`."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    return inodes


def streams_per_worker(pids: Sequence[int], port: int) -> list[int]:
    """How many of the port's established connections each worker holds (its sockets, from /proc)."""
    inodes = established_inodes(port)
    counts = []
    for pid in pids:
        held = 0
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                link = os.readlink(fd_dir / fd)
                held += link.startswith("socket:[") and link[8:-1] in inodes
        counts.append(held)
    return counts


@contextlib.contextmanager
def hub_workers(port: int, redis_url: str, workers: int) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`hub serve --workers N` on `port`, once every worker has said it is ready (before that, the
    kernel would give the ready ones every connection)."""
    log = Path(tempfile.mkstemp(prefix="bench-hub-", suffix=".log")[1])
    env = {
        **os.environ,
        "HUB_LIMITS_MAX_CONNECTIONS_PER_IP": "0",  # the generators' few addresses hold every stream
        "HUB_LIMITS_MAX_HTTP_CONNECTIONS_PER_IP": "0",
    }
    cmd = [sys.executable, "-m", "hub", "serve", "--port", str(port), "--redis", redis_url]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--workers", str(workers)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while log.read_bytes().count(b"hub ready on") < workers:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the hub's workers did not all start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield proc, log
    finally:
        stop(proc, 30)
        log.unlink(missing_ok=True)


def source_from(generator: int) -> str:
    """The first source address of a generator's own range of loopback addresses (127.64.0.0/10 is
    all loopback and, unlike 127.0.0.x, not where other benchmarks' connections come from)."""
    return str(ipaddress.IPv4Address("127.64.0.1") + 256 * generator)


def start_generators(
    loadgen: Path, port: int, subs: int, generators: int, timeout: float
) -> list[subprocess.Popen[str]]:
    addresses = max(1, -(-max(shares(subs, generators)) // STREAMS_PER_ADDRESS))
    common = ["--port", str(port), "--topics", "1", "--events", "0", "--timeout", str(timeout),
              "--source-ips", str(addresses), "--await-event", str(timeout)]  # fmt: skip
    return [
        subprocess.Popen(
            [str(loadgen), *common, "--subs", str(n), "--source-from", source_from(g)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for g, n in enumerate(shares(subs, generators))
    ]


def read_line(gen: subprocess.Popen[str]) -> dict[str, Any] | None:
    assert gen.stdout is not None
    line = gen.stdout.readline()
    return json.loads(line) if line.strip() else None


def why_failed(gen: subprocess.Popen[str]) -> str:
    if gen.poll() is None:
        gen.kill()
    gen.wait()
    stderr: IO[str] | None = gen.stderr
    return (stderr.read() if stderr is not None else "").strip()[-400:] or f"exit status {gen.returncode}"


def publish_one(port: int) -> None:
    """ONE event to the topic every stream reads, its data saying when it was sent (CLOCK_MONOTONIC,
    as the generators read it)."""
    body = json.dumps({"topic": "t0", "data": f"0 {time.monotonic_ns()}"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/publish", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"publish answered {response.status}: {answer[:200]!r}")


def run_once(loadgen: Path, subs: int, workers: int, generators: int, timeout: float) -> Run:
    run = Run(subs, workers, generators)
    redis = RedisProcess().start()
    try:
        port = free_port()
        with hub_workers(port, redis.url, workers) as (hub, log):
            pids = worker_pids(hub.pid)
            if len(pids) != workers:
                raise RuntimeError(f"found {len(pids)} workers under the hub, not {workers}")
            run.rss_before_kib = sum(rss_kib(pid) for pid in pids)
            gens = start_generators(loadgen, port, subs, generators, timeout)
            try:
                measure(run, gens, pids, port)
                if run.failures:
                    run.failures.append("the hub's log ends: " + log.read_text()[-1500:])
            finally:
                for gen in gens:
                    if gen.poll() is None:
                        gen.kill()
                    gen.wait()
                    for stream in (gen.stdout, gen.stderr):
                        if stream is not None:
                            stream.close()
    finally:
        redis.close()
    return run


def measure(run: Run, gens: list[subprocess.Popen[str]], pids: Sequence[int], port: int) -> None:
    opened = [read_line(gen) for gen in gens]
    # Counted whether or not every stream opened: a worker over its limit shows here.
    run.per_worker = streams_per_worker(pids, port)
    for gen, line in zip(gens, opened, strict=True):
        if line is None:
            run.failures.append(f"generator {gen.pid}: {why_failed(gen)}")
    if run.failures:
        return
    run.connect_s = max(line["connect_s"] for line in opened if line is not None)
    time.sleep(1.0)  # what opening left behind settles (buffers freed, collector run)
    run.rss_after_kib = sum(rss_kib(pid) for pid in pids)
    publish_one(port)
    for gen in gens:
        done = read_line(gen)
        if done is None:
            run.failures.append(f"generator {gen.pid}: {why_failed(gen)}")
            continue
        run.received += done["received"]
        if done["frames"]:
            first = done["first_ms"]
            run.publish_to_first_ms = min(run.publish_to_first_ms or first, first)
            run.publish_to_last_ms = max(run.publish_to_last_ms, done["last_ms"])
        if gen.wait() != 0:
            run.failures.append(f"generator {gen.pid}: {done['received']} of {done['subscribers']} received")


def main(subs: int, workers: int, generators: int, runs: int, timeout: float = 120.0) -> int:
    limit = hold_hard_limit()
    problems = check_fits(subs, workers, generators, limit)
    if problems:
        print(f"open-file limit {limit} per process: " + "; ".join(problems), file=sys.stderr)
        return 2
    loadgen = build_loadgen()
    results = []
    for n in range(runs):
        run = run_once(loadgen, subs, workers, generators, timeout)
        results.append(run)
        print(f"  run {n + 1}: {json.dumps(run.figures())}", file=sys.stderr)
    print(json.dumps(summary(results, limit)))
    return 0 if all(run.ok for run in results) else 1


def summary(results: Sequence[Run], limit: int) -> dict[str, Any]:
    good = [run for run in results if run.ok] or list(results)

    def median(key: str) -> float:
        return round(statistics.median(run.figures()[key] for run in good), 3)

    return {
        "runs": len(results),
        "all_received": all(run.ok for run in results),
        "open_file_limit": limit,
        "subs": results[0].subs,
        "workers": results[0].workers,
        "generators": results[0].generators,
        "connect_s": median("connect_s"),
        "kib_per_connection": median("kib_per_connection"),
        "rss_after_mib": median("rss_after_mib"),
        "publish_to_last_ms": median("publish_to_last_ms"),
        "most_per_worker": max(max(run.per_worker, default=0) for run in results),
        "worker_stream_limit": budget_for(limit),  # beyond it a worker answers 429
    }
