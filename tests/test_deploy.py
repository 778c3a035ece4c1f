"""The Dockerfile, docker-compose.yml, docker-compose.cluster.yml and nginx config, checked by reading them:
what a mistake in one of them would break - ports, the HUB_* names the hub reads, the health check's path,
the files they mount and include, the Redis Cluster's nodes and addresses. tests/test_container.py runs
them for real."""

from __future__ import annotations

import ipaddress
import itertools
import re
import shlex
from pathlib import Path

import pytest
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


COMPOSE_FILES = ["docker-compose.yml", "docker-compose.cluster.yml"]


def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


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


@pytest.mark.parametrize("compose_file", COMPOSE_FILES)
def test_nginx_fronts_every_replica_on_its_port_and_streams(compose_file):
    doc = compose(compose_file)
    nginx = doc["services"]["nginx"]
    mounts = dict(reversed(v.split(":")[:2]) for v in nginx["volumes"])
    conf_path = mounts["/etc/nginx/nginx.conf"]
    conf = (ROOT / conf_path).read_text()
    included = re.findall(r"^\s*include\s+(\S+);", conf, re.M)
    for name in included:
        # nginx resolves a relative include against its conf directory: compose must mount it there
        assert f"/etc/nginx/{name}" in mounts, name
    upstream = "".join((ROOT / mounts[f"/etc/nginx/{name}"]).read_text() for name in included)
    hubs = hub_services(doc)
    pools = upstream_blocks(upstream)
    assert "keepalive" in pools["hub"]
    for pool, block in pools.items():
        servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", block, re.M)
        assert {(name, svc["environment"]["HUB_SERVER_PORT"]) for name, svc in hubs.items()} == set(
            servers
        ), pool
    passed_to = set(re.findall(r"^\s*proxy_pass\s+http://(\w+);", conf, re.M))
    assert passed_to == set(pools)
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
    (timeout,) = re.findall(r"proxy_read_timeout\s+(\S+);", nginx_locations(conf)["/"])
    assert seconds(timeout) > 2 * hub_config.build().sse.heartbeat_interval  # streams are under /


def upstream_blocks(text: str) -> dict[str, str]:
    """Each `upstream` block's text, by its name."""
    return dict(re.findall(r"^\s*upstream\s+(\w+)\s*\{([^}]*)\}", text, re.M))


def seconds(value: str) -> float:
    """An nginx time ("30s", "1h", "500ms", "75")."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def nginx_locations(conf: str) -> dict[str, str]:
    """Each `location` block's text, by what it matches ("/", "= /publish")."""
    out = {}
    for match in re.finditer(r"^\s*location\s+([^{]+?)\s*\{", conf, re.M):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(conf[end], 0)
            end += 1
        out[match.group(1)] = conf[match.end() : end - 1]
    return out


def test_nginx_passes_requests_to_the_other_replica_in_a_rolling_restart_never_a_publish_twice():
    """The parts of deploy/nginx that a rolling restart needs (tests/integration/test_rolling_restart.py
    runs them), each easy to lose in an edit."""
    conf = (ROOT / "deploy/nginx/nginx.conf").read_text()
    upstream = (ROOT / "deploy/nginx/hub-upstream.conf").read_text()
    servers = re.findall(r"^\s*server\s+(\S+)(.*);", upstream, re.M)
    assert servers
    for name, params in servers:
        # nginx never counts a replica as down: one just back from its restart takes requests
        assert "max_fails=0" in params.split(), name
    # nginx, not a replica, closes an idle kept-alive connection (a replica closing one as nginx
    # writes a request on it is a 502 for a request nginx may not send again)
    (idle,) = re.findall(r"^\s*keepalive_timeout\s+(\S+);", upstream_blocks(upstream)["hub"], re.M)
    assert seconds(idle) < hub_config.build().server.idle_timeout
    pools = upstream_blocks(upstream)
    assert re.search(r"^\s*proxy_next_upstream\s+error timeout", conf, re.M)
    assert re.search(r"^\s*proxy_next_upstream_tries\s+[1-9]", conf, re.M)
    assert re.search(r"^\s*proxy_next_upstream_timeout\s+[1-9]", conf, re.M)
    for where, block in nginx_locations(conf).items():
        if "proxy_set_header" in block:
            # it replaces every header set at the server level: keep-alive and the client's address
            for header in ('Connection ""', "Host $host", "X-Forwarded-For $proxy_add_x_forwarded_for"):
                assert f"proxy_set_header {header};" in block, (where, header)
        if "non_idempotent" in block:
            # a publish sent again after a replica may have run it: the same key, so never twice
            assert "proxy_set_header Idempotency-Key $" in block, where
            assert "proxy_request_buffering off" not in block, where
        if "proxy_request_buffering off" in block:
            assert where == "= /publish/stream", where  # a request not buffered is never sent again
        (pool,) = re.findall(r"proxy_pass\s+http://(\w+);", block)
        if where in ("/progress/", "= /publish/stream"):
            # POSTs never sent again: on a new connection each, never one a draining replica closes
            assert not re.search(r"^\s*keepalive\b", pools[pool], re.M), where
    (keyed,) = re.findall(r"map \$http_idempotency_key \$(\w+) \{([^}]*)\}", conf)
    assert re.search(r'^\s*""\s+\S*\$request_id;', keyed[1], re.M), "a key for every publish"


@pytest.mark.parametrize("compose_file", COMPOSE_FILES)
def test_no_secret_is_baked_into_the_image_or_the_compose_file(compose_file):
    assert not any("SECRET" in k for k in env_of(dockerfile()))
    hubs = hub_services(compose(compose_file))
    assert not any("SECRET" in k for svc in hubs.values() for k in svc["environment"])


def redis_nodes(doc: dict) -> dict[str, dict]:
    return {
        name: svc for name, svc in doc["services"].items() if "--cluster-enabled" in svc.get("command", [])
    }


def options(command: list[str]) -> dict[str, str]:
    """`redis-server --name value ...` as {"--name": "value"}."""
    assert command[0] == "redis-server"
    names, values = command[1::2], command[2::2]
    assert len(names) == len(values), command
    assert all(name.startswith("--") for name in names), command
    return dict(zip(names, values, strict=True))


def node_port(node: dict) -> str:
    return options(node["command"]).get("--port", "6379")


def create_service(doc: dict) -> tuple[str, str]:
    """The one-shot service that creates the cluster, and its shell script."""
    ((name, script),) = [
        (name, svc["command"][-1]) for name, svc in doc["services"].items() if "--cluster create" in str(svc)
    ]
    return name, script


def test_cluster_compose_runs_six_nodes_with_aof_and_their_state_on_their_own_volumes():
    doc = compose("docker-compose.cluster.yml")
    nodes = redis_nodes(doc)
    assert len(nodes) == 6
    volumes = []
    for name, node in nodes.items():
        opts = options(node["command"])
        assert opts["--cluster-enabled"] == "yes", name
        assert opts["--appendonly"] == "yes", name
        (mount,) = node["volumes"]
        volume, _, target = mount.partition(":")
        assert volume in doc["volumes"], name
        volumes.append(volume)
        # the AOF and nodes.conf (the node's identity, its view of the others) outlive the container
        assert opts.get("--dir", "/data") == target == "/data", name
        assert opts["--cluster-config-file"].startswith(f"{target}/"), name
        check = node["healthcheck"]["test"]
        assert (check[:2], check[-1]) == (["CMD", "redis-cli"], "ping"), name
        assert dict(itertools.pairwise(check)).get("-p", "6379") == node_port(node), name
    assert len(set(volumes)) == 6, "two nodes on one volume would share one nodes.conf"


def test_cluster_nodes_have_fixed_addresses_outside_the_range_other_containers_get():
    doc = compose("docker-compose.cluster.yml")
    (pool,) = doc["networks"]["default"]["ipam"]["config"]
    subnet, others = ipaddress.ip_network(pool["subnet"]), ipaddress.ip_network(pool["ip_range"])
    assert others.subnet_of(subnet)
    addresses = [
        ipaddress.ip_address(node["networks"]["default"]["ipv4_address"])
        for node in redis_nodes(doc).values()
    ]
    assert len(set(addresses)) == 6
    for address in addresses:
        assert address in subnet
        assert address not in others
        assert address not in (subnet.network_address, subnet.broadcast_address, next(subnet.hosts()))


def test_cluster_is_created_once_from_all_six_nodes_with_a_replica_each():
    doc = compose("docker-compose.cluster.yml")
    nodes = redis_nodes(doc)
    name, script = create_service(doc)
    # compose reads $VAR and ${VAR} in the file itself: the shell's own $ must be written $$
    assert "$" not in script.replace("$$", ""), script
    (line,) = [line for line in script.splitlines() if "--cluster create" in line]
    words = shlex.split(line.replace(";;", ""))
    listed = words[words.index("create") + 1 :]
    addresses = listed[: next(i for i, word in enumerate(listed) if word.startswith("--"))]
    assert sorted(addresses) == sorted(f"{node}:{node_port(svc)}" for node, svc in nodes.items())
    assert words[words.index("--cluster-replicas") + 1] == "1"
    assert "--cluster-yes" in words
    # on a later `up` the nodes come back already joined, where `--cluster create` would fail
    assert "cluster_slots_assigned:0" in script
    depends = doc["services"][name]["depends_on"]
    assert depends == {node: {"condition": "service_healthy"} for node in nodes}


def test_cluster_compose_hubs_start_on_a_node_of_the_created_cluster_behind_a_trusted_nginx():
    doc = compose("docker-compose.cluster.yml")
    nodes = redis_nodes(doc)
    creator, _ = create_service(doc)
    hubs = hub_services(doc)
    assert len(hubs) >= 2
    (pool,) = doc["networks"]["default"]["ipam"]["config"]
    for name, svc in hubs.items():
        env = svc["environment"]
        assert set(env) <= KNOWN_ENV, f"{name}: {set(env) - KNOWN_ENV} are not read by the hub"
        host, port = re.fullmatch(r"redis\+cluster://([\w-]+):(\d+)", env["HUB_REDIS_URL"]).groups()
        assert host in nodes, f"{name}: {host} is not a node of the cluster"
        assert port == node_port(nodes[host])
        hub_config.build(env={k: str(v) for k, v in env.items()})  # the hub would start with it
        assert svc["depends_on"] == {creator: {"condition": "service_completed_successfully"}}
        if "healthcheck" in svc:
            assert "/healthz" in str(svc["healthcheck"]["test"])
        # nginx gets its address from the pool: the hubs must take its X-Forwarded-For
        trusted = [ipaddress.ip_network(net) for net in env["HUB_SERVER_TRUSTED_PROXIES"].split(",")]
        assert any(ipaddress.ip_network(pool["ip_range"]).subnet_of(net) for net in trusted), name
