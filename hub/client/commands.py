"""`hub publish` and `hub subscribe`: `hub.client` from a terminal, for scripts and for watching a hub.

Exit status: 0 done (or stopped by SIGINT/SIGTERM), 1 the hub could not be reached, 2 the hub refused.
Events go to stdout, flushed one by one so a pipe sees each as it arrives; everything else to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import uuid

import orjson

from hub.client.hub_client import RETRIED_STATUSES, ClientError, Event, HubClient, HubRefused

EXIT_UNREACHABLE = 1
EXIT_REFUSED = 2
# `hub subscribe` gives up on a hub it cannot reach after this many attempts in a row (backoff between).
SUBSCRIBE_MAX_FAILURES = 5


def run(args: argparse.Namespace) -> int:
    command = _publish(args) if args.command == "publish" else _subscribe(args)
    try:
        return asyncio.run(command)
    except HubRefused as exc:
        print(f"hub {args.command}: {exc.message} ({exc.status} {exc.code})", file=sys.stderr)
        return EXIT_REFUSED
    except ClientError as exc:
        print(f"hub {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except _BadInput as exc:
        print(f"hub {args.command}: {exc}", file=sys.stderr)
        return EXIT_REFUSED


class _BadInput(Exception):
    pass


async def _publish(args: argparse.Namespace) -> int:
    if args.binary and args.json:
        raise _BadInput("DATA is JSON or bytes, not both")
    if args.binary:
        raw = sys.stdin.buffer.read() if args.data == "-" else os.fsencode(args.data)
    text: str = "" if args.binary else sys.stdin.read() if args.data == "-" else args.data
    data: object = raw if args.binary else text
    if args.json:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise _BadInput(f"DATA is not JSON: {exc}") from None
    # Made here, not by the client: if the publish gives up, the key is what lets a second run settle it.
    key = args.idempotency_key or uuid.uuid4().hex
    async with HubClient(args.url, token=args.token, publish_deadline=max(0.0, args.retry_for)) as client:
        try:
            event_id = await client.publish(
                args.topic, data, event=args.event, retain=args.retain, idempotency_key=key
            )
        except ClientError as exc:
            if not isinstance(exc, HubRefused) or exc.status in RETRIED_STATUSES:
                print(
                    f"hub publish: to retry it without publishing it twice: --idempotency-key {key}",
                    file=sys.stderr,
                )
            raise
    print(event_id, flush=True)
    return 0


async def _subscribe(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        async with (
            HubClient(args.url, token=args.token) as client,
            client.subscribe(
                *args.selectors, last_event_id=args.since, max_failures=SUBSCRIBE_MAX_FAILURES
            ) as events,
        ):
            async for event in events:
                print(_json_line(event) if args.json else _text_line(event), flush=True)
    except asyncio.CancelledError:
        if not stopped:
            raise
        task.uncancel()  # our own signal's cancellation, handled: asyncio.run must not see it
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def _text_line(event: Event) -> str:
    # One line per event, whatever the data: its line breaks are written as \n and its backslashes
    # doubled, so that bytes, written `\base64:` and base64, cannot be mistaken for any text.
    if event.is_binary:
        return f"{event.id} {event.event} \\base64:{event.data}"
    data = event.data.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{event.id} {event.event} {data}"


def _json_line(event: Event) -> str:
    doc: dict[str, object] = {"id": event.id, "event": event.event, "data": event.data}
    if event.is_binary:
        doc["encoding"] = event.encoding
    return orjson.dumps(doc).decode()
