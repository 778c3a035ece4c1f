"""Every error the hub raises on purpose, and the one JSON shape they take over HTTP.

    HubError                      base; never raised itself
    ├── HttpError                 a refusal sent to a client as {"error": {"code", "message"}}
    │   ├── BadRequest            400: malformed body, bad topic, selector, event name, retry...
    │   ├── NotFound              404
    │   ├── MethodNotAllowed      405
    │   ├── PayloadTooLarge       413: body, data or batch over its limit
    │   ├── UnsupportedMediaType  415
    │   └── BrokerUnavailable     503: the broker did not accept the event; safe to retry
    └── ConfigError               bad configuration; stops startup with a message naming the key

Protocol errors (a dead Redis socket, a malformed broker message) are not here: the broker layer turns
them into `BrokerUnavailable` or handles them itself.
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

    def body(self) -> bytes:
        return orjson.dumps({"error": {"code": self.code, "message": self.message}})


class BadRequest(HttpError):
    status = 400


class NotFound(HttpError):
    status = 404


class MethodNotAllowed(HttpError):
    status = 405


class PayloadTooLarge(HttpError):
    status = 413


class UnsupportedMediaType(HttpError):
    status = 415


class BrokerUnavailable(HttpError):
    status = 503

    def __init__(self, message: str = "the broker is unavailable; the event was not accepted") -> None:
        super().__init__("broker_unavailable", message)


class ConfigError(HubError):
    """Bad configuration. The message names the key."""
