"""Every key of one hub prefix, read from every node, compared before and after a batch of requests.

What a publish writes may change, and only for the topics it was accepted for: their histories, their
members of the topic registry and its name indexes and fields of the retained hash, a publish token, the
name indexes' migration cursor, and the counter of the
sequence hash (never its epoch). Presence (each process's streams, rewritten every round) may change;
its commands may not. Everything else must be byte for byte the same: DUMP for any key,
type-aware reads where a publish may legitimately touch part of a key. Key names follow
`hub.brokers.redis_keys` and `hub.brokers.cluster.partitions` (`<prefix>:` or `<prefix>:{<tag>}:`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.processes import RespConnection

Value = object


@dataclass(frozen=True)
class RedisState:
    keys: dict[str, Value]  # key -> its DUMP, or a type-aware reading (see _read)

    @classmethod
    def capture(cls, ports: Sequence[int], prefix: str) -> RedisState:
        keys: dict[str, Value] = {}
        glob = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + ":*"  # a SCAN glob
        for port in ports:
            with RespConnection(port) as conn:
                if conn.call("ROLE")[0] != "master":
                    continue
                cursor = "0"
                while True:
                    cursor, found = conn.call("SCAN", cursor, "MATCH", glob, "COUNT", 1000)
                    for key in found:
                        keys[key] = _read(conn, key, prefix)
                    if cursor == "0":
                        break
        return cls(keys)

    def changes(
        self,
        after: RedisState,
        prefix: str,
        written: Iterable[str],
        published: bool,
        commanded: bool = False,
    ) -> list[tuple[str, str]]:
        """What changed that the accepted publishes (to `written` topics; any at all if `published`)
        and disconnects (if `commanded`) do not account for, as (kind of key, what changed). Empty when
        nothing else moved."""
        topics = set(written)
        out = []
        for key in sorted(self.keys.keys() | after.keys.keys()):
            old, new = self.keys.get(key), after.keys.get(key)
            if old == new:
                continue
            kind, rest = _kind(key, prefix)
            if kind in ("seq", "topics", "retained", "names"):
                # a hash or sorted set a publish creates if it is missing
                old, new = old or {}, new or {}
            if kind == "seq" and isinstance(old, dict) and isinstance(new, dict) and published:
                same_epoch = old.get("epoch") in (None, new.get("epoch"))
                if same_epoch and int(new.get("seq", 0)) >= int(old.get("seq", 0)):
                    continue
            elif kind in ("topics", "retained", "names") and isinstance(old, dict) and isinstance(new, dict):
                if _without(old, topics) == _without(new, topics):
                    continue
            elif kind == "history" and rest in topics:
                continue
            elif kind == "token" and old is None and published:
                continue  # a new publish token, answering retries of an accepted publish
            elif kind == "cursor" and published:
                continue  # how far publishes have indexed the names an older hub wrote
            elif kind == "marks":
                continue  # the sweeper's, on its own clock
            elif kind == "control" and commanded:
                continue  # an accepted disconnect's command
            elif kind == "presence":
                continue  # each process's own streams and liveness, written every round (not commands)
            out.append((kind, f"{key!r}: {_short(old)} -> {_short(new)}"))
        return out


def _kind(key: str, prefix: str) -> tuple[str, str]:
    rest = key[len(prefix) + 1 :]
    tagged = re.match(r"\{([^}]*)\}:", rest)
    if tagged:
        rest = rest[tagged.end() :]
        if tagged.group(1).startswith("presence"):
            return ("control", rest) if rest == "control" else ("presence", rest)
    if rest in ("seq", "topics", "retained"):
        return rest, ""
    if rest in ("topics:names", "retained:names"):
        return "names", rest  # sorted by name, a publish adds its topics
    if rest == "topics:marks":
        return "marks", rest  # the counter by time, written by each hub's topic sweep (history.ttl)
    if rest == "topics:names:cursor":
        return "cursor", rest
    if rest.startswith("h:"):
        return "history", rest[2:]
    if rest.startswith(("pub:", "idem:")):
        return "token", rest
    return "other", rest


def _read(conn: RespConnection, key: str, prefix: str) -> Value:
    kind, _ = _kind(key, prefix)
    if kind == "seq" or kind == "retained":
        flat = conn.call("HGETALL", key)
        assert isinstance(flat, list), flat
        return dict(zip(flat[::2], flat[1::2], strict=True))
    if kind in ("topics", "names"):
        flat = conn.call("ZRANGE", key, 0, -1, "WITHSCORES")
        assert isinstance(flat, list), flat
        return dict(zip(flat[::2], flat[1::2], strict=True))
    return ("dump", conn.call("DUMP", key))


def _without(mapping: dict[object, object], topics: set[str]) -> dict[object, object]:
    return {k: v for k, v in mapping.items() if k not in topics}


def _short(value: Value) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."
