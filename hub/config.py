"""Configuration: one frozen dataclass tree built from defaults, a TOML file, `HUB_*` variables and flags.

Later sources win. Key `section.key` is variable `HUB_SECTION_KEY`. Unknown keys and bad values stop
startup with a `ConfigError` naming the key; nothing here reads the environment except `load()`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from hub.errors import ConfigError, HttpError
from hub.wire.presence import MAX_LISTED
from hub.wire.topics import Selector

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    shutdown_timeout: float = 10.0
    # Peers (addresses or networks) whose X-Forwarded-For is believed when limits count client IPs.
    trusted_proxies: tuple[str, ...] = ()
    log_format: str = "auto"  # json, text, or auto: text on a terminal, JSON lines elsewhere
    header_timeout: float = 10.0  # seconds to send a request's headers, from connecting or its first byte
    idle_timeout: float = 75.0  # seconds a keep-alive connection may wait for its next request
    # seconds a request body may take in all (a streamed publish's: between two pieces of it)
    body_timeout: float = 30.0


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
MAX_PARTITIONS = 64


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = ""  # empty: the in-process memory broker
    prefix: str = "hub"  # namespaces keys and channels; pub/sub channels ignore the db number
    connect_timeout: float = 5.0
    max_connections: int = 64  # command connections per process; callers queue beyond it
    cluster: bool = False  # a Redis Cluster (also implied by a redis+cluster:// URL)
    partitions: int = 16  # on a cluster: hash-tag partitions topics are grouped into (brokers/cluster)
    wait_replicas: int = 0  # on a cluster: replicas that must have an event before its publish is answered
    wait_timeout: float = 1.0  # seconds to wait for them; fewer in time answers 503

    @property
    def is_cluster(self) -> bool:
        return self.cluster or self.url.startswith(CLUSTER_SCHEMES)


@dataclass(frozen=True, slots=True)
class SseConfig:
    heartbeat_interval: float = 15.0
    retry: int = 3000  # ms, the reconnection delay sent when a stream opens
    max_buffer: int = 1 * MiB  # unsent bytes after which a slow connection is closed
    subscribe_timeout: float = 5.0  # wait for the broker to confirm a subscription, then 503
    # seconds a replay's unsent output may stay over max_buffer before the client is cut off
    drain_timeout: float = 5.0
    # ms: on SIGTERM each stream's last `retry:` is drawn from 0 to this, its own; 0: `retry`
    shutdown_retry_window: int = 0


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    max_events: int = 1000  # per topic
    max_age: float = 86400.0  # seconds; 0 keeps events until max_events pushes them out
    max_replay: int = 10000  # events one resume replays; a client that missed more gets a reset
    # bytes of history one resume reads from Redis in one reply; past them, a reset too
    max_replay_bytes: int = 16 * MiB
    # seconds after its last publish that a topic is dropped (history, retained event, registry); 0: never
    ttl: float = 86400.0
    # bytes of history the memory broker holds over all topics; past it, the least recently published
    # topics lose theirs first. Redis bounds its own memory (maxmemory).
    max_total_bytes: int = 256 * MiB


@dataclass(frozen=True, slots=True)
class PublishConfig:
    idempotency_window: float = 300.0  # seconds an Idempotency-Key answers with its first result


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 1 * MiB
    max_data_bytes: int = 256 * KiB
    max_batch: int = 1000
    max_topics: int = 100  # per subscription, and per published event
    max_connections: int = 0  # streams per process; 0: the open-file limit less a reserve
    max_connections_per_ip: int = 64  # streams per client address; 0: unlimited
    max_http_connections_per_ip: int = 0  # connections not streams, per peer address; 0: unlimited
    publish_rate: float = 0.0  # events/s per token (per client address without one); 0: unlimited
    publish_burst: int = 0  # events a publisher may send at once; 0: a second's worth, at least a batch


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # HS256 shared secret. Kept out of repr so that a logged config never carries it.
    jwt_secret: str = field(default="", repr=False)
    jwt_public_key: str = ""  # RS256/ES256: the PEM text, or the path of a PEM file
    jwt_algorithm: str = ""  # empty: HS256 with a secret, RS256 or ES256 by the public key's type
    public_topics: tuple[str, ...] = ()  # selectors anyone may subscribe to without a token
    # seconds before its token's exp that a stream is sent `event: auth-expiring`; at exp it is closed
    expiry_notice: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key)


@dataclass(frozen=True, slots=True)
class CorsConfig:
    origins: tuple[str, ...] = ()  # allowed origins (scheme://host[:port]) or "*"; empty: no CORS
    allow_credentials: bool = False  # let browsers send the hub_token cookie cross-origin
    max_age: int = 600  # seconds a browser may cache a preflight answer


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    interval: float = 1.0  # seconds between a process's writes of who it holds; counts lag this much
    events: tuple[str, ...] = ()  # selectors of topics whose joins and leaves go to `$presence/<topic>`
    metrics_top: int = 0  # selectors labelled in /metrics with their hub-wide streams; 0: none


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    sse: SseConfig = field(default_factory=SseConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)


_POSITIVE = {
    "server.workers",
    "server.shutdown_timeout",
    "server.header_timeout",
    "server.idle_timeout",
    "server.body_timeout",
    "redis.connect_timeout",
    "redis.max_connections",
    "redis.wait_timeout",
    "sse.heartbeat_interval",
    "sse.max_buffer",
    "sse.subscribe_timeout",
    "sse.drain_timeout",
    "history.max_events",
    "history.max_replay",
    "history.max_replay_bytes",
    "history.max_total_bytes",
    "publish.idempotency_window",
    "limits.max_body_bytes",
    "limits.max_data_bytes",
    "limits.max_batch",
    "limits.max_topics",
    "presence.interval",
}
_NOT_NEGATIVE = {
    "redis.wait_replicas",
    "history.max_age",
    "history.ttl",
    "sse.shutdown_retry_window",
    "auth.expiry_notice",
    "limits.max_connections",
    "limits.max_connections_per_ip",
    "limits.max_http_connections_per_ip",
    "limits.publish_rate",
    "limits.publish_burst",
    "cors.max_age",
    "presence.metrics_top",
}
JWT_ALGORITHMS = (
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)


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


# `HUB_*` variables that are not config keys: the file to read, and where `hub publish`/`hub subscribe`
# find a hub (often exported in the same shell that runs `hub serve`).
NOT_CONFIG_VARIABLES = frozenset({"HUB_CONFIG", "HUB_URL", "HUB_TOKEN"})


def env_name(key: str) -> str:
    return "HUB_" + key.replace(".", "_").upper()


def _coerce(key: str, kind: Any, value: Any, from_text: bool) -> Any:
    if kind == tuple[str, ...]:
        if from_text and isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
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
    # later sources win: the file, then the environment, then flags
    values = _from_file(file_values or {}, known)
    values.update(_from_env(env or {}, known))
    values.update(_from_overrides(overrides or {}, known))
    _check_ranges(values)
    kwargs: dict[str, Any] = {}
    for name, cls in sections().items():
        own = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(name + ".")}
        kwargs[name] = cls(**own)
    config = Config(**kwargs)
    _check_deployment(config)
    _check_security(config)
    _check_presence(config)
    return config


def _from_file(file_values: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for section, body in file_values.items():
        if section not in sections():
            raise ConfigError(f"unknown config section [{section}]")
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a table")
        for name, value in body.items():
            key = f"{section}.{name}"
            if key not in known:
                raise ConfigError(f"unknown config key {key}")
            values[key] = _coerce(key, known[key], value, from_text=False)
    return values


def _from_env(env: Mapping[str, str], known: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    env_keys = {env_name(k): k for k in known}
    for var, value in env.items():
        if var.startswith("HUB_") and var not in env_keys and var not in NOT_CONFIG_VARIABLES:
            raise ConfigError(f"unknown environment variable {var}")
        if var in env_keys:
            key = env_keys[var]
            values[key] = _coerce(key, known[key], value, from_text=True)
    return values


def _from_overrides(overrides: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:  # a flag that was not given
            continue
        if key not in known:
            raise ConfigError(f"unknown config key {key}")
        values[key] = _coerce(key, known[key], value, from_text=True)
    return values


def _check_ranges(values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if key in _POSITIVE and value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value!r}")
    if values.get("publish.idempotency_window", 1) < 1:
        raise ConfigError("publish.idempotency_window: must be at least 1 second")
    for key in _NOT_NEGATIVE:
        if values.get(key, 0) < 0:
            raise ConfigError(f"{key}: must be 0 or more, got {values[key]!r}")
    if not 0 <= values.get("server.port", 0) <= 65535:
        raise ConfigError("server.port: must be from 0 (any free port) to 65535")


def _check_deployment(config: Config) -> None:
    if not 1 <= config.redis.partitions <= MAX_PARTITIONS:
        raise ConfigError(f"redis.partitions: must be from 1 to {MAX_PARTITIONS}")
    if config.redis.cluster and not config.redis.url:
        raise ConfigError("redis.cluster: needs redis.url, one node of the cluster")
    if config.server.workers > 1 and not config.redis.url:
        raise ConfigError("server.workers: more than one worker needs redis.url")


def _check_presence(config: Config) -> None:
    for text in config.presence.events:
        try:
            Selector.parse(text)
        except HttpError as exc:
            raise ConfigError(f"presence.events: {exc.message}") from None
    if config.presence.metrics_top > MAX_LISTED:
        raise ConfigError(f"presence.metrics_top: at most {MAX_LISTED}")


def _check_security(config: Config) -> None:
    auth = config.auth
    if auth.jwt_secret and auth.jwt_public_key:
        raise ConfigError("auth.jwt_secret and auth.jwt_public_key: set one, not both")
    if auth.jwt_algorithm and auth.jwt_algorithm not in JWT_ALGORITHMS:
        raise ConfigError(
            f"auth.jwt_algorithm: {auth.jwt_algorithm!r} is not one of {', '.join(JWT_ALGORITHMS)}"
        )
    if auth.jwt_algorithm and auth.enabled and auth.jwt_algorithm.startswith("HS") != bool(auth.jwt_secret):
        needs = "auth.jwt_secret" if auth.jwt_algorithm.startswith("HS") else "auth.jwt_public_key"
        raise ConfigError(f"auth.jwt_algorithm: {auth.jwt_algorithm} needs {needs}")
    algorithm = auth.jwt_algorithm or "HS256"
    if auth.jwt_secret and len(auth.jwt_secret.encode()) < HMAC_MIN_BYTES[algorithm]:
        # RFC 7518 3.2: an HMAC key shorter than the hash can be brute-forced offline from any token.
        raise ConfigError(f"auth.jwt_secret: {algorithm} needs at least {HMAC_MIN_BYTES[algorithm]} bytes")
    for text in auth.public_topics:
        try:
            Selector.parse(text)
        except HttpError as exc:
            raise ConfigError(f"auth.public_topics: {exc.message}") from None
    if config.server.log_format not in ("auto", "json", "text"):
        raise ConfigError(f"server.log_format: {config.server.log_format!r} is not auto, json or text")
    for proxy in config.server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"server.trusted_proxies: {proxy!r} is not an address or network") from None
    for origin in config.cors.origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(f'cors.origins: {origin!r} is not "*" nor scheme://host[:port]')
    if "*" in config.cors.origins and config.cors.allow_credentials:
        # Browsers refuse credentials with a wildcard origin, and echoing any origin back would hand
        # every site on the web the user's cookie.
        raise ConfigError('cors.allow_credentials: not allowed with the origin "*"; list the origins')


HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_ORIGIN = re.compile(r"https?://[^/\s:]+(:\d{1,5})?")


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
