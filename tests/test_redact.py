"""Credentials kept out of log lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.redact import REDACTED, redact_query, redact_text, redact_url

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    "name", ["token", "%74oken", "%74%6F%6B%65%6E", "TOKEN", "to%6Ben", "access_token", "access%5Ftoken"]
)
def test_a_credential_parameter_is_redacted_however_its_name_is_spelled(name):
    assert redact_query(f"/events?topic=a&{name}={JWT}&x=1") == f"/events?topic=a&{name}={REDACTED}&x=1"


def test_other_parameters_and_paths_are_left_alone():
    assert redact_query("/events?topic=tokens&tokenish=1") == "/events?topic=tokens&tokenish=1"
    assert redact_query("/token=1") == "/token=1"


@given(st.text())
def test_a_redacted_query_keeps_no_token_value(value):
    secret = "S3cr3t" + value.replace("&", "")
    assert "S3cr3t" not in redact_query(f"/e?%74oken={secret}")


@pytest.mark.parametrize(
    "line",
    [
        f"Bad status line: b'GET /events?t%6Fken={JWT} HTTP/1.1\\x00'",
        "Invalid header value char: b'Authorization: Bearer opaque-credential\\x01'",
        "Got more than 8190 bytes: b'Cookie: hub_token=opaque-credential; theme=dark'",
        f"{JWT}",
    ],
)
def test_credentials_are_cut_out_of_any_log_text(line):
    redacted = redact_text(line)
    assert "opaque-credential" not in redacted
    assert "c2lnbmF0dXJlLWJ5dGVz" not in redacted
    assert REDACTED in redacted


def test_redis_urls_lose_their_password():
    assert redact_url("redis://user:pw@host:6379/0") == "redis://***@host:6379/0"
    assert redact_url("redis://host:6379") == "redis://host:6379"
