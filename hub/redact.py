"""Keeping credentials out of logs. Pure."""

from __future__ import annotations

import re

# Query parameters that carry credentials: ours (`token`) and the common OAuth spelling.
_SECRET_PARAM = re.compile(r"(?i)([?&](?:token|access_token)=)[^&#]*")
REDACTED = "[redacted]"


def redact_query(target: str) -> str:
    """A request target (path and query) fit for a log line."""
    return _SECRET_PARAM.sub(lambda m: m.group(1) + REDACTED, target)


def redact_url(url: str) -> str:
    """A URL without its password (redis://user:secret@host -> redis://***@host)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
