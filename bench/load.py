"""The load benchmark: the hub against a ceiling, a baseline and Nchan, same scenarios, same run.

Each server is pinned to core 0 and the C load generator (bench/loadgen.c, built here with cc) to core
1; Redis, where a scenario needs it, shares the generator's core. Runs are interleaved (hub, ceiling,
baseline, Nchan, then the next scenario, then the next round) and the table shows medians, with the
hub's ratio to each reference, so that the machine's drift over the hour moves them all alike. A
generator above 90% of its core marks the result as generator-bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import nchan
from bench.processes import RedisCluster
from hub.http.auth import mint

HERE = Path(__file__).parent
BUILD = HERE / ".build"
HUB_CORE, LOAD_CORE = "0", "1"
# Throughput scenarios (rate 0): the generator waits between read rounds as long as the last round took,
# at most this long, so that each read drains several frames. Latency scenarios read at once.
READ_WINDOW_MS = 50


@dataclass(frozen=True)
class Scenario:
    name: str
    subs: int
    events: int
    topics: int = 1
    batch: int = 1
    pipeline: int = 16
    rate: int = 0
    size: int = 64
    hold: float = 0.0  # idle: keep connections open this long, measure memory
    two_hubs: bool = False  # redis: subscribers split over two hub processes on one Redis
    redis: bool = False  # the hub runs on Redis (always, with two_hubs)
    cluster: bool = False  # ...on a Redis Cluster of three primaries instead of one Redis
    primaries: int = 3  # the cluster's
    partitions: int = 0  # the hub's redis.partitions on a cluster (0: its default)
    # Publisher connections: fewer than the topics, they split the topics (each topic keeps one order);
    # more, they all publish to every topic and order is checked per publisher.
    pubconns: int = 1
    timeout: float = 60.0
    # The hub with auth on: publishers send a Bearer token, subscribers a ?token= (verified once per
    # token, then cached, as the hub does)
    auth: bool = False
    # Each event a binary publish of its own (application/octet-stream), read as base64 SSE: the hub's
    # alone, so its figures compare with the same scenario's text one in the same run
    binary: bool = False


CLUSTER_PUBLISH = Scenario(
    "cluster-publish",
    subs=200,
    events=40_000,
    topics=200,
    batch=50,
    pipeline=8,
    pubconns=4,
    redis=True,
    cluster=True,
)
NOTIFY = Scenario("notify", subs=2000, events=20_000, topics=2000, pipeline=1, pubconns=4, auth=True)
SCENARIOS = {
    s.name: s
    for s in [
        # 64 publishers, each posting its next event once the last is answered (as HTTP clients do):
        # "as fast as they are accepted" by the server, not as fast as one client's round trips go.
        Scenario("fanout", subs=1000, events=2000, pubconns=64, pipeline=1),
        Scenario("fanout-10k", subs=10_000, events=200),
        Scenario("latency", subs=1000, events=1000, rate=100),
        Scenario("topics", subs=2000, events=20_000, topics=2000, batch=50, pipeline=8, pubconns=4),
        Scenario("idle", subs=10_000, events=0, hold=3.0),
        Scenario("idle-50k", subs=50_000, events=0, hold=3.0, timeout=120.0),
        Scenario("redis", subs=1000, events=2000, pubconns=64, pipeline=1, two_hubs=True),
        Scenario(
            "redis-cluster", subs=1000, events=2000, pubconns=64, pipeline=1, two_hubs=True, cluster=True
        ),
        # acknowledged publishes from one hub process into Redis, batched as publishers do
        Scenario(
            "redis-publish", subs=200, events=40_000, topics=200, batch=50, pipeline=8, pubconns=4, redis=True
        ),
        CLUSTER_PUBLISH,
        # A notification service: many backend requests, each ONE event to ONE user's topic, each
        # waiting for its answer before the next (no pipelining, no batching).
        NOTIFY,
        replace(NOTIFY, name="notify-redis", redis=True),
        # The same services sending bytes (a frame, a chunk) one request each, and a burst of them
        # fanned out: what binary events cost against `notify` and `fanout`.
        replace(NOTIFY, name="notify-binary", binary=True),
        Scenario("fanout-binary", subs=1000, events=2000, pubconns=64, pipeline=1, binary=True),
        # the cluster broker on a one-node cluster with one partition: could one Redis be this code?
        replace(CLUSTER_PUBLISH, name="cluster1-publish", primaries=1, partitions=1),
    ]
}
SERVERS = ("hub", "ceiling", "baseline", "nchan")
REFERENCES = (*SERVERS[1:], "before")


def build_loadgen() -> Path:
    BUILD.mkdir(exist_ok=True)
    binary = BUILD / "loadgen"
    source = HERE / "loadgen.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise SystemExit("the benchmark builds its load generator with cc: apt-get install gcc")
        subprocess.run([cc, "-O2", "-pthread", "-o", str(binary), str(source)], check=True)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def family(pid: int) -> list[int]:
    """`pid` and its descendants: nginx serves from a worker process that its master started."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += parents.get(found[-1], [])
    return found


@contextlib.contextmanager
def process(*cmd: str, core: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["taskset", "-c", core, *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        yield proc
    finally:
        stop(proc, 10)
        if proc.stderr is not None:
            proc.stderr.close()


def stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, and SIGKILL after `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    cmd = ("redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir,
           "--maxclients", "60000", "--bind", "127.0.0.1")  # fmt: skip
    with process(*cmd, core=LOAD_CORE):
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}"
    shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_cluster(primaries: int = 3) -> Iterator[RedisCluster]:
    """Three primaries (or `primaries`), on the generator's core like the single Redis."""
    cluster = RedisCluster(primaries, 0, args=("--maxclients", "60000")).start()
    try:
        for node in cluster.nodes:
            assert node.proc is not None
            subprocess.run(["taskset", "-pc", LOAD_CORE, str(node.proc.pid)], check=True, capture_output=True)
        yield cluster
    finally:
        cluster.close()


def server_cmd(server: str, port: int, redis_url: str | None, hub_python: str | None = None) -> list[str]:
    python = sys.executable
    if is_hub(server):
        # -P: the hub of `hub_python`'s checkout, not the one in the working directory
        cmd = [hub_python, "-P"] if hub_python else [python]
        cmd += ["-m", "hub", "serve", "--port", str(port)]
        return cmd + (["--redis", redis_url] if redis_url else [])
    if server == "ceiling":
        return [python, str(HERE / "ceiling" / "server.py"), str(port)]
    assert redis_url is not None
    return [python, str(HERE / "baseline" / "server.py"), str(port), redis_url]


def is_hub(server: str) -> bool:
    """The hub, or `before`: the hub of another checkout (`--before PYTHON`), to measure a change."""
    return server in ("hub", "before")


def on_redis(server: str, scenario: Scenario) -> bool:
    """The baseline always runs on Redis; the hub and Nchan in the scenarios that say Redis."""
    splits = is_hub(server) or server == "nchan"
    return server == "baseline" or (splits and (scenario.two_hubs or scenario.redis))


def takes_part(server: str, scenario: Scenario) -> bool:
    if scenario.binary:
        return server == "hub"  # nothing else here takes bytes (nor did the hub before them)
    if server == "baseline" and scenario.name.startswith("idle-50k"):
        return False  # 50,000 Redis connections: not a fair fight, and not one Redis allows
    # Nchan speaks to a Redis Cluster too, but here it has one Redis or memory, no cluster set up for it
    return not (server == "nchan" and scenario.cluster)


def protocol(server: str, scenario: Scenario) -> list[str]:
    """How the generator speaks to `server`: Nchan's own paths, the hub's binary publishes, or JSON."""
    if server == "nchan":
        return ["--proto", "nchan"]
    return ["--proto", "binary"] if scenario.binary else []


def wait_serving(proc: subprocess.Popen[bytes], port: int, timeout: float = 15.0) -> None:
    """Like wait_for_port, but a server that exits (a bad config, a missing module) says why at once."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    if proc.poll() is not None and proc.stderr is not None:
        err = proc.stderr.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"the server meant for {port} exited ({proc.returncode}): {err}")
    raise RuntimeError(f"nothing listens on {port}")


@dataclass
class Result:
    server: str
    scenario: str
    figures: dict[str, float] = field(default_factory=dict)


def auth_options(env: dict[str, str]) -> list[str]:
    """Auth on for the hub (`env`), and what the load generator then sends: a publisher's Bearer token,
    a subscriber's ?token=."""
    secret = "bench-secret-of-at-least-32-bytes-long"
    env["HUB_AUTH_JWT_SECRET"] = secret
    publisher = mint(publish=["**"], secret=secret)
    subscriber = mint(subscribe=["**"], secret=secret)
    return ["--auth", publisher, "--path", "/events?topic=t%d&token=" + subscriber]


def run_once(loadgen: Path, server: str, scenario: Scenario, hub_python: str | None = None) -> Result:
    """One run; `hub_python` runs the `before` server (`is_hub`)."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if scenario.subs + 1000 > limit:
        raise RuntimeError(f"needs {scenario.subs + 1000} open files, and this machine allows {limit}")
    needs_redis = on_redis(server, scenario)
    with contextlib.ExitStack() as stack:
        redis_url = None
        if needs_redis:
            if scenario.cluster and is_hub(server):
                redis_url = stack.enter_context(redis_cluster(scenario.primaries)).url
            else:
                redis_url = stack.enter_context(redis_server())
        two = scenario.two_hubs and (is_hub(server) or server == "nchan")
        ports = [free_port()] + ([free_port()] if two else [])
        # Every subscriber comes from this one address: no per-address stream limit.
        env = {
            "HUB_LIMITS_MAX_BODY_BYTES": str(64 * 1024 * 1024),
            "HUB_LIMITS_MAX_BATCH": "10000",
            "HUB_LIMITS_MAX_CONNECTIONS_PER_IP": "0",
        }
        if scenario.partitions:
            env["HUB_REDIS_PARTITIONS"] = str(scenario.partitions)
        client = auth_options(env) if scenario.auth and is_hub(server) else []
        procs = []
        for port in ports:
            if server == "nchan":
                # subscribers and publishers, and to spare: Redis, and the pipes and fake connections
                # of Nchan's own (10,000 subscribers did not fit in 10,257 connections)
                connections = scenario.subs + scenario.pubconns + 2048
                cmd = stack.enter_context(nchan.configured(port, redis_url, connections))
            else:
                cmd = server_cmd(server, port, redis_url, hub_python if server == "before" else None)
            procs.append(stack.enter_context(process(*cmd, core=HUB_CORE, env=env)))
        for proc, port in zip(procs, ports, strict=True):
            wait_serving(proc, port)
        time.sleep(0.3)
        # Every process serving (nginx: its master and its worker), found once, before the timed part.
        pids = [pid for proc in procs for pid in family(proc.pid)]
        rss0 = sum(map(rss_kib, pids))
        cpu0 = sum(map(cpu_seconds, pids))
        cmd = [
            "taskset", "-c", LOAD_CORE, str(loadgen), "--port", str(ports[0]),
            "--subs", str(scenario.subs), "--topics", str(scenario.topics),
            "--events", str(scenario.events), "--batch", str(scenario.batch),
            "--pipeline", str(scenario.pipeline), "--rate", str(scenario.rate),
            "--size", str(scenario.size), "--timeout", str(scenario.timeout),
            "--pubconns", str(scenario.pubconns),
            "--source-ips", str(max(1, scenario.subs // 20_000 + 1)),
        ]  # fmt: skip
        if len(ports) > 1:
            cmd += ["--split-port", str(ports[1])]
        cmd += protocol(server, scenario) + client
        if scenario.rate == 0:
            cmd += ["--read-window-ms", str(READ_WINDOW_MS)]
        if scenario.hold:
            cmd += ["--hold", str(scenario.hold)]
            gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            assert gen.stdout is not None
            line = gen.stdout.readline()
            if not line:
                gen.wait()
                raise RuntimeError(f"{server}/{scenario.name}: not every connection opened")
            opened = json.loads(line)
            time.sleep(scenario.hold / 2)
            rss1 = sum(map(rss_kib, pids))
            gen.wait()
            per_conn = (rss1 - rss0) / max(1, opened["opened"])
            return Result(server, scenario.name, {
                "connections": opened["opened"], "rss_mib": rss1 / 1024,
                "kib_per_connection": round(per_conn, 2),
            })  # fmt: skip
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert gen.stdout is not None
        if gen.stdout.readline().strip():  # the publish phase starts: count server CPU from here
            cpu0 = sum(map(cpu_seconds, pids))
        stdout, stderr = gen.communicate(timeout=scenario.timeout + 60)
        if gen.returncode != 0 or not stdout.strip():
            raise RuntimeError(f"{server}/{scenario.name}: load generator failed: {stderr[-500:]}")
        figures = json.loads(stdout)
        # Over the generator's own run time: the wall clock here also covers its sorting and exit.
        cpu = sum(map(cpu_seconds, pids)) - cpu0
        figures["server_cpu_pct"] = round(100 * cpu / max(figures["seconds"], 1e-9), 1)
        # Deliveries per second of server CPU: what a core buys, whatever the generator and the
        # machine's noise allowed the run to reach.
        figures["deliveries_per_cpu_s"] = round(figures["delivered"] / max(cpu, 1e-9))
        figures["rss_mib"] = round(sum(map(rss_kib, pids)) / 1024, 1)
        figures["generator_cpu_pct"] = round(100 * figures["generator_cpu_s"] / figures["seconds"], 1)
        return Result(server, scenario.name, figures)


COLUMNS = {
    "default": [
        ("deliveries_per_s", "deliveries/s", "{:,.0f}"),
        ("publishes_per_s", "publishes/s", "{:,.0f}"),
        ("p50_ms", "p50 ms", "{:.1f}"),
        ("p99_ms", "p99 ms", "{:.1f}"),
        ("max_ms", "max ms", "{:.1f}"),
        ("lost", "lost", "{:.0f}"),
        ("duplicated", "dup", "{:.0f}"),
        ("out_of_order", "ooo", "{:.0f}"),
        ("server_cpu_pct", "server CPU %", "{:.0f}"),
        ("deliveries_per_cpu_s", "deliveries/CPU-s", "{:,.0f}"),
        ("rss_mib", "RSS MiB", "{:.0f}"),
        ("generator_cpu_pct", "generator CPU %", "{:.0f}"),
    ],
    "idle": [
        ("connections", "connections", "{:,.0f}"),
        ("kib_per_connection", "KiB/connection", "{:.2f}"),
        ("rss_mib", "RSS MiB", "{:.0f}"),
    ],
}


def table(results: list[Result], scenarios: list[str], servers: list[str]) -> str:
    lines = []
    for name in scenarios:
        kind = "idle" if name.startswith("idle") else "default"
        cols = COLUMNS[kind]
        lines.append(f"\n### {name}\n")
        lines.append("| server | " + " | ".join(c[1] for c in cols) + " | runs |")
        lines.append("|---" * (len(cols) + 2) + "|")
        medians: dict[str, dict[str, float]] = {}
        for server in servers:
            runs = [r.figures for r in results if r.server == server and r.scenario == name]
            if not runs:
                continue
            med = {key: statistics.median(run.get(key, 0) for run in runs) for key, _, _ in cols}
            medians[server] = med
            flag = " (generator-bound)" if med.get("generator_cpu_pct", 0) > 90 else ""
            cells = [fmt.format(med[key]) for key, _, fmt in cols]
            lines.append(f"| {server}{flag} | " + " | ".join(cells) + f" | {len(runs)} |")
        key = "kib_per_connection" if kind == "idle" else "deliveries_per_s"
        hub = medians.get("hub", {}).get(key)
        for ref in REFERENCES:
            if hub and medians.get(ref, {}).get(key):
                lines.append(f"\nhub / {ref}: **{hub / medians[ref][key]:.2f}x** ({key})")
    return "\n".join(lines)


def _medians(results: list[Result], scenario: str, server: str, keys: list[str]) -> dict[str, float] | None:
    runs = [r.figures for r in results if r.server == server and r.scenario == scenario]
    if not runs:
        return None
    return {key: statistics.median(run.get(key, 0) for run in runs) for key in keys}


def summary(results: list[Result], scenarios: list[str], servers: list[str]) -> str:
    """One row per scenario: each server's throughput (idle: KiB per connection), the hub's ratio to each
    reference, the p99s and the hub's lost, duplicated and reordered counts. A dash: no run succeeded."""
    refs = [s for s in REFERENCES if s in servers]
    shown = [s for s in ("hub", *refs) if s in servers]
    head = ["scenario", *shown, *(f"hub / {ref}" for ref in refs)]
    head.append("p99 ms: " + ", ".join(shown))
    head.append("hub lost, dup, ooo")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    keys = ["deliveries_per_s", "kib_per_connection", "p99_ms", "lost", "duplicated", "out_of_order"]
    for name in scenarios:
        idle = name.startswith("idle")
        key, fmt = ("kib_per_connection", "{:.2f}") if idle else ("deliveries_per_s", "{:,.0f}")
        med = {server: _medians(results, name, server, keys) for server in shown}
        cells = [f"{name} (KiB/connection)" if idle else name]
        cells += [fmt.format(m[key]) if m else "-" for m in med.values()]
        hub = med.get("hub")
        for ref in refs:
            other = med[ref]
            cells.append(f"**{hub[key] / other[key]:.2f}x**" if hub and other and other[key] else "-")
        if idle:
            cells += ["", ""]
        else:
            cells.append(", ".join(f"{m['p99_ms']:.1f}" if m else "-" for m in med.values()))
            counts = (hub["lost"], hub["duplicated"], hub["out_of_order"]) if hub else None
            cells.append(", ".join(f"{n:.0f}" for n in counts) if counts else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_between(text: str, marker: str, body: str) -> str:
    """`text` with what lies between `<!-- bench:MARKER:start -->` and its end marker replaced by `body`:
    BENCHMARKS.md's definitions and history are written by hand, only the figures by the benchmark."""
    start, end = f"<!-- bench:{marker}:start -->\n", f"<!-- bench:{marker}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"BENCHMARKS.md has no {start.strip()} ... {end} section to write the figures into")
    before, rest = text.split(start, 1)
    return before + start + body.strip("\n") + "\n" + end + rest.split(end, 1)[1]


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def main(scenarios: list[str], servers: list[str], runs: int, write: bool, before: str | None = None) -> int:
    """`before`: the Python of another checkout's venv, whose hub runs as the server `before`, interleaved
    with the rest: a change measured against what it changed, in the same minutes."""
    products = [server for server in servers if server != "before"]
    if before is not None and "before" not in servers:
        servers = [*servers, "before"]
    # The benchmark raises the file limit for itself and the servers it starts, not the hub's code.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200_000, 200_000))  # root may raise the hard limit
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loadgen = build_loadgen()
    results: list[Result] = []
    # Scenarios are interleaved too (fanout, redis, fanout, redis...): a target relating two scenarios
    # compares runs of the same minutes.
    for n in range(runs):
        for name in scenarios:
            for server in servers:
                if not takes_part(server, SCENARIOS[name]):
                    continue
                try:
                    result = run_once(loadgen, server, SCENARIOS[name], before)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"  {name} run {n + 1} {server}: FAILED {exc}", file=sys.stderr)
                    continue
                results.append(result)
                shown = {k: v for k, v in result.figures.items() if k in dict.fromkeys(
                    ["deliveries_per_s", "publishes_per_s", "p99_ms", "lost", "kib_per_connection",
                     "server_cpu_pct", "generator_cpu_pct"])}  # fmt: skip
                print(f"  {name} run {n + 1} {server}: {shown}", file=sys.stderr)
    report = table(results, scenarios, servers)
    header = f"Machine: {machine()}. Medians of {runs} interleaved runs, {time.strftime('%Y-%m-%d')}.\n"
    overview = header + "\n" + summary(results, scenarios, servers)
    print(overview + "\n" + report)
    if write:
        # The hub against the reference servers; a `before` hub measured a change, not the product.
        overview = header + "\n" + summary(results, scenarios, products)
        path = HERE.parent / "BENCHMARKS.md"
        text = replace_between(path.read_text(), "table", overview)
        path.write_text(replace_between(text, "details", table(results, scenarios, products)))
    return 0
