"""One publish's script calls on a Redis Cluster, and what their failures mean.

Every partition's call of one publish goes in one pipeline (one round trip per node, not one per
partition); the answer says exactly one of: every partition published, nothing was (`Refused` or a
connection error before anything was sent), or the outcome is unknown (`OutcomeUnknown`)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from hub.brokers import redis_scripts, sending
from hub.brokers.script_args import ScriptCall
from hub.config import RedisConfig
from hub.errors import OutcomeUnknown

REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.ResponseError,  # TRYAGAIN and "non local key" while a slot migrates, among others
    OSError,
)
# What a cluster answers while slots move or a shard fails over: no refusal of the hub's writes.
_TRANSIENT = (
    redis.exceptions.TryAgainError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
)


class Refused(Exception):
    """Every partition a publish was sent to refused it (error replies): nothing was published."""

    def __init__(self, reply: redis.exceptions.ResponseError) -> None:
        super().__init__(str(reply))
        self.reply = reply


def is_transient(exc: redis.exceptions.ResponseError) -> bool:
    return isinstance(exc, _TRANSIENT) or "non local key" in str(exc)


class PublishCalls:
    """Runs the publish script's calls of one publish, each on its partition's node."""

    def __init__(
        self, client: RedisCluster, script: AsyncScript, config: RedisConfig, timeout: float
    ) -> None:
        self._client = client
        self._script = script
        self._config = config
        self._timeout = timeout

    async def run(self, calls: list[ScriptCall]) -> list[bytes]:
        """Every partition's script call of one publish in one pipeline: one round trip per node, not
        one per partition. With `wait_replicas`, a WAIT follows each node's calls on the same connection
        (WAIT counts the replicas that have that connection's writes).

        Raises what redis-py raised, or the `ResponseError` of a partition, only when nothing was
        published; `OutcomeUnknown` when something may have been (see `hub.brokers.sending`)."""
        with sending.watch() as sends:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._run_rounds(calls)
            except REDIS_DOWN as exc:  # asyncio's TimeoutError among them
                if sends.sent:
                    raise OutcomeUnknown(_unanswered(exc)) from None
                raise

    async def _run_rounds(self, calls: list[ScriptCall]) -> list[bytes]:
        config = self._config
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for body in (None, redis_scripts.PUBLISH):  # EVALSHA, then EVAL where a node lacks the script
            pipe = self._client.pipeline(transaction=False)
            nodes = {}
            for k in todo:
                keys, args = calls[k]
                # execute_command: the cluster pipeline refuses its evalsha() method, not the command
                if body is None:
                    pipe.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
                else:
                    pipe.execute_command("EVAL", body, len(keys), *keys, *args)
                if config.wait_replicas:
                    node = self._client.get_node_from_key(keys[0])
                    if node is None:
                        down = redis.exceptions.ClusterDownError("no node serves a partition now")
                        raise _refused(replies, down)
                    nodes[node.name] = node
            for node in nodes.values():
                pipe.execute_command(
                    "WAIT", config.wait_replicas, int(config.wait_timeout * 1000), target_nodes=node
                )
            results = await pipe.execute(raise_on_error=False)
            missing, refusals = [], []
            for k, reply in zip(todo, results, strict=False):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    missing.append(k)
                elif isinstance(reply, redis.exceptions.ResponseError):
                    refusals.append(reply)  # an error reply: the script did not run
                elif isinstance(reply, Exception):
                    raise OutcomeUnknown(_unanswered(reply))
                else:
                    replies[k] = bytes(reply)
            if refusals:
                raise _refused(replies, refusals[0])
            for acked in results[len(todo) :]:
                # The primaries have the event (subscribers may have it too): not a "nothing published".
                if isinstance(acked, Exception) or int(acked) < config.wait_replicas:
                    confirmed = 0 if isinstance(acked, Exception) else int(acked)
                    raise OutcomeUnknown(
                        f"{confirmed} of {config.wait_replicas} replicas confirmed the event within"
                        f" {config.wait_timeout} s (a failover may lose it)"
                    )
            if not missing:
                return replies
            todo = missing
        raise _refused(replies, redis.exceptions.NoScriptError("redis refused the publish script"))


def _refused(replies: list[Any], reply: redis.exceptions.ResponseError) -> Exception:
    if any(r is not None for r in replies):
        return OutcomeUnknown("the event was published in some of its partitions only")
    return Refused(reply)


def _unanswered(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
        return "redis did not answer in time"
    return "the connection to redis was lost before its answer"
