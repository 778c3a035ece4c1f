"""Real processes for tests and benchmarks: redis-server on free ports (never 6379), `hub serve`."""

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
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TypeAlias

from hub.server import free_port

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
