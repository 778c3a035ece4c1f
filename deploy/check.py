"""The container, proven: build the hub's image from the unchanged Dockerfile and run it, bring the
compose files up, on a Debian machine that reaches no image registry.

    python3 deploy/check.py [--skip-cluster] [--json]      (as root)

What it needs: root, Debian's docker.io, docker-compose and debootstrap (it installs them with apt-get
when missing, and starts dockerd when none answers), PyPI and Debian's archive (the image's build
installs the hub's dependencies from PyPI, as anywhere).

The base images the Dockerfile and the compose files name are made here when the machine has none:
a minimal bookworm root file system (debootstrap), imported, and from it stand-ins for
python:3.11-slim, redis:7, redis:7-alpine and nginx:1.27-alpine (`deploy/check/standins`), each labelled
as one. They stay, as a cache, for the next run; a machine that has the real images uses those.

Checks, each an assertion that stops the run:
- the image: its user is not root, /healthz answers, it turns healthy, an event published to it reaches
  a stream, and `docker stop` ends the stream with a `retry:` and the container within its grace
  period; no compiler or test dependency inside; its size and start time reported;
- docker-compose.yml: Redis, two hubs and nginx up; an event published through nginx reaches a
  subscriber on each hub; a hub killed and started again loses no acknowledged event for a subscriber
  that resumes on it;
- docker-compose.cluster.yml: the same first check on a Redis Cluster of six nodes.

Every container, network and volume it makes is removed at the end, whatever happened. Ports are
published on 127.0.0.1 only. The last line of its output is a JSON summary (with --json, the only one).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT / "deploy" / "check" / "standins"
BASE = "broadcast-hub-check/debian:bookworm"
IMAGE = "broadcast-hub-check/hub:latest"
LABEL = "org.broadcast-hub.check"
# Image names the Dockerfile and the compose files use, and the stand-in that takes each one's place.
STANDIN_FOR = {
    "python:3.11-slim": "python.Dockerfile",
    "redis:7-alpine": "redis.Dockerfile",
    "redis:7": "redis.Dockerfile",
    "nginx:1.27-alpine": "nginx.Dockerfile",
}
CACHE = Path("/var/cache/broadcast-hub-check")
# debootstrap's arguments for the base of every stand-in; its label, so that a change makes it again.
BASE_RECIPE = "--variant=minbase bookworm"
MIRROR = "http://deb.debian.org/debian"
GRACE = 15  # seconds `docker stop` gives the hub; its shutdown_timeout is 10 in the compose files
QUIET = False


def say(text: str) -> None:
    if not QUIET:
        print(f"check: {text}", flush=True)


def run(
    *args: str, check: bool = True, timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise CheckFailed(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


class CheckFailed(Exception):
    pass


def expect(condition: object, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


# The machine: tools, the daemon, base images


def ensure_tools() -> None:
    missing = [
        pkg
        for cmd, pkg in (
            ("dockerd", "docker.io"),
            ("docker-compose", "docker-compose"),
            ("debootstrap", "debootstrap"),
        )
        if shutil.which(cmd) is None
    ]
    if missing:
        say(f"installing {', '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "install", "-y", "-q", *missing, env=env)


def ensure_daemon() -> None:
    if run("docker", "info", check=False).returncode == 0:
        return
    say("starting dockerd")
    log = open(tempfile.gettempdir() + "/broadcast-hub-check-dockerd.log", "ab")  # noqa: SIM115
    subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while run("docker", "info", check=False).returncode != 0:
        expect(time.monotonic() < deadline, "dockerd did not answer within 60 s")
        time.sleep(0.5)


def has_image(name: str) -> bool:
    return run("docker", "image", "inspect", name, check=False).returncode == 0


def label_of(name: str) -> str | None:
    """The check's label on an image: the digest of what made a stand-in; None on others."""
    found = run("docker", "image", "inspect", "-f", "{{json .Config.Labels}}", name, check=False)
    if found.returncode != 0:
        return None
    labels = json.loads(found.stdout or "null") or {}
    return labels.get(LABEL, "")


def recipe(dockerfile: str) -> str:
    """What makes a stand-in, as a digest: a changed Dockerfile (or base recipe) builds it again."""
    digest = hashlib.sha256(BASE_RECIPE.encode())
    digest.update((STANDINS / dockerfile).read_bytes())
    digest.update((STANDINS / "redis-entrypoint.sh").read_bytes())
    return digest.hexdigest()[:16]


def ensure_base_images() -> dict[str, str]:
    """Each name the Dockerfile and compose files use: 'present' (the machine had it, from a
    registry), or 'stand-in' (made here, now or by an earlier run of the same recipe)."""
    made: dict[str, str] = {}
    wanted = []
    for name in STANDIN_FOR:
        label = label_of(name)
        if label is None or (label != "" and label != recipe(STANDIN_FOR[name])):
            wanted.append(name)  # missing, or a stand-in of another recipe
        else:
            made[name] = "present" if label == "" else "stand-in"
    if not wanted:
        return made
    if label_of(BASE) != BASE_RECIPE:
        say("making a minimal Debian bookworm root file system (debootstrap)")
        with tempfile.TemporaryDirectory() as root:
            (CACHE / "debs").mkdir(parents=True, exist_ok=True)
            *options, suite = BASE_RECIPE.split()
            run("debootstrap", *options, f"--cache-dir={CACHE / 'debs'}", suite, root, MIRROR)
            # What no container reads: documentation, manual pages, translations, package lists.
            for junk in (
                "usr/share/doc",
                "usr/share/man",
                "usr/share/info",
                "usr/share/locale",
                "var/lib/apt/lists",
                "var/cache/apt",
            ):
                for path in (Path(root) / junk).glob("*"):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            run("docker", "import", "--change", f'LABEL {LABEL}="{BASE_RECIPE}"', "-", BASE, stdin=tar.stdout)
            expect(tar.wait() == 0, "tar of the root file system failed")
    built: dict[str, str] = {}
    for name in wanted:
        dockerfile = STANDIN_FOR[name]
        if dockerfile in built:
            run("docker", "tag", built[dockerfile], name)
        else:
            say(f"building a stand-in for {name}")
            with tempfile.TemporaryDirectory() as context:
                ca = Path(context) / "ca"
                ca.mkdir()
                for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
                    shutil.copy(cert, ca)
                shutil.copy(STANDINS / "redis-entrypoint.sh", context)
                run(
                    "docker",
                    "build",
                    "-q",
                    "--label",
                    f"{LABEL}={recipe(dockerfile)}",
                    "-t",
                    name,
                    "-f",
                    str(STANDINS / dockerfile),
                    context,
                )
            built[dockerfile] = name
        made[name] = "stand-in"
    return made


# HTTP, with the standard library only


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def publish(port: int, topic: str, data: str, within: float = 30) -> str:
    """Publish as a careful client does: a 503 or 504 is retried under the same Idempotency-Key (a
    cluster just created answers 504 until its replicas have synced, with wait_replicas on)."""
    body = json.dumps({"topic": topic, "data": data})
    headers = {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
    deadline = time.monotonic() + within
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/publish", body, headers)
            resp = conn.getresponse()
            answer = resp.read()
        finally:
            conn.close()
        if resp.status == 200:
            return str(json.loads(answer)["id"])
        retry = resp.status in (503, 504) and time.monotonic() < deadline
        expect(retry, f"publish to {topic} answered {resp.status}: {answer[:200]!r}")
        time.sleep(0.5)


def wait_for(port: int, path: str, within: float) -> float:
    """Seconds until `path` answers 200."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(port, path, timeout=2)[0] == 200:
                return time.monotonic() - start
        expect(time.monotonic() - start < within, f"{path} on port {port} did not answer 200 in {within} s")
        time.sleep(0.1)


class Stream:
    """An SSE stream read as raw blocks: enough to see ids, data and a `retry:`."""

    def __init__(self, port: int, topic: str, last_event_id: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", f"/events?topic={topic}", headers=headers)
        self.resp = self.conn.getresponse()
        expect(self.resp.status == 200, f"/events?topic={topic} answered {self.resp.status}")
        self.buffer = b""
        self.blocks: list[bytes] = []
        self.read_block()  # the preamble: subscribed from here on

    def read_block(self) -> bytes | None:
        while b"\n\n" not in self.buffer:
            chunk = self.resp.read1(65536)
            if not chunk:
                return None
            self.buffer += chunk
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        self.blocks.append(block)
        return block

    def events(self, n: int) -> list[tuple[str, str]]:
        """The next `n` events' (id, data), heartbeats and other blocks skipped."""
        got: list[tuple[str, str]] = []
        while len(got) < n:
            block = self.read_block()
            expect(block is not None, f"the stream ended after {got}")
            assert block is not None
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
            if "data" in fields and "id" in fields:
                got.append((fields["id"], fields["data"]))
        return got

    def rest(self) -> bytes:
        """Everything until the stream ends."""
        while self.read_block() is not None:
            pass
        return b"\n\n".join(self.blocks) + self.buffer

    def close(self) -> None:
        self.conn.close()


# The image


def check_image(summary: dict[str, Any]) -> None:
    say("building the hub's image from the Dockerfile")
    started = time.monotonic()
    run("docker", "build", "-q", "--label", f"{LABEL}=image", "-t", IMAGE, str(ROOT))
    summary["build_s"] = round(time.monotonic() - started, 1)
    size = int(run("docker", "image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    base = int(run("docker", "image", "inspect", "-f", "{{.Size}}", "python:3.11-slim").stdout)
    summary["image_mb"] = round(size / 1e6, 1)
    summary["image_over_base_mb"] = round((size - base) / 1e6, 1)  # the hub and its dependencies
    user = run("docker", "image", "inspect", "-f", "{{.Config.User}}", IMAGE).stdout.strip()
    expect(user and user not in ("root", "0"), f"the image runs as {user or 'root'}")
    # Nothing to build with, nothing of the tests: the runtime dependencies only.
    probe = run(
        "docker",
        "run",
        "--rm",
        "--label",
        LABEL,
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        "for c in gcc cc make git; do command -v $c; done;"
        ' python -c \'import importlib.util as u; print([m for m in ("pytest", "hypothesis", "ruff",'
        ' "mypy", "playwright", "schemathesis") if u.find_spec(m)])\'',
        check=False,
    )
    expect(probe.stdout.strip() == "[]", f"build or test tools in the image: {probe.stdout.strip()}")

    port = free_port()
    name = f"broadcast-hub-check-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    run("docker", "run", "-d", "--name", name, "--label", LABEL, "-p", f"127.0.0.1:{port}:8080", IMAGE)
    try:
        wait_for(port, "/healthz", 30)
        summary["start_s"] = round(time.monotonic() - started, 2)  # from `docker run`
        uid = run("docker", "exec", name, "id", "-u").stdout.strip()
        expect(uid != "0", "the container's process runs as root")
        summary["uid"] = int(uid)
        deadline = time.monotonic() + 40
        while (
            state := run("docker", "inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
        ) != "healthy":
            expect(state != "unhealthy" and time.monotonic() < deadline, f"the container is {state}")
            time.sleep(0.5)
        summary["healthy_s"] = round(time.monotonic() - started, 1)
        stream = Stream(port, "check/image")
        event_id = publish(port, "check/image", "hello from the image")
        expect(stream.events(1) == [(event_id, "hello from the image")], "the event did not reach the stream")
        stopping = time.monotonic()
        run("docker", "stop", "-t", str(GRACE), name, timeout=GRACE + 30)
        summary["stop_s"] = round(time.monotonic() - stopping, 2)
        tail = stream.rest()
        stream.close()
        expect(b"retry:" in tail, f"the stream ended without a retry: hint: {tail[-200:]!r}")
        expect(summary["stop_s"] < GRACE, f"docker stop took {summary['stop_s']} s, the grace is {GRACE}")
        code = run("docker", "inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        expect(code == "0", f"the hub exited with {code}")
    finally:
        run("docker", "rm", "-f", name, check=False)


# Compose


@contextlib.contextmanager
def compose_up(file: str, summary: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, int]]]:
    """The compose file up as its own project, ports on 127.0.0.1: (project, nginx's port, hub ports)."""
    import yaml  # Debian's python3-yaml, which docker-compose brings (installed by ensure_tools)

    doc = yaml.safe_load((ROOT / file).read_text())
    nginx_port = free_port()
    doc["services"]["nginx"]["ports"] = [f"127.0.0.1:{nginx_port}:80"]
    hubs = [name for name, svc in doc["services"].items() if svc.get("build") == "."]
    hub_ports = {}
    for hub in hubs:
        hub_ports[hub] = free_port()
        # a copy: the replicas are one YAML anchor, one dict
        doc["services"][hub] = {**doc["services"][hub], "ports": [f"127.0.0.1:{hub_ports[hub]}:8080"]}
    project = f"bhcheck{uuid.uuid4().hex[:8]}"
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=ROOT, prefix=".check-", delete=False) as out:
        yaml.safe_dump(doc, out)
    base = ("docker-compose", "-p", project, "-f", out.name, "--project-directory", str(ROOT))
    try:
        say(f"{file}: up as {project}")
        started = time.monotonic()
        run(*base, "up", "-d", "--build", timeout=900)
        for port in hub_ports.values():
            wait_for(port, "/readyz", 90)
        wait_for(nginx_port, "/readyz", 30)
        summary[f"{file}_up_s"] = round(time.monotonic() - started, 1)
        yield project, nginx_port, hub_ports
    finally:
        run(*base, "down", "-v", "--rmi", "local", "--remove-orphans", "-t", "5", check=False, timeout=300)
        os.unlink(out.name)


def through_nginx_to_every_hub(nginx_port: int, hub_ports: dict[str, int], topic: str) -> None:
    streams = {hub: Stream(port, topic) for hub, port in hub_ports.items()}
    event_id = publish(nginx_port, topic, "through nginx")
    for hub, stream in streams.items():
        expect(stream.events(1) == [(event_id, "through nginx")], f"the event did not reach {hub}")
        stream.close()


def a_restarted_hub_loses_nothing(project: str, nginx_port: int, hub_ports: dict[str, int]) -> None:
    hub, port = next(iter(hub_ports.items()))
    stream = Stream(port, "check/restart")
    before = [publish(nginx_port, "check/restart", f"before {i}") for i in range(3)]
    got = stream.events(3)
    expect([i for i, _ in got] == before, f"{hub} got {got}, not {before}")
    stream.close()
    container = run(
        "docker",
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={hub}",
    ).stdout.strip()
    run("docker", "kill", container)
    during = [publish(nginx_port, "check/restart", f"during {i}") for i in range(5)]
    run("docker", "start", container)
    wait_for(port, "/readyz", 60)
    resumed = Stream(port, "check/restart", last_event_id=before[-1])
    got = resumed.events(5)
    expect(got == [(i, f"during {n}") for n, i in enumerate(during)], f"resumed on {hub}: {got}")
    resumed.close()


def main() -> int:
    global QUIET
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-cluster", action="store_true", help="leave docker-compose.cluster.yml out")
    parser.add_argument("--json", action="store_true", help="print the JSON summary only")
    args = parser.parse_args()
    QUIET = args.json
    # Stopped (the test run cut short): unwind, so that what it made is removed on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    expect(os.geteuid() == 0, "run it as root: it starts dockerd and makes images")
    summary: dict[str, Any] = {}
    started = time.monotonic()
    try:
        ensure_tools()
        ensure_daemon()
        summary["base_images"] = ensure_base_images()
        check_image(summary)
        with compose_up("docker-compose.yml", summary) as (project, nginx_port, hub_ports):
            through_nginx_to_every_hub(nginx_port, hub_ports, "check/compose")
            a_restarted_hub_loses_nothing(project, nginx_port, hub_ports)
        if not args.skip_cluster:
            with compose_up("docker-compose.cluster.yml", summary) as (_, nginx_port, hub_ports):
                through_nginx_to_every_hub(nginx_port, hub_ports, "check/cluster")
    except CheckFailed as exc:
        summary["ok"] = False
        summary["failed"] = str(exc)
        print(json.dumps(summary), flush=True)
        return 1
    finally:
        run(
            "docker",
            "rm",
            "-f",
            *run("docker", "ps", "-aq", "--filter", f"label={LABEL}").stdout.split(),
            check=False,
        )
    summary["ok"] = True
    summary["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
