"""The Redis transport (hub.brokers.transport), against real redis-servers: a connection opened from the
URL with the options redis-py reads from it, its setup, and a supervised reconnect with backoff."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio.connection import ConnectionPool

import hub.brokers.transport.supervisor as supervisor
from bench.processes import RedisProcess, RespConnection
from hub.brokers.transport.endpoint import Endpoint, RawConnection, SetupRefused
from hub.brokers.transport.resp import pack
from hub.http.server import free_port


def endpoint(url: str) -> Endpoint:
    pool = ConnectionPool.from_url(url)
    return Endpoint.of(pool.connection_class(**pool.connection_kwargs))


async def roundtrip(connection: RawConnection, *command: str | bytes | int) -> Any:
    """One command's reply, read as the brokers read them (see `RawConnection.read`)."""
    reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    connection.read(lambda r: reply.done() or reply.set_result(r))
    connection.writer.write(pack(*command))
    async with asyncio.timeout(2):
        return await reply


def client_line(redis: RedisProcess, name: str) -> str:
    lines = [
        line for line in redis.command("CLIENT", "LIST").decode().splitlines() if f"name={name} " in line
    ]
    assert len(lines) == 1, lines
    return lines[0]


async def test_a_url_with_a_db_selects_it_and_names_the_connection(redis_factory):
    redis = redis_factory()
    connection = await endpoint(f"{redis.url}/3").connect("transport-db", 2)
    try:
        assert await roundtrip(connection, "SET", "where", "db3") == b"OK"
        assert " db=3 " in client_line(redis, "transport-db")
        assert b"db3:keys=1," in redis.command("INFO", "keyspace")
    finally:
        connection.close()


@pytest.fixture
def socket_path() -> Iterator[Path]:
    """A unix socket's path short enough for Redis to list it whole in CLIENT LIST (it cuts an address
    at 77 characters: a pytest-xdist worker's tmp_path makes one longer than that)."""
    directory = Path(tempfile.mkdtemp(prefix="hub-", dir="/tmp"))
    try:
        yield directory / "r.sock"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_a_unix_socket_url_with_its_db_option(redis_factory, socket_path: Path):
    socket = socket_path
    redis = redis_factory("--unixsocket", str(socket), "--unixsocketperm", "700")
    connection = await endpoint(f"unix://{socket}?db=2").connect("transport-unix", 2)
    try:
        assert await roundtrip(connection, "INCR", "over-unix") == 1
        line = client_line(redis, "transport-unix")
        assert " db=2 " in line
        assert "laddr=" + str(socket) in line  # on the socket, not over TCP
    finally:
        connection.close()


async def test_a_password_in_the_url_authenticates_and_a_wrong_one_is_refused(redis_factory):
    redis = redis_factory()
    redis.command("CONFIG", "SET", "requirepass", "s3cret")
    connection = await endpoint(f"redis://:s3cret@127.0.0.1:{redis.port}").connect("transport-auth", 2)
    try:
        assert await roundtrip(connection, "PING") == b"PONG"
    finally:
        connection.close()
    with pytest.raises(SetupRefused, match=r"WRONGPASS|invalid"):
        await endpoint(f"redis://:wrong@127.0.0.1:{redis.port}").connect("transport-auth", 2)
    with pytest.raises(SetupRefused, match="NOAUTH"):
        await endpoint(redis.url).connect("transport-auth", 2)


async def test_a_username_and_password_authenticate_as_that_acl_user(redis_factory):
    redis = redis_factory()
    redis.command("ACL", "SETUSER", "hub", "on", ">p@ss", "~*", "&*", "+@all")
    connection = await endpoint(f"redis://hub:p%40ss@127.0.0.1:{redis.port}").connect("transport-acl", 2)
    try:
        assert await roundtrip(connection, "ACL", "WHOAMI") == b"hub"
    finally:
        connection.close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate it signed, for 127.0.0.1 (with `cryptography`, which pyjwt[crypto]
    brings: no openssl program needed)."""
    where = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, ca: x509.Certificate | None) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name if ca is None else ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if ca is None:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        else:
            address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    ca = issue("hub test CA", ca_key, None)
    server = issue("127.0.0.1", server_key, ca)
    (where / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (where / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (where / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return where


async def test_rediss_reads_the_urls_tls_options_as_redis_py_does(redis_factory, certificates: Path):
    tls_port = free_port()
    redis_factory(
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(certificates / "server.pem"),
        "--tls-key-file", str(certificates / "server.key"),
        "--tls-ca-cert-file", str(certificates / "ca.pem"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{tls_port}"
    # The CA the URL names verifies the server...
    connection = await endpoint(f"{url}?ssl_ca_certs={certificates / 'ca.pem'}").connect("transport-tls", 2)
    try:
        assert await roundtrip(connection, "PING") == b"PONG"
    finally:
        connection.close()
    # ...without it, the certificate is verified against the system's CAs, and refused...
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        await endpoint(url).connect("transport-tls", 2)
    # ...unless the URL says not to verify it.
    connection = await endpoint(f"{url}?ssl_cert_reqs=none").connect("transport-tls", 2)
    try:
        assert await roundtrip(connection, "PING") == b"PONG"
    finally:
        connection.close()


async def test_the_supervisor_reconnects_with_capped_growing_backoff_after_the_server_is_killed(
    redis_factory: Callable[..., RedisProcess], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(supervisor, "BACKOFF_MIN", 0.02)
    monkeypatch.setattr(supervisor, "BACKOFF_MAX", 0.16)
    redis = redis_factory()
    target = endpoint(redis.url)
    attempts: list[float] = []
    served: list[str] = []
    ups: list[bool] = []
    loop = asyncio.get_running_loop()

    async def connect() -> RawConnection:
        attempts.append(loop.time())
        return await target.connect("transport-supervised", 0.5)

    async def serve(connection: RawConnection) -> None:
        reading = connection.read(lambda reply: served.append(str(reply)))
        connection.writer.write(pack("SUBSCRIBE", "supervised"))
        await reading.ended

    def ended() -> bool:
        ups.append(bool(served))
        served.clear()
        return ups[-1]

    running = True
    task = asyncio.create_task(
        supervisor.supervise(connect, serve, ended, running=lambda: running, where="t")
    )
    try:
        async with asyncio.timeout(5):
            while redis.command("PUBSUB", "NUMSUB", "supervised").count(b":1") == 0:
                await asyncio.sleep(0.01)
        redis.kill()
        await asyncio.sleep(1.5)  # refused attempts meanwhile, each after a longer wait, to the cap
        down = [b - a for a, b in itertools.pairwise(attempts[1:])]
        assert len(down) >= 6
        assert down[2] > down[0]  # doubling: two steps on, more than the jitter (x0.5 to x1.5) can hide
        assert max(down) < 0.16 * 1.5 + 0.1  # capped
        assert ups[0] is True  # the lost connection had been up...
        assert not any(ups[1:])  # ...and the refused ones not
        redis_factory(port=redis.port)  # the server back, on its address
        async with asyncio.timeout(5):
            while not served:
                await asyncio.sleep(0.01)
        assert "subscribe" in served[0]  # subscribed again on the new connection
    finally:
        running = False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
async def test_a_hub_on_a_unix_socket_with_a_password_publishes_and_delivers(
    hub_factory, redis_factory, socket_path: Path
):
    socket = socket_path
    redis = redis_factory("--unixsocket", str(socket), "--unixsocketperm", "700")
    redis.command("CONFIG", "SET", "requirepass", "s3cret")
    hub = await hub_factory(f"unix://:s3cret@{socket}?db=4")
    async with hub.subscribe("over/unix") as stream:
        published = await hub.publish({"topic": "over/unix", "data": "hello"})
        event = await stream.next_event()
        assert (event.data, event.id) == ("hello", published["id"])
    # Every connection of the hub went over the socket, into db 4: redis-py's and the raw ones alike.
    with RespConnection(redis.port) as admin:
        admin.call("AUTH", "s3cret")
        listed = str(admin.call("CLIENT", "LIST"))
    for role in ("sub", "pub"):
        line = next(line for line in listed.splitlines() if f"-{role}-" in line)
        assert " db=4 " in line
        assert f"laddr={socket}" in line
