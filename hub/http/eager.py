"""Running a coroutine at once, up to its first wait, as Python 3.12's eager tasks do (this hub runs
on 3.11): a publish the memory broker takes without waiting is answered with no task and no loop round,
and one that waits for Redis has its command sent before the call returns."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_eagerly(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """`coro` run now, on the running `loop`, until it finishes or waits: a done future, or a task that
    carries it on."""
    try:
        waiting_on = coro.send(None)
    except StopIteration as done:
        future: asyncio.Future[T] = loop.create_future()
        future.set_result(done.value)
        return future
    except Exception as exc:
        future = loop.create_future()
        future.set_exception(exc)
        return future
    return loop.create_task(_carry_on(coro, waiting_on))


async def _carry_on(coro: Coroutine[Any, Any, T], waiting_on: Any) -> T:
    # `coro` yielded what it awaits, as a coroutine yields to its task: a future, or None for a bare
    # yield (asyncio.sleep(0)). This task waits on it in its place, then resumes the coroutine, which
    # reads the future's outcome itself, exactly as it would have under its own task.
    while True:
        cancelled: BaseException | None = None
        if waiting_on is not None:
            # As a task does with what its coroutine yields: the future is now ours to wait on.
            waiting_on._asyncio_future_blocking = False
        try:
            await (asyncio.sleep(0) if waiting_on is None else waiting_on)
        except asyncio.CancelledError as exc:
            # This task was cancelled, not the future (a cancelled task cancels the future it waits on,
            # and then the coroutine meets that itself): the coroutine is cancelled where it waits.
            if waiting_on is None or not waiting_on.cancelled():
                cancelled = exc
        except BaseException:
            pass  # the future's own failure: the coroutine reads it
        try:
            waiting_on = coro.send(None) if cancelled is None else coro.throw(cancelled)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
