"""The middleware that gives every refusal, ours or aiohttp's, the same JSON shape.

A request aiohttp cannot parse never reaches the middleware: `malformed` names it for the answer and
the log line, from its exception's class alone, since the exception's text quotes the client's bytes
(a request line or header, token and all)."""

from __future__ import annotations

import logging

from aiohttp import http_exceptions, web
from aiohttp.typedefs import Handler

from hub.errors import HttpError, PayloadTooLarge
from hub.http.body import ClientLeft
from hub.http.state import CONFIG

log = logging.getLogger(__name__)


# What a failure of ours answers (500), and the refusals after which the connection closes: the rest of an
# oversized or stalled body is not worth reading.
INTERNAL_ERROR = ("internal_error", "the hub failed on this request")
CLOSING_STATUSES = frozenset({408, 413})


def body_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("payload_too_large", f"the request body is over the limit of {limit} bytes")


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# Most specific first: BadHttpMethod is a BadStatusLine, which is a BadHttpMessage.
_MALFORMED: tuple[tuple[type[Exception], str, str], ...] = (
    (http_exceptions.LineTooLong, "line_too_long", "the request line or a header is over the size limit"),
    (http_exceptions.BadHttpMethod, "bad_method", "the request does not start with an HTTP method"),
    (http_exceptions.BadStatusLine, "bad_request_line", "the request line is malformed"),
    (http_exceptions.InvalidHeader, "bad_header", "a header is malformed"),
    (http_exceptions.InvalidURLError, "bad_target", "the request target is malformed"),
    (http_exceptions.PayloadEncodingError, "bad_body_encoding", "the body's framing or encoding is bad"),
)


def malformed(exc: BaseException | None) -> tuple[str, str]:
    """The code and message for a request aiohttp's parser refused, without a byte of the request."""
    for kind, code, message in _MALFORMED:
        if isinstance(exc, kind):
            return code, message
    return "bad_request", "the request is malformed"


def _describe(request: web.Request, exc: web.HTTPException) -> tuple[str, str]:
    if exc.status == 404:
        return "not_found", f"nothing at {request.path}"
    if exc.status == 405:
        return "method_not_allowed", f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        limit = request.app[CONFIG].limits.max_body_bytes
        refusal = body_too_large(limit)
        return refusal.code, refusal.message
    return "http_error", exc.text or exc.reason


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpError as exc:
        response = web.Response(
            body=exc.body(), status=exc.status, content_type="application/json", headers=exc.headers()
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, *_describe(request, exc))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except web.RequestPayloadError as exc:
        # A body that breaks off or does not decode is the client's doing: one quiet line, no traceback.
        code, message = malformed(exc.__cause__)
        log.debug("malformed body on %s %s: %s", request.method, request.path, code)
        response = error_response(400, code, message)
        response.force_close()
        return response
    except ClientLeft as exc:
        # Nobody to answer (the response goes nowhere), and nothing of ours went wrong: one quiet line.
        log.debug("%s", exc)
        response = error_response(400, "body_broke_off", "the request body broke off")
        response.force_close()
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, *INTERNAL_ERROR)
    if response.status in CLOSING_STATUSES:
        # The rest of an oversized or stalled body is not worth reading: the connection closes after.
        # (aiohttp still reads and discards the rest of an oversized one for up to its lingering time,
        # 10 s, so that a client still sending gets the answer; a stalled one, hub.http.body ends.)
        response.force_close()
    return response
