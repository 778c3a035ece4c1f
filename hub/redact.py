"""Keeping credentials out of logs. Pure."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

# Query parameters that carry credentials: ours (`token`) and the common OAuth spelling, matched by
# their decoded names, since `?%74oken=` reaches the hub as `token` too.
SECRET_PARAMS = frozenset({"token", "access_token"})
REDACTED = "[redacted]"

# Whatever the path a line took: a JWT (its header is base64url JSON, so it starts `eyJ`), a bearer
# credential, and our cookie.
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.?[\w-]*")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s'\",;]+")
_COOKIE = re.compile(r"(?i)(\bhub_token=)[^\s'\",;]+")


def redact_query(target: str) -> str:
    """A request target (path and query) fit for a log line."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    params = query.split("&")
    for i, param in enumerate(params):
        name, equals, _ = param.partition("=")
        if equals and unquote_plus(name).strip().lower() in SECRET_PARAMS:
            params[i] = f"{name}={REDACTED}"
    return f"{path}?{'&'.join(params)}"


def redact_text(text: str) -> str:
    """A log line without any credential-shaped text in it: the last line of defence, for what a
    library logs (a request line, a header) that we never chose to."""
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _COOKIE.sub(lambda m: m.group(1) + REDACTED, text)


def redact_url(url: str) -> str:
    """A URL without its password (redis://user:secret@host -> redis://***@host)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
