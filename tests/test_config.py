from __future__ import annotations

import pytest

from hub import config
from hub.errors import ConfigError


def test_defaults():
    c = config.build()
    assert (c.server.host, c.server.port, c.redis.url) == ("127.0.0.1", 8080, "")
    assert c.sse.heartbeat_interval == 15.0


def test_later_sources_win():
    c = config.build(
        {"server": {"port": 1000}, "sse": {"heartbeat_interval": 3}},
        {"HUB_SERVER_PORT": "2000", "HUB_REDIS_URL": "redis://x"},
        {"server.port": 3000, "redis.url": None},
    )
    assert c.server.port == 3000
    assert c.redis.url == "redis://x"
    assert c.sse.heartbeat_interval == 3.0


@pytest.mark.parametrize(
    ("file_values", "env", "overrides", "names"),
    [
        ({"server": {"prot": 1}}, {}, {}, "server.prot"),
        ({"servr": {}}, {}, {}, "servr"),
        ({"server": {"port": "80"}}, {}, {}, "server.port"),
        ({}, {"HUB_SERVER_PORT": "eighty"}, {}, "server.port"),
        ({}, {"HUB_SSE_HEARTBEAT": "1"}, {}, "HUB_SSE_HEARTBEAT"),
        ({}, {}, {"server.port": 70000}, "server.port"),
        ({"sse": {"max_buffer": 0}}, {}, {}, "sse.max_buffer"),
        ({}, {}, {"server.workers": 2}, "server.workers"),
        ({"publish": {"idempotency_window": 0.5}}, {}, {}, "publish.idempotency_window"),
    ],
)
def test_bad_config_names_the_key(file_values, env, overrides, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        config.build(file_values, env, overrides)


def test_client_variables_in_the_same_shell_do_not_stop_the_server():
    env = {"HUB_URL": "http://127.0.0.1:9", "HUB_TOKEN": "t", "HUB_SERVER_PORT": "2000"}
    assert config.build(env=env).server.port == 2000


def test_every_key_has_an_env_name():
    assert config.env_name("redis.url") == "HUB_REDIS_URL"
    assert all(config.env_name(k).startswith("HUB_") for k in config.all_keys())


def test_example_file_documents_every_key_with_its_default():
    import tomllib
    from dataclasses import asdict
    from pathlib import Path

    doc = tomllib.loads((Path(__file__).parent.parent / "config.example.toml").read_text())
    documented = {f"{s}.{k}" for s, body in doc.items() for k in body}
    assert documented == set(config.all_keys())
    assert config.build(doc) == config.build()
    lists_as_tuples = {
        s: {k: tuple(v) if isinstance(v, list) else v for k, v in b.items()} for s, b in doc.items()
    }
    assert asdict(config.build(doc)) == lists_as_tuples
