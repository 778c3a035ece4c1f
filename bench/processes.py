"""Real processes for tests and benchmarks: redis-server on free ports (never 6379), a Redis Cluster of
them, `hub serve`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeAlias

from redis.crc import key_slot

from hub.http.server import free_port

# Bulk strings decode with surrogateescape, so binary keys read from Redis go back to it unchanged.
Reply: TypeAlias = "str | int | list[Reply] | RedisReplyError | None"


class RedisReplyError(Exception):
    """An error reply from redis-server (`ERR …`, `MOVED …`, `BUSYKEY …`)."""


class RespConnection:
    """One connection to a local redis-server for several commands, replies parsed (RESP2)."""

    def __init__(self, port: int, timeout: float = 2) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._stream = self._sock.makefile("rb")

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()
        self._sock.close()

    def call(self, *args: str | bytes | int) -> Reply:
        reply = self.roundtrip(args)[0]
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def roundtrip(self, args: Sequence[str | bytes | int]) -> tuple[Reply, bytes]:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8", "surrogateescape")
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
        self._sock.sendall(b"".join(parts))
        raw = bytearray()
        return self._read(raw), bytes(raw)

    def _read(self, raw: bytearray) -> Reply:
        line = self._stream.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"redis-server closed the connection mid-reply: {bytes(raw + line)!r}")
        raw += line
        kind, body = line[:1], line[1:-2].decode("utf-8", "surrogateescape")
        if kind == b"+":
            return body
        if kind == b"-":
            return RedisReplyError(body)
        if kind == b":":
            return int(body)
        if kind == b"$":
            if int(body) < 0:
                return None
            data = self._stream.read(int(body) + 2)
            if len(data) != int(body) + 2:
                raise ConnectionError("redis-server closed the connection mid-reply")
            raw += data
            return data[:-2].decode("utf-8", "surrogateescape")
        if kind == b"*":
            return None if int(body) < 0 else [self._read(raw) for _ in range(int(body))]
        raise ConnectionError(f"not a RESP2 reply: {line!r}")


class RedisProcess:
    def __init__(self, *args: str, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed; .ci/run installs it")
        self.port = port or free_port()
        assert self.port != 6379
        self.dir = Path(tempfile.mkdtemp(prefix="hub-redis-"))
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisProcess:
        cmd = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.dir / "redis.log"),
            *self.args,
        ]  # fmt: skip
        # a bad argument is reported on stderr, before redis-server opens its log file
        with (self.dir / "output.log").open("ab") as output:
            self.proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log()}")
            if self.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start:\n{self.log()}")

    def log(self, lines: int = 1000) -> str:
        """The last lines of what it wrote: its output, then its log file."""
        out = []
        for name in ("output.log", "redis.log"):
            path = self.dir / name
            if path.exists():
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def ping(self) -> bool:
        try:
            return self.command("PING") == b"+PONG\r\n"
        except OSError:
            return False

    def command(self, *args: str | bytes | int) -> bytes:
        """One command on a new connection; its whole reply as raw RESP, an error reply included."""
        with RespConnection(self.port) as conn:
            return conn.roundtrip(args)[1]

    def call(self, *args: str | bytes | int, timeout: float = 2) -> Reply:
        """One command on a new connection; its reply parsed, an error reply raised."""
        with RespConnection(self.port, timeout) as conn:
            return conn.call(*args)

    def numsub(self, channel: str) -> int:
        reply = self.command("PUBSUB", "NUMSUB", channel).split(b"\r\n")
        return int(reply[-2][1:])

    def numpat(self) -> int:
        return int(self.command("PUBSUB", "NUMPAT").strip()[1:])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            self.kill()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def keyslot(key: str | bytes) -> int:
    """The cluster slot of a key, hash tags included (`{user1}:a` and `{user1}:b` share one)."""
    return key_slot(key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key)


@dataclass(frozen=True)
class ClusterNodeEntry:
    """One line of CLUSTER NODES: a node as seen by the node that was asked."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def down(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @property
    def primary(self) -> bool:
        return "master" in self.flags


def parse_cluster_nodes(text: str) -> list[ClusterNodeEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        # address: ip:port@cport[,hostname]
        port = int(fields[1].partition("@")[0].rpartition(":")[2])
        slots = []
        for token in fields[8:]:
            if token.startswith("["):  # [slot->-id] / [slot-<-id]: a migration under way, not ownership
                continue
            low, _, high = token.partition("-")
            slots.append((int(low), int(high or low)))
        master_id = None if fields[3] == "-" else fields[3]
        entries.append(
            ClusterNodeEntry(fields[0], port, frozenset(fields[2].split(",")), master_id, tuple(slots))
        )
    return entries


def _slot_owners(entries: Iterable[ClusterNodeEntry]) -> dict[int, str]:
    return {slot: e.id for e in entries for low, high in e.slots for slot in range(low, high + 1)}


class RedisCluster:
    """A Redis Cluster of real redis-server processes on loopback, for tests and the benchmark.

    Roles are read live from the nodes (CLUSTER NODES), since a failover swaps them. Every method that
    changes the cluster waits until it has settled: each live node reports cluster_state:ok, sees every
    other live node up, every slot is served by a live node, every replica's link to its primary is up,
    and all live nodes report the same slot owners and replica links.

    Blocking: from async code, run the slow calls (start, reshard, kill_primary, manual_failover,
    restart) with `asyncio.to_thread`, so that an in-process hub keeps serving while the cluster changes.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1500,
        *,
        args: Sequence[str] = (),
        timeout: float = 30,
    ) -> None:
        """`replicas` per primary. `node_timeout_ms`: how long a node may be unreachable before it is
        failed over (a failover takes about twice that). `args` go to every redis-server."""
        if primaries == 2 or (primaries == 1 and replicas):
            raise ValueError("redis-cli --cluster create needs at least 3 primaries (1 alone: no replicas)")
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed; it comes with redis-server")
        self.replicas_per_primary = replicas
        self.timeout = timeout
        ports: set[int] = {6379}
        self.nodes: list[RedisProcess] = []
        for _ in range(primaries * (1 + replicas)):
            port, bus = self._free_port(ports), self._free_port(ports)
            cluster_args = [
                "--cluster-enabled", "yes",
                # relative to the node's --dir; kept there so that restart() brings back the same node
                "--cluster-config-file", "nodes.conf",
                # the default bus port, port + 10000, is past 65535 for most free ports
                "--cluster-port", str(bus),
                "--cluster-node-timeout", str(node_timeout_ms),
                # a full sync (new replica, restarted primary) starts at once instead of after 5 s
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            self.nodes.append(RedisProcess(*cluster_args, *args, port=port))
        self._ids: dict[int, str] = {}
        self._paused: set[int] = set()

    @staticmethod
    def _free_port(taken: set[int]) -> int:
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        return port

    @property
    def url(self) -> str:
        """The first node, a primary when the cluster was created; clients discover the others from it."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def __enter__(self) -> RedisCluster:
        return self if self._ids else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            self._ids = {node.port: _text(node.call("CLUSTER", "MYID")) for node in self.nodes}
            if len(self.nodes) == 1:  # one node serves every slot: what redis-cli will not set up
                self.nodes[0].call("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                self.wait_settled()
                return self
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            create = subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"],
                capture_output=True, text=True, timeout=self.timeout, check=False,
            )  # fmt: skip
            if create.returncode != 0 or "[OK] All 16384 slots covered" not in create.stdout:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}\n{self.log_tails()}"
                )
            self.wait_settled()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.kill()  # SIGKILL ends a paused (SIGSTOPped) node too, where SIGTERM would wait for SIGCONT
            node.close()
        self._paused.clear()

    # --- reading the cluster, as a live node sees it ---

    def node_id(self, node: RedisProcess) -> str:
        return self._ids[node.port]

    def view(self) -> list[ClusterNodeEntry]:
        """CLUSTER NODES of the first live node."""
        return parse_cluster_nodes(_text(self._live()[0].call("CLUSTER", "NODES")))

    def primaries(self) -> list[RedisProcess]:
        """Primaries that are up, in slot order."""
        entries = [e for e in self.view() if e.primary and not e.down]
        entries.sort(key=lambda e: (min(e.slots, default=(16384, 0)), e.port))
        return [self._node(e.port) for e in entries]

    def replicas_of(self, primary: RedisProcess) -> list[RedisProcess]:
        """Replicas that are up."""
        primary_id = self.node_id(primary)
        return [self._node(e.port) for e in self.view() if e.master_id == primary_id and not e.down]

    def node_for_slot(self, slot: int) -> RedisProcess:
        owner = _slot_owners(self.view()).get(slot)
        if owner is None:
            raise LookupError(f"no node serves slot {slot}")
        return self._node_by_id(owner)

    def key_on(self, primary: RedisProcess, prefix: str = "key") -> str:
        """A key (`prefix:N`) whose slot `primary` serves: to put data or a channel on a given shard."""
        owners = _slot_owners(self.view())
        primary_id = self.node_id(primary)
        for n in range(100_000):
            if owners.get(keyslot(key := f"{prefix}:{n}")) == primary_id:
                return key
        raise LookupError(f"{primary.port} serves no slot")

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"--- redis-server {node.port} ---\n{node.log(lines)}" for node in self.nodes)

    # --- changing it ---

    def reshard(self, slots: Iterable[int], to: RedisProcess) -> None:
        """Move slots, with their keys, to the primary `to`, the way redis-cli --cluster reshard does:
        IMPORTING on the target, MIGRATING on the source, MIGRATE the keys in batches, then the new owner
        told to the target, the source and every other primary."""
        slots = list(slots)
        target_id = self.node_id(to)
        if to not in self.primaries():
            raise ValueError(f"{to.port} is not a primary")
        owners = _slot_owners(self.view())
        conns = {node.port: RespConnection(node.port, timeout=10) for node in self.primaries()}
        try:
            for slot in slots:
                source_id = owners.get(slot)
                if source_id is None:
                    raise LookupError(f"no node serves slot {slot}")
                if source_id == target_id:
                    continue
                source = self._node_by_id(source_id)
                target_conn, source_conn = conns[to.port], conns[source.port]
                target_conn.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
                source_conn.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
                while keys := _list(source_conn.call("CLUSTER", "GETKEYSINSLOT", slot, 100)):
                    source_conn.call("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
                # target first: once the source lets go, clients it redirects find the target ready
                for port in sorted(conns, key=lambda p: (p != to.port, p != source.port)):
                    conns[port].call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            for conn in conns.values():
                conn.close()

        def moved(entries: list[ClusterNodeEntry]) -> str | None:
            owners = _slot_owners(entries)
            return None if all(owners.get(s) == target_id for s in slots) else "slots not on the target yet"

        self.wait_settled(until=moved, what=f"move {len(slots)} slots to {to.port}")

    def kill_primary(self, primary: RedisProcess) -> RedisProcess:
        """SIGKILL a primary; wait until one of its replicas has taken over its slots, and return it.
        `restart(primary)` later brings it back, as a replica of that one."""
        entry = self._entry(primary)
        if not entry.primary or not entry.slots:
            raise ValueError(f"{primary.port} is not a primary serving slots (only those are failed over)")
        replica_ids = {self.node_id(r) for r in self.replicas_of(primary)}
        if not replica_ids:
            raise ValueError(f"{primary.port} has no replica to take over")
        primary.kill()

        def promoted(entries: list[ClusterNodeEntry]) -> str | None:
            owners = _slot_owners(entries)
            if all(owners.get(low) in replica_ids for low, _ in entry.slots):
                return None
            return f"no replica of {primary.port} has taken over yet"

        self.wait_settled(until=promoted, what=f"fail {primary.port} over")
        return self.node_for_slot(entry.slots[0][0])

    def fail_over(self, primary: RedisProcess, *, kill: bool = False) -> RedisProcess:
        """Have a replica of `primary` take over its slots, and return it: gracefully (manual_failover),
        or with `kill` by SIGKILLing the primary (kill_primary)."""
        if kill:
            return self.kill_primary(primary)
        replicas = self.replicas_of(primary)
        if not replicas:
            raise ValueError(f"{primary.port} has no replica to take over")
        self.manual_failover(replicas[0])
        return replicas[0]

    def manual_failover(self, replica: RedisProcess, *, force: bool = False) -> None:
        """CLUSTER FAILOVER on a replica: it and its primary swap roles once it has caught up (no write
        lost). `force` does not wait for the primary, for when it is unreachable."""
        entry = self._entry(replica)
        old_primary_id = entry.master_id
        if entry.primary or old_primary_id is None:
            raise ValueError(f"{replica.port} is not a replica")
        replica.call("CLUSTER", "FAILOVER", *(["FORCE"] if force else []))
        replica_id = self.node_id(replica)

        def swapped(entries: list[ClusterNodeEntry]) -> str | None:
            roles = {e.id: e for e in entries}
            if roles[replica_id].primary and (
                roles[old_primary_id].master_id == replica_id or roles[old_primary_id].down
            ):
                return None
            return f"{replica.port} has not taken over yet"

        self.wait_settled(until=swapped, what=f"fail over to {replica.port}")

    def restart(self, node: RedisProcess) -> None:
        """Start a killed node again, on its port, with its nodes.conf: the cluster takes it back (a
        former primary whose replica took over rejoins as that one's replica)."""
        if node.proc is not None and node.proc.poll() is None:
            raise ValueError(f"{node.port} is still running")
        node.start()
        self.wait_settled(what=f"take {node.port} back")

    def pause(self, node: RedisProcess) -> None:
        """SIGSTOP: the node holds its connections but answers nothing, as a hung host would."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        self._paused.add(node.port)

    def resume(self, node: RedisProcess) -> None:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGCONT)
        self._paused.discard(node.port)

    # --- settling ---

    def wait_settled(
        self,
        timeout: float | None = None,
        *,
        until: Callable[[list[ClusterNodeEntry]], str | None] | None = None,
        what: str = "settle",
    ) -> None:
        """Wait until the cluster has settled (see the class) and `until(entries)`, given the nodes'
        common view, returns None rather than what it still waits for."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while (reason := self._unsettled(until)) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Redis Cluster did not {what} in {timeout:g} s: {reason}\n{self.log_tails()}"
                )
            time.sleep(0.05)

    def _unsettled(self, until: Callable[[list[ClusterNodeEntry]], str | None] | None) -> str | None:
        live = self._live()
        live_ids = {self.node_id(node) for node in live}
        layouts = set()
        entries: list[ClusterNodeEntry] = []
        for node in live:
            try:
                with RespConnection(node.port) as conn:
                    info = _text(conn.call("CLUSTER", "INFO"))
                    entries = parse_cluster_nodes(_text(conn.call("CLUSTER", "NODES")))
                    replication = _text(conn.call("INFO", "replication"))
            except (OSError, RedisReplyError) as e:
                return f"{node.port}: {e!r}"
            if "cluster_state:ok" not in info:
                return f"{node.port}: cluster_state is not ok"
            up = {e.id for e in entries if not e.down}
            if not live_ids <= up:
                return f"{node.port} does not see {sorted(live_ids - up)} up"
            owners = _slot_owners(entries)
            if len(owners) < 16384 or not set(owners.values()) <= live_ids:
                return f"{node.port}: slots not all served by live nodes"
            if "role:slave" in replication and "master_link_status:up" not in replication:
                return f"{node.port}: replica not in sync with its primary"
            ranges = tuple(sorted((low, high, e.id) for e in entries for low, high in e.slots))
            links = frozenset((e.id, e.master_id) for e in entries if e.master_id and not e.down)
            layouts.add((ranges, links))
        if len(layouts) > 1:
            return "nodes disagree about slot owners or replicas"
        return until(entries) if until is not None else None

    # --- lookups ---

    def _live(self) -> list[RedisProcess]:
        live = [
            node
            for node in self.nodes
            if node.proc is not None and node.proc.poll() is None and node.port not in self._paused
        ]
        if not live:
            raise RuntimeError("no node of the cluster is running")
        return live

    def _node(self, port: int) -> RedisProcess:
        return next(node for node in self.nodes if node.port == port)

    def _node_by_id(self, node_id: str) -> RedisProcess:
        return next(node for node in self.nodes if self._ids[node.port] == node_id)

    def _entry(self, node: RedisProcess) -> ClusterNodeEntry:
        node_id = self.node_id(node)
        return next(e for e in self.view() if e.id == node_id)


def _text(reply: Reply) -> str:
    if not isinstance(reply, str):
        raise TypeError(f"expected a string reply, got {reply!r}")
    return reply


def _list(reply: Reply) -> list[str]:
    if not isinstance(reply, list) or not all(isinstance(item, str) for item in reply):
        raise TypeError(f"expected a list of strings, got {reply!r}")
    return [item for item in reply if isinstance(item, str)]


class HubProcess:
    """A `hub serve` subprocess; `ready()` waits for the line it logs when it serves."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.env = env
        self.output = b""
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.output += b"--- start ---\n"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--port", str(self.port), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 15) -> None:
        loop = asyncio.get_running_loop()
        assert self.proc is not None
        stdout = self.proc.stdout
        assert stdout is not None
        async with asyncio.timeout(timeout):
            while b"hub ready on" not in self.output.rpartition(b"--- start ---")[2]:
                line = await loop.run_in_executor(None, stdout.readline)
                if not line:
                    raise RuntimeError(f"hub exited: {self.output.decode()}")
                self.output += line
        # keep draining its output so a chatty hub never blocks on a full pipe
        loop.run_in_executor(None, self._drain, stdout)

    def _drain(self, stdout: IO[bytes]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stdout:
                self.output += line

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipe()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipe()
        return self.proc.returncode

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            with contextlib.suppress(ValueError, OSError):
                self.proc.stdout.close()
