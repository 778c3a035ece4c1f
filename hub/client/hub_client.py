"""An asyncio client for the hub: publish, and subscribe as an async iterator that never loses its place.

    async with HubClient("http://127.0.0.1:8080", token=token) as hub:
        await hub.publish("news/eu", {"title": "hello"})
        async with hub.subscribe("news/*") as events:
            async for event in events:
                ...

A subscription reconnects by itself (the stream ended, broke, or went silent past `heartbeat_timeout`)
and resumes with `Last-Event-ID`, so the hub replays what it missed; a `reset` event, when the hub cannot
prove continuity, is handed to the caller like any other event. It is an edge: it speaks HTTP to a hub
and must never import the server's engine.

    ClientError                 base of what this client raises
    ├── HubRefused              the hub answered with a JSON error: status, code, message (for a
    │                           publish still answered 503 or 504 after its retries, that answer)
    └── HubUnreachable          no answer after the retries allowed (connection trouble; a
                                subscription's 5xx too)

A publish always goes under an Idempotency-Key (the caller's, or one made up per call) and is retried
under it after a 503 (nothing published), a 504 (outcome unknown), a broken connection or a timeout, with
jittered backoff, for at most `publish_retries` retries and `publish_deadline` seconds: each publish is
delivered once, whatever of these happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
import orjson

from hub.errors import HttpError
from hub.wire import binary
from hub.wire.sse_parser import ServerSentEvent, SseParser

Event = ServerSentEvent

DEFAULT_URL = "http://127.0.0.1:8080"
# Used before a stream has sent its own `retry:`, and the longest any reconnection waits.
DEFAULT_RECONNECT_DELAY = 1.0
MAX_RECONNECT_DELAY = 30.0
# The smallest base for backing off after failures, should a stream have sent `retry: 0`.
MIN_FAILURE_BACKOFF = 0.1
PUBLISH_BACKOFF = 0.1
MAX_PUBLISH_BACKOFF = 2.0
# How long a publish keeps retrying, in all: well inside the hub's publish.idempotency_window (300 s), past
# which a retry under the same key would no longer be recognised.
PUBLISH_DEADLINE = 30.0
# The answers after which the same request, under the same key, may still be accepted: 503 (nothing was
# published) and 504 (the outcome is unknown: the key settles it), and a gateway's 502 (no hub reached).
RETRIED_STATUSES = frozenset({502, 503, 504})
READ_CHUNK = 64 * 1024
# The event a stream gets a while before its token expires (data: the seconds left).
AUTH_EXPIRING = "auth-expiring"
OCTET_STREAM = "application/octet-stream"
# A byte stream's position its first byte follows: what its offsets count from (see subscribe_bytes).
STREAM_START = "Hub-Stream-Start"

TokenProvider = Callable[[], "str | Awaitable[str]"]


class ClientError(Exception):
    """Base of what `HubClient` raises."""


class HubRefused(ClientError):
    """The hub refused a request: `status` and the `code` and `message` of its JSON error."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class HubUnreachable(ClientError):
    """The hub could not be reached (or a subscription kept being answered 5xx) for as many attempts as
    were allowed. A publish may or may not have been accepted: retry it with the same idempotency_key."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One event of a batch; `topic` is one topic or several."""

    topic: str | Sequence[str]
    data: object
    event: str | None = None
    retry: int | None = None
    retain: bool = False

    def body(self) -> dict[str, object]:
        doc: dict[str, object] = {"data": self.data}
        if isinstance(self.data, bytes | bytearray | memoryview):  # a binary event: base64, marked
            doc = {"data": binary.encode(bytes(self.data)), "encoding": binary.ENCODING}
        if isinstance(self.topic, str):
            doc["topic"] = self.topic
        else:
            doc["topics"] = list(self.topic)
        if self.event is not None:
            doc["event"] = self.event
        if self.retry is not None:
            doc["retry"] = self.retry
        if self.retain:
            doc["retain"] = True
        return doc


def _event_params(
    topic_or_topics: str | Sequence[str], event: str | None, retry: int | None, retain: bool
) -> list[tuple[str, str]]:
    """An event's fields as query parameters: how a binary or streamed publish gives them."""
    topics = [topic_or_topics] if isinstance(topic_or_topics, str) else list(topic_or_topics)
    params = [("topic", topic) for topic in topics]
    if event is not None:
        params.append(("event", event))
    if retry is not None:
        params.append(("retry", str(retry)))
    if retain:
        params.append(("retain", "true"))
    return params


class HubClient:
    """A hub at `url`. Owns an `aiohttp.ClientSession` unless given one (which it then leaves open)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        session: aiohttp.ClientSession | None = None,
        publish_retries: int = 10,
        publish_deadline: float = PUBLISH_DEADLINE,
        timeout: float = 30.0,
    ) -> None:
        """`token`, or `token_provider`: a function (plain or async) asked for a token before each
        request and each stream's (re)connection, so that a token that expires is replaced: a stream told
        `auth-expiring` reconnects at once with a fresh one and resumes from its last id, losing nothing.
        `publish_retries` and `publish_deadline` (seconds, all attempts and waits together) bound how
        long a publish is retried; `timeout` bounds each request."""
        if token is not None and token_provider is not None:
            raise ValueError("give a token or a token_provider, not both")
        self.url = url.rstrip("/")
        self.token = token
        self.token_provider = token_provider
        self.publish_retries = publish_retries
        self.publish_deadline = publish_deadline
        self.timeout = timeout
        self._session = session
        self._owns_session = session is None
        self._subscriptions: set[_Stream] = set()

    async def __aenter__(self) -> HubClient:
        _ = self.session  # created inside the running loop, where aiohttp wants it
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def headers(self) -> dict[str, str]:
        """The Authorization header: the token, or a fresh one from the provider."""
        token = self.token
        if self.token_provider is not None:
            provided = self.token_provider()
            token = await provided if inspect.isawaitable(provided) else provided
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def publish(
        self,
        topic_or_topics: str | Sequence[str],
        data: object,
        *,
        event: str | None = None,
        retry: int | None = None,
        retain: bool = False,
        idempotency_key: str | None = None,
    ) -> str:
        """Publish one event; returns the id the hub gave it. `data` as bytes is sent as they are
        (`application/octet-stream`), and subscribers get it as a binary event."""
        if isinstance(data, bytes | bytearray | memoryview):
            params = _event_params(topic_or_topics, event, retry, retain)
            doc = await self._publish(bytes(data), OCTET_STREAM, params, idempotency_key)
        else:
            body = Publication(topic_or_topics, data, event, retry, retain).body()
            doc = await self._publish(orjson.dumps(body), "application/json", (), idempotency_key)
        return str(doc["id"])

    async def publish_batch(
        self, events: Sequence[Publication | Mapping[str, object]], *, idempotency_key: str | None = None
    ) -> list[str]:
        """Publish several events at once (all or none are accepted); returns their ids in order."""
        body = [e.body() if isinstance(e, Publication) else dict(e) for e in events]
        doc = await self._publish(orjson.dumps(body), "application/json", (), idempotency_key)
        return [str(id_) for id_ in doc["ids"]]

    async def publish_stream(
        self,
        topic_or_topics: str | Sequence[str],
        body: AsyncIterable[bytes],
        *,
        content_type: str = OCTET_STREAM,
        event: str | None = None,
    ) -> dict[str, Any]:
        """Relay `body` through `POST /publish/stream` as it is produced: with the default content type
        each piece the hub receives is one binary event. Returns the hub's summary (`events`,
        `last_id`, `done_id`). Not retried: a stream cannot be sent twice."""
        return await self._call(
            "POST",
            "/publish/stream",
            params=_event_params(topic_or_topics, event, None, False),
            data=body,
            content_type=content_type,
            streamed=True,
        )

    async def subscribers(self, topic: str) -> dict[str, int]:
        """The streams that receive `topic`'s events on every hub process, by selector."""
        doc = await self._read(f"/topics/{quote(topic, safe='/')}/subscribers")
        return {item["selector"]: item["subscribers"] for item in doc["selectors"]}

    async def presence(self, topic: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """Up to `limit` of those streams: each one's `conn`, `sub`, `name`, `since` and `selector`."""
        doc = await self._read(f"/topics/{quote(topic, safe='/')}/presence", {"limit": str(limit)})
        return list(doc["members"])

    async def disconnect(
        self,
        *,
        sub: str | None = None,
        name: str | None = None,
        topic: str | None = None,
        conn: str | None = None,
        reason: str = "",
    ) -> int:
        """Close, on every hub process, the streams matching every field given (a token with
        `hub.control` when auth is on); returns how many the process asked closed at once."""
        fields = {"sub": sub, "name": name, "topic": topic, "conn": conn}
        body = {**{k: v for k, v in fields.items() if v is not None}, "reason": reason}
        doc = await self._call(
            "POST", "/disconnect", expect=202, data=orjson.dumps(body), content_type="application/json"
        )
        return int(doc["closed_here"])

    async def _read(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self._call("GET", path, params=params)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        expect: int = 200,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        data: bytes | AsyncIterable[bytes] | None = None,
        content_type: str | None = None,
        streamed: bool = False,
    ) -> dict[str, Any]:
        """One request whose answer is JSON, not retried: the document, or the hub's refusal raised.
        `streamed`: the body takes as long as its source does, and only connecting is bounded."""
        headers = await self.headers()
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            async with self.session.request(
                method,
                self.url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None if streamed else self.timeout, sock_connect=self.timeout
                ),
            ) as resp:
                if resp.status != expect:
                    raise await refusal_from(resp)
                doc: dict[str, Any] = await resp.json()
                return doc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise HubUnreachable(f"cannot reach {self.url}: {describe(exc)}") from exc

    async def _publish(
        self,
        payload: bytes,
        content_type: str,
        params: Sequence[tuple[str, str]],
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        # Always under a key, one per publish: a request that timed out or was answered 504 may have
        # been published, and only the key lets a retry (this one, or the caller's) publish it once.
        key = idempotency_key or uuid.uuid4().hex
        headers = {**await self.headers(), "Content-Type": content_type, "Idempotency-Key": key}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_deadline
        attempt = 0
        while True:
            left = deadline - loop.time()
            timeout = aiohttp.ClientTimeout(total=max(0.001, min(self.timeout, left)))
            try:
                async with self.session.post(
                    self.url + "/publish", params=params, data=payload, headers=headers, timeout=timeout
                ) as resp:
                    if resp.status == 200:
                        doc: dict[str, Any] = await resp.json()
                        return doc
                    failure: ClientError = await refusal_from(resp)
                if resp.status not in RETRIED_STATUSES:
                    raise failure
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                # The request may have been accepted before the connection broke: the key makes it safe.
                failure = HubUnreachable(f"cannot publish to {self.url}: {describe(exc)}")
                failure.__cause__ = exc
            attempt += 1
            delay = backoff(PUBLISH_BACKOFF, attempt, MAX_PUBLISH_BACKOFF)
            if attempt > self.publish_retries or loop.time() + delay >= deadline:
                raise failure
            await asyncio.sleep(delay)

    def subscribe(
        self,
        *selectors: str,
        last_event_id: str | None = None,
        heartbeat_timeout: float | None = None,
        max_failures: int | None = None,
        name: str | None = None,
    ) -> Subscription:
        """An async iterator over the events of `selectors`, live, reconnecting and resuming by itself.

        `last_event_id` resumes after that id (`"earliest"`: everything retained). With
        `heartbeat_timeout`, a stream that sends no byte for that long is taken as dead and reopened (the
        hub sends a heartbeat every `sse.heartbeat_interval`; twice that is a good value). `max_failures`
        consecutive failed connection attempts raise `HubUnreachable`; None retries forever. `name` is
        the stream's name in presence (auth off only). A stream closed through `POST /disconnect` yields
        its `disconnect` event, then reconnects as after any other end."""
        if not selectors:
            raise ValueError("subscribe needs at least one topic or pattern")
        return Subscription(self, selectors, last_event_id or "", heartbeat_timeout, max_failures, name)

    def subscribe_bytes(
        self, *selectors: str, last_event_id: str | None = None, max_failures: int | None = None
    ) -> ByteStream:
        """An async iterator over the raw bytes of `selectors`' binary events (`?format=bytes`), as
        published, back to back as they arrive (text events are not part of a byte stream).

        A broken stream is reopened where it broke, to the byte: the hub names the position each stream
        starts from, and the next one asks for it less the bytes already received. `last_event_id`
        starts after that id (`"earliest"`: everything retained), or at `<start>:<offset>` as an
        earlier stream's `start` and `offset` say; without it, live events only. A history lost since
        the start raises `HubRefused` (409 `history_lost`), as nothing in a byte stream could say what
        was missed; so does a break in a stream the hub named no start for (several cluster
        partitions, or `earliest` over several topics). The stream sends no heartbeats."""
        if not selectors:
            raise ValueError("subscribe_bytes needs at least one topic or pattern")
        stream = ByteStream(self, selectors, last_event_id or "", None, max_failures)
        try:
            start, offset = binary.split_offset(last_event_id)  # the hub's own reading of it
        except HttpError as exc:
            raise ValueError(exc.message) from None
        if start and offset:
            stream.start, stream.offset = start, offset  # resumed where an earlier stream broke
        return stream


class _Stream:
    """A stream of `/events` that reconnects by itself: what an event stream and a byte stream share."""

    media_type = "text/event-stream"

    def __init__(
        self,
        client: HubClient,
        selectors: Sequence[str],
        last_event_id: str,
        heartbeat_timeout: float | None,
        max_failures: int | None,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.connection_id = ""  # the current stream's Hub-Connection-Id: its id in presence
        self.selectors = tuple(selectors)
        self.last_event_id = last_event_id
        self.heartbeat_timeout = heartbeat_timeout
        self.max_failures = max_failures
        # The server's `retry:`, in seconds, once a stream has sent one.
        self.reconnect_delay = DEFAULT_RECONNECT_DELAY
        # Counters for whoever watches the subscription: streams opened, streams given up for silence,
        # and connection attempts failed in a row.
        self.connections = 0
        self.stalls = 0
        self.failures = 0
        self.renewals = 0  # streams reopened with a fresh token before theirs expired
        self._response: aiohttp.ClientResponse | None = None
        self._parser = SseParser(last_event_id)
        self._pending: list[ServerSentEvent] = []
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        self._closed = True
        self._pending = []
        self._drop_response()
        self.client._subscriptions.discard(self)

    async def _next_chunk(self) -> bytes | None:
        """The stream's next bytes, connecting first if need be; None when there were none this time
        (the stream was dropped, or a connection failed: the caller asks again)."""
        if self._response is None:
            await self._connect()
            return None
        try:
            chunk = await self._read()
        except TimeoutError:
            self.stalls += 1
            chunk = b""  # silent past the heartbeat timeout: the path is dead, whatever TCP thinks
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            chunk = b""
        if not chunk:
            self._drop_response()
            await asyncio.sleep(jitter(self.reconnect_delay))
            return None
        return chunk

    def _resume_from(self) -> str:
        return self.last_event_id

    def _query(self) -> list[tuple[str, str]]:
        params = [("topic", s) for s in self.selectors]
        if self.name is not None:
            params.append(("name", self.name))
        return params

    def _opened(self, resp: aiohttp.ClientResponse) -> None:
        self._parser = SseParser(self.last_event_id)

    async def _read(self) -> bytes:
        assert self._response is not None
        async with asyncio.timeout(self.heartbeat_timeout):
            return await self._response.content.readany()

    def _drop_response(self) -> None:
        if self._response is not None:
            # Closes the connection rather than drain an endless body back into the pool.
            self._response.close()
            self._response = None

    async def _connect(self) -> None:
        self.client._subscriptions.add(self)
        headers = {**await self.client.headers(), "Accept": self.media_type, "Cache-Control": "no-cache"}
        resume = self._resume_from()
        if resume:
            headers["Last-Event-ID"] = resume
        params = self._query()
        # No total timeout: the stream is meant to last. Silence is the heartbeat timeout's business.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.client.timeout)
        try:
            async with asyncio.timeout(self.client.timeout):
                resp = await self.client.session.get(
                    self.client.url + "/events", params=params, headers=headers, timeout=timeout
                )
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            await self._failed(f"cannot connect to {self.client.url}: {describe(exc)}")
            return
        if resp.status == 200 and resp.content_type != self.media_type:
            # Not a hub (a proxy's page, a wrong URL): reconnecting would not make it one.
            resp.close()
            await self.aclose()
            raise HubRefused(200, "not_an_event_stream", f"{resp.url} answered {resp.content_type}")
        if resp.status == 200:
            self._response = resp
            self.connection_id = resp.headers.get("Hub-Connection-Id", "")
            self._opened(resp)
            self.failures = 0
            self.connections += 1
            return
        async with resp:
            refusal = await refusal_from(resp)
        if resp.status == 429:
            # Retry-After is a floor: wait at least that long, a little more so refused clients spread out.
            await asyncio.sleep((refusal.retry_after or self.reconnect_delay) * random.uniform(1, 1.2))
        elif resp.status >= 500:
            await self._failed(str(refusal))
        else:
            await self.aclose()
            raise refusal

    async def _failed(self, reason: str) -> None:
        self.failures += 1
        if self.max_failures is not None and self.failures >= self.max_failures:
            await self.aclose()
            raise HubUnreachable(reason)
        base = max(self.reconnect_delay, MIN_FAILURE_BACKOFF)
        await asyncio.sleep(backoff(base, self.failures, MAX_RECONNECT_DELAY))


class Subscription(_Stream):
    """See `HubClient.subscribe`. Use it as `async with`, or call `aclose()`, to let go of the stream."""

    async def __anext__(self) -> ServerSentEvent:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            chunk = await self._next_chunk()
            if chunk is None:
                continue
            self._pending = self._parser.feed(chunk)
            self.last_event_id = self._parser.last_event_id
            if self._parser.retry is not None:
                self.reconnect_delay = min(self._parser.retry / 1000, MAX_RECONNECT_DELAY)
            if self.client.token_provider is not None and self._renew_token():
                continue
        return self._pending.pop(0)

    def _renew_token(self) -> bool:
        """Whether the stream said its token expires soon: it is then reopened at once with a fresh one
        from the provider, from the last id read (the notice itself is not handed on)."""
        notice = next((e for e in self._pending if e.event == AUTH_EXPIRING), None)
        if notice is None:
            return False
        # The events before the notice are handed on, and the stream resumes from the last id read
        # before it (which the notice carries): what came after it in the same read comes again.
        self._pending = self._pending[: self._pending.index(notice)]
        self.last_event_id = notice.id or self.last_event_id
        self._drop_response()
        self.renewals += 1
        return True


class ByteStream(_Stream):
    """See `HubClient.subscribe_bytes`. Use it as `async with`, or call `aclose()`, to let go of it."""

    media_type = OCTET_STREAM
    start = ""  # the hub's Hub-Stream-Start: the position `offset` counts from
    offset = 0  # bytes received since `start`

    async def __anext__(self) -> bytes:
        while True:
            if self._closed:
                raise StopAsyncIteration
            chunk = await self._next_chunk()
            if chunk:
                self.offset += len(chunk)
                return chunk

    def _resume_from(self) -> str:
        if not self.start:
            if self.connections and self.offset:
                # Bytes came from a stream the hub named no start for: reading it again would repeat them.
                raise HubRefused(
                    409, "not_resumable", f"the byte stream broke after {self.offset} bytes and cannot resume"
                )
            return self.last_event_id
        return f"{self.start}:{self.offset}" if self.offset else self.start

    def _query(self) -> list[tuple[str, str]]:
        return [*super()._query(), ("format", "bytes")]

    def _opened(self, resp: aiohttp.ClientResponse) -> None:
        # The first stream's start, made concrete by the hub (the live position, or the one before
        # `earliest`'s first event); a resumed stream's is the one it resumed from, offsets unchanged.
        # None: the hub names no position that would resume this stream exactly.
        self.start = resp.headers.get(STREAM_START, "")


async def refusal_from(resp: aiohttp.ClientResponse) -> HubRefused:
    """The hub's JSON error as an exception; something sensible for a non-JSON answer (a proxy's page)."""
    code, message = "http_error", resp.reason or f"HTTP {resp.status}"
    with contextlib.suppress(aiohttp.ClientError, ValueError):
        doc = orjson.loads(await resp.read())
        error = doc["error"] if isinstance(doc, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code", code))
            message = str(error.get("message", message))
    retry_after = None
    with contextlib.suppress(TypeError, ValueError):
        retry_after = float(resp.headers.get("Retry-After", ""))
    return HubRefused(resp.status, code, message, retry_after)


def backoff(base: float, attempt: int, cap: float) -> float:
    """Exponential in the attempt, capped, with jitter so clients cut off together do not return together."""
    return jitter(min(cap, base * 2 ** (attempt - 1)))


def jitter(delay: float, spread: float = 0.5) -> float:
    return delay * random.uniform(1 - spread, 1)


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
