"""Log lines as `hub serve` writes them."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from hub import logs

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_token_a_library_logs_never_reaches_the_output(fmt, restore_logging):
    out = io.StringIO()
    logs.setup("debug", fmt, out)
    log = logging.getLogger("aiohttp.server")
    log.error("Error handling request: b'GET /e?%%74oken=%s HTTP/1.1\\x00'", JWT)
    try:
        raise ValueError(f"Invalid header: b'Authorization: Bearer {JWT}'")
    except ValueError:
        log.exception("Unhandled exception")
    text = out.getvalue()
    assert "c2lnbmF0dXJlLWJ5dGVz" not in text
    assert text.count("[redacted]") >= 2
    if fmt == "json":
        assert [orjson.loads(line)["level"] for line in text.splitlines()] == ["error", "error"]
