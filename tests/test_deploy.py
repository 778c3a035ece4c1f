"""The Dockerfile, docker-compose.yml and nginx config, checked by reading them (no Docker engine here):
what a mistake in one of them would break - ports, the HUB_* names the hub reads, the health check's
path, the files they mount and include."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from hub import config as hub_config

ROOT = Path(__file__).parent.parent
KNOWN_ENV = {hub_config.env_name(key) for key in hub_config.all_keys()}


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions:
        if word == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(rest))
    return env


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def hub_services(doc: dict) -> dict[str, dict]:
    return {name: svc for name, svc in doc["services"].items() if svc.get("build") == "."}


def test_image_is_slim_non_root_and_runs_the_hub_on_all_interfaces():
    instructions = dockerfile()
    assert all(
        re.fullmatch(r"python:3\.1\d-slim( AS \w+)?", rest) for word, rest in instructions if word == "FROM"
    )
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "the image must not run as root"
    assert users[-1] not in ("root", "0")
    env = env_of(instructions)
    assert env["HUB_SERVER_HOST"] == "0.0.0.0"
    assert {k for k in env if k.startswith("HUB_")} <= KNOWN_ENV
    assert [rest for word, rest in instructions if word == "EXPOSE"] == [env["HUB_SERVER_PORT"]]
    assert [rest for word, rest in instructions if word == "CMD"][-1] == '["hub", "serve"]'
    assert [rest for word, rest in instructions if word == "STOPSIGNAL"] == ["SIGTERM"]


def test_image_installs_only_runtime_dependencies_from_files_that_exist():
    instructions = dockerfile()
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "[test]" not in runs
    assert "[bench]" not in runs
    for word, rest in instructions:
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)


def test_healthcheck_asks_the_hubs_own_port_for_healthz():
    instructions = dockerfile()
    checks = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/healthz" in checks[0]
    assert "HUB_SERVER_PORT" in checks[0]


def test_compose_runs_two_replicas_on_redis_with_aof_on_a_volume():
    doc = compose()
    redis = doc["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data"
    assert volume in doc["volumes"]
    hubs = hub_services(doc)
    assert len(hubs) >= 2
    for name, svc in hubs.items():
        env = svc["environment"]
        assert set(env) <= KNOWN_ENV, f"{name}: {set(env) - KNOWN_ENV} are not read by the hub"
        assert re.fullmatch(r"redis://redis:6379(/\d+)?", env["HUB_REDIS_URL"])
        hub_config.build(env={k: str(v) for k, v in env.items()})  # the hub would start with it
        assert "redis" in svc["depends_on"]


def test_nginx_fronts_every_replica_on_its_port_and_streams():
    doc = compose()
    nginx = doc["services"]["nginx"]
    mounts = dict(reversed(v.split(":")[:2]) for v in nginx["volumes"])
    conf_path = mounts["/etc/nginx/nginx.conf"]
    conf = (ROOT / conf_path).read_text()
    included = re.findall(r"^\s*include\s+(\S+);", conf, re.M)
    for name in included:
        # nginx resolves a relative include against its conf directory: compose must mount it there
        assert f"/etc/nginx/{name}" in mounts, name
    upstream = "".join((ROOT / mounts[f"/etc/nginx/{name}"]).read_text() for name in included)
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream, re.M)
    hubs = hub_services(doc)
    assert {(name, svc["environment"]["HUB_SERVER_PORT"]) for name, svc in hubs.items()} == set(servers)
    (pool,) = re.findall(r"upstream\s+(\w+)", upstream)
    assert f"proxy_pass http://{pool};" in conf
    assert "keepalive" in upstream
    listen = re.findall(r"^\s*listen\s+(\d+);", conf, re.M)
    assert [p.split(":")[1] for p in nginx["ports"]] == listen
    for directive in (
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Forwarded-For",
    ):
        assert directive in conf, directive
    (timeout,) = re.findall(r"proxy_read_timeout\s+(\d+)([smh]);", conf)
    seconds = int(timeout[0]) * {"s": 1, "m": 60, "h": 3600}[timeout[1]]
    assert seconds > 2 * hub_config.build().sse.heartbeat_interval


def test_no_secret_is_baked_into_the_image_or_the_compose_file():
    assert not any("SECRET" in k for k in env_of(dockerfile()))
    assert not any("SECRET" in k for svc in hub_services(compose()).values() for k in svc["environment"])
