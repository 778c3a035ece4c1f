"""One connection kept open: opened, served until it ends, opened again after a capped, jittered backoff.

What serving a connection means (what it subscribes to, what its end means) is the caller's: this loop
only retries, logs once per failure, and never swallows a cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import hiredis

from hub.brokers.transport.endpoint import RawConnection

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.05
BACKOFF_MAX = 5.0


class CommandRefused(Exception):
    """Redis answered a command on a served connection with an error: the connection is dropped."""


# What ends a connection, or keeps one from opening, that is worth no traceback: it is retried.
ENDINGS = (OSError, EOFError, hiredis.ProtocolError, TimeoutError, CommandRefused)


async def supervise(
    connect: Callable[[], Awaitable[RawConnection]],
    serve: Callable[[RawConnection], Awaitable[None]],
    ended: Callable[[], bool],
    *,
    running: Callable[[], bool],
    where: str,
) -> None:
    """While `running()`: `connect()`, then `serve(connection)` until it raises why the connection ended.
    `ended()` is called once each connection (or attempt) is over, and tells whether it had been up (the
    caller's own sense: subscribed, caught up): the backoff then starts again from its minimum.
    `where` names the server in the logs (never with a password)."""
    backoff = BACKOFF_MIN
    while running():
        connection: RawConnection | None = None
        failure = ""
        try:
            connection = await connect()
            await serve(connection)
        except ENDINGS as exc:
            failure = str(exc) or type(exc).__name__
        except Exception:
            # A bug in serving must not end the connection for good: log it, reconnect.
            log.exception("redis connection to %s failed; reconnecting", where)
        finally:
            if connection is not None:
                connection.close()
            was_up = ended()
        if was_up:
            backoff = BACKOFF_MIN
        delay = backoff * random.uniform(0.5, 1.5)
        if failure and was_up:
            log.warning("redis connection to %s lost: %s; reconnecting", where, failure)
        elif failure:
            log.warning("redis %s not reachable: %s; retrying in %.1f s", where, failure, delay)
        await asyncio.sleep(delay)
        backoff = min(backoff * 2, BACKOFF_MAX)
