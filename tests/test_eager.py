"""hub.http.eager runs a coroutine at once, and a coroutine that waits carries on in a task exactly as
under a task of its own: results, failures, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from hub.http.eager import run_eagerly


async def test_a_coroutine_that_never_waits_is_done_before_the_call_returns():
    ran = []

    async def publish() -> int:
        ran.append(1)
        return 7

    answer = run_eagerly(publish(), asyncio.get_running_loop())
    assert ran == [1]
    assert answer.done()
    assert answer.result() == 7


async def test_a_failure_before_any_wait_is_the_answer():
    async def refuse() -> None:
        raise ValueError("no")

    answer = run_eagerly(refuse(), asyncio.get_running_loop())
    assert answer.done()
    assert isinstance(answer.exception(), ValueError)


async def test_a_coroutine_runs_up_to_its_first_wait_at_once_then_carries_on():
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()
    steps = []

    async def call() -> int:
        steps.append("sent")  # a command is written before the call returns
        value = await reply
        steps.append("answered")
        await asyncio.sleep(0)  # a bare yield as well
        await asyncio.sleep(0.01)
        return value + 1

    answer = run_eagerly(call(), loop)
    assert steps == ["sent"]
    assert not answer.done()
    reply.set_result(41)
    assert await answer == 42
    assert steps == ["sent", "answered"]


async def test_the_coroutine_meets_the_failure_of_what_it_waits_for():
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()
    caught = []

    async def call() -> int:
        try:
            return await reply
        except KeyError as exc:
            caught.append(exc)
            raise

    answer = run_eagerly(call(), loop)
    reply.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        await answer
    assert len(caught) == 1


async def test_cancelling_the_answer_cancels_the_coroutine_where_it_waits():
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()
    cleaned = []

    async def call() -> int:
        try:
            return await reply
        finally:
            cleaned.append(True)

    answer = run_eagerly(call(), loop)
    await asyncio.sleep(0)
    answer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer
    assert reply.cancelled()
    assert cleaned == [True]


async def test_a_cancellation_that_comes_after_the_wait_ended_still_reaches_the_coroutine():
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()
    reached = []

    async def call() -> int:
        value = await reply
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            reached.append(value)
            raise
        return value

    answer = run_eagerly(call(), loop)
    reply.set_result(1)
    await asyncio.sleep(0.01)
    answer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer
    assert reached == [1]
