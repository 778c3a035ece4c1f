"""Configuration: one frozen dataclass tree built from defaults, a TOML file, `HUB_*` variables and flags.

Later sources win. Key `section.key` is variable `HUB_SECTION_KEY`. Unknown keys and bad values stop
startup with a `ConfigError` naming the key; nothing here reads the environment except `load()`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from hub.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    shutdown_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = ""  # empty: the in-process memory broker
    prefix: str = "hub"  # namespaces keys and channels; pub/sub channels ignore the db number
    connect_timeout: float = 5.0
    max_connections: int = 64  # command connections per process; callers queue beyond it


@dataclass(frozen=True, slots=True)
class SseConfig:
    heartbeat_interval: float = 15.0
    retry: int = 3000  # ms, the reconnection delay sent when a stream opens
    max_buffer: int = 1 * MiB  # unsent bytes after which a slow connection is closed
    subscribe_timeout: float = 5.0  # wait for the broker to confirm a subscription, then 503


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    max_events: int = 1000  # per topic
    max_age: float = 86400.0  # seconds; 0 keeps events until max_events pushes them out
    max_replay: int = 10000  # events one resume replays; a client that missed more gets a reset


@dataclass(frozen=True, slots=True)
class PublishConfig:
    idempotency_window: float = 300.0  # seconds an Idempotency-Key answers with its first result


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 1 * MiB
    max_data_bytes: int = 256 * KiB
    max_batch: int = 1000
    max_topics: int = 100  # per subscription, and per published event


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    sse: SseConfig = field(default_factory=SseConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)


_POSITIVE = {
    "server.workers",
    "server.shutdown_timeout",
    "redis.connect_timeout",
    "redis.max_connections",
    "sse.heartbeat_interval",
    "sse.max_buffer",
    "sse.subscribe_timeout",
    "history.max_events",
    "history.max_replay",
    "publish.idempotency_window",
    "limits.max_body_bytes",
    "limits.max_data_bytes",
    "limits.max_batch",
    "limits.max_topics",
}


def sections() -> dict[str, type[Any]]:
    hints = get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def all_keys() -> dict[str, type[Any]]:
    """Every setting as `section.key` -> its type."""
    out: dict[str, type[Any]] = {}
    for name, cls in sections().items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f"{name}.{f.name}"] = hints[f.name]
    return out


def env_name(key: str) -> str:
    return "HUB_" + key.replace(".", "_").upper()


def _coerce(key: str, kind: type[Any], value: Any, from_text: bool) -> Any:
    if from_text and isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not a valid {kind.__name__}") from None
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def build(
    file_values: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build and validate a Config from a parsed TOML document, an environment and flag overrides."""
    known = all_keys()
    values: dict[str, Any] = {}
    for section, body in (file_values or {}).items():
        if section not in sections():
            raise ConfigError(f"unknown config section [{section}]")
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a table")
        for name, value in body.items():
            key = f"{section}.{name}"
            if key not in known:
                raise ConfigError(f"unknown config key {key}")
            values[key] = _coerce(key, known[key], value, from_text=False)
    env = env or {}
    env_keys = {env_name(k): k for k in known}
    for var, value in env.items():
        if var.startswith("HUB_") and var not in env_keys and var != "HUB_CONFIG":
            raise ConfigError(f"unknown environment variable {var}")
        if var in env_keys:
            key = env_keys[var]
            values[key] = _coerce(key, known[key], value, from_text=True)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in known:
            raise ConfigError(f"unknown config key {key}")
        values[key] = _coerce(key, known[key], value, from_text=True)
    for key, value in values.items():
        if key in _POSITIVE and value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value!r}")
    if values.get("publish.idempotency_window", 1) < 1:
        raise ConfigError("publish.idempotency_window: must be at least 1 second")
    if values.get("history.max_age", 0) < 0:
        raise ConfigError("history.max_age: must be 0 (no age bound) or more")
    if not 0 <= values.get("server.port", 0) <= 65535:
        raise ConfigError("server.port: must be from 0 (any free port) to 65535")
    kwargs: dict[str, Any] = {}
    for name, cls in sections().items():
        own = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(name + ".")}
        kwargs[name] = cls(**own)
    config = Config(**kwargs)
    if config.server.workers > 1 and not config.redis.url:
        raise ConfigError("server.workers: more than one worker needs redis.url")
    return config


def load(
    path: str | Path | None, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> Config:
    """Read the TOML file (if any; else `HUB_CONFIG`), then apply the environment and overrides."""
    path = path or env.get("HUB_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    return build(file_values, env, overrides)
