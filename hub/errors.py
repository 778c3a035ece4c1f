"""Every error the hub raises on purpose, and the one JSON shape they take over HTTP.

    HubError                      base; never raised itself
    ├── HttpError                 a refusal sent to a client as {"error": {"code", "message"}}
    │   ├── BadRequest            400: malformed body, bad topic, selector, event name, retry...
    │   ├── Unauthorized          401: no token where one is needed, or a token that does not verify
    │   ├── Forbidden             403: a valid token that does not grant the topic
    │   ├── NotFound              404
    │   ├── MethodNotAllowed      405
    │   ├── RequestTimeout        408: a request body that did not arrive in time
    │   │   └── StreamCutShort    408: a streamed publish a shutdown ended: published up to a point
    │   ├── Conflict              409: a position from a history the broker has since lost
    │   ├── Unprocessable         422: an Idempotency-Key sent again with another request
    │   ├── PayloadTooLarge       413: body, data or batch over its limit
    │   ├── UnsupportedMediaType  415
    │   ├── TooManyRequests       429: a rate or connection limit; says when to retry
    │   ├── ShuttingDown          503: this process is shutting down and did not take the request;
    │   │                         retry it (on another replica)
    │   ├── BrokerUnavailable     503: the broker did not take the request; for a publish: nothing was
    │   │                         published, retrying is safe
    │   └── OutcomeUnknown        504: a publish went out to the broker and no answer came: it may or may
    │                             not be published; retry with the same Idempotency-Key
    └── ConfigError               bad configuration; stops startup with a message naming the key
        └── ListenError           the configured address cannot be listened on (a busy port)

Protocol errors (a dead Redis socket, a malformed broker message) are not here: the broker layer turns
them into `BrokerUnavailable` (nothing was sent, or Redis refused it) or `OutcomeUnknown` (sent, then
no answer), or handles them itself. Nor are the client's (`hub.client.ClientError`,
`HubRefused`, `HubUnreachable`): they describe a hub's answers as seen from another process.
"""

from __future__ import annotations

from typing import ClassVar

import orjson


class HubError(Exception):
    """Base of the hub's own errors."""


class HttpError(HubError):
    status: ClassVar[int] = 500

    def __init__(self, code: str, message: str) -> None:
        # A message may quote the client's input, and aiohttp reads header bytes that are not UTF-8 as
        # lone surrogates, which no JSON encoder takes: escape them, or the refusal itself is a 500.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.code = code
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}

    def fields(self) -> dict[str, object]:
        """What the answer says beside its `error` (how much of a stream was published, say)."""
        return {}

    def body(self) -> bytes:
        return orjson.dumps({"error": {"code": self.code, "message": self.message}, **self.fields()})


class BadRequest(HttpError):
    status = 400


class Unauthorized(HttpError):
    status = 401

    def headers(self) -> dict[str, str]:
        # RFC 6750: tells a client which scheme to use; the code says what went wrong.
        return {"WWW-Authenticate": f'Bearer realm="hub", error="{self.code}"'}


class Forbidden(HttpError):
    status = 403


class NotFound(HttpError):
    status = 404


class MethodNotAllowed(HttpError):
    status = 405


class RequestTimeout(HttpError):
    status = 408


class StreamCutShort(RequestTimeout):
    """A streamed publish that the hub's shutdown ended before its body did: the events up to `last_id`
    were published, and the rest of the body was not read. Never a 503, which promises that nothing
    was published."""

    def __init__(self, events: int, last_id: str | None) -> None:
        super().__init__(
            "shutting_down",
            f"the hub is shutting down: {events} events of the stream were published, the last {last_id},"
            " and the rest of the body was not read; send the rest (to another replica)",
        )
        self.details: dict[str, object] = {"events": events, "last_id": last_id}

    def fields(self) -> dict[str, object]:
        return self.details


class Conflict(HttpError):
    status = 409


class Unprocessable(HttpError):
    status = 422


def idempotency_key_reused() -> Unprocessable:
    return Unprocessable(
        "idempotency_key_reused",
        "this Idempotency-Key was used for another request; use a new key for a new request",
    )


class PayloadTooLarge(HttpError):
    status = 413


class UnsupportedMediaType(HttpError):
    status = 415


class TooManyRequests(HttpError):
    status = 429

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(code, message)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ShuttingDown(HttpError):
    """The hub process is draining (SIGTERM) and refuses what it can no longer see through: a request
    body still to come, a new stream. Nothing of the request was published (a streamed publish that
    was is answered `StreamCutShort`)."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__("shutting_down", message)


class BrokerUnavailable(HttpError):
    status = 503

    def __init__(self, message: str = "the broker is unavailable; the event was not accepted") -> None:
        super().__init__("broker_unavailable", message)


RETRY_WITH_THE_SAME_KEY = (
    "the event may or may not be published; retry with the same Idempotency-Key"
    " (without one, a retry may publish it twice)"
)


class OutcomeUnknown(HttpError):
    """A publish was sent to the broker and no answer came (a timeout, a connection lost before the
    reply), or was published only in part: the hub cannot tell whether subscribers got it. Never a 503,
    which promises that nothing was published. The record of an Idempotency-Key settles it: the same
    request with the same key answers the first one's ids if it ran, and publishes it if it did not."""

    status = 504

    def __init__(
        self,
        message: str = "the broker did not answer",
        *,
        advice: str = RETRY_WITH_THE_SAME_KEY,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__("outcome_unknown", f"{message}: {advice}")
        self.details = details or {}

    def fields(self) -> dict[str, object]:
        return {"outcome": "unknown", **self.details}


class ConfigError(HubError):
    """Bad configuration. The message names the key."""


class ListenError(ConfigError):
    """The server cannot listen where it is configured to: the message names the address and why."""
