"""A stream whose token expires: told `auth-expiring` a while before its `exp`, closed at it.

A token's grants are checked when a stream opens; a stream lives on for hours. So a stream opened with a
token that expires is scheduled two things: at `auth.expiry_notice` seconds before `exp`, an
`event: auth-expiring` (data: the seconds left), for a client to fetch a fresh token; at `exp`, the end,
with a comment saying why and a `retry:`. A client that reconnects with a fresh token and its
Last-Event-ID loses nothing: the hub replays what it missed.
"""

from __future__ import annotations

import asyncio
import math
import time

from hub.engine.fanout import Fanout
from hub.engine.outbox import CloseReason, Outbox
from hub.wire import frames


class StreamExpiry:
    """The two timers of one stream's token; `cancel` when the stream ends first."""

    __slots__ = ("_end", "_fanout", "_notice", "_outbox", "_retry")

    def __init__(
        self, fanout: Fanout, outbox: Outbox, expires: float, *, notice: float, retry_ms: int
    ) -> None:
        """`expires`: the token's exp (seconds since the epoch); `notice`: how long before it the stream
        is told; `retry_ms`: the reconnection delay its last block sets."""
        loop = asyncio.get_running_loop()
        self._fanout = fanout
        self._outbox = outbox
        self._retry = retry_ms
        left = expires - time.time()
        # Opened within the notice: told at once, with the seconds it has.
        self._notice = (
            loop.call_later(max(0.0, left - notice), self._tell, loop.time() + left) if notice else None
        )
        self._end = loop.call_later(max(0.0, left), self._close)

    def cancel(self) -> None:
        if self._notice is not None:
            self._notice.cancel()
        self._end.cancel()

    def _tell(self, end: float) -> None:
        self._notice = None
        outbox = self._outbox
        left = max(0, math.ceil(end - asyncio.get_running_loop().time()))
        self._fanout.tell(outbox, frames.auth_expiring(outbox.format, outbox.chunked, left))

    def _close(self) -> None:
        if not self._outbox.closed:
            self._fanout.close(self._outbox, frames.auth_expired(self._retry), CloseReason.AUTH_EXPIRED)
