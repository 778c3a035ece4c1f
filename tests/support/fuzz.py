"""Fuzzing a live hub from its OpenAPI description: schemathesis generates requests (valid and invalid
by the description), they go over a real socket, and every response must conform to the description.

Synchronous (schemathesis sends with `requests`): run `fuzz` in a thread beside the event loop that
serves the hub. `/events` streams never end, so a 200 stream is read until it has opened (SSE: its
preamble and position line; NDJSON and text: its headers) and then closed by the client, which is also
what the leak check afterwards relies on.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (  # resolved by the module's __getattr__, from its registry
    CheckFunction,
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.transport import STREAM_CUT_SHORT_ATTRIBUTE

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Generous: a loaded 2-core machine can stall a response for seconds, and a hang should still fail.
TIMEOUT = (5.0, 20.0)
STREAM_OPEN_BLOCKS = 2  # the preamble (`retry:` and a comment), then the `id:` position line
MAX_HEADER_LINE = 8190  # aiohttp's max_field_size, which the hub leaves at its default

# Sent beside each generated request. Headers and query parameters the description does not name
# (prefixed, so that they never collide with a documented name): for an endpoint that takes no input
# they are all an attacker controls, and they keep hypothesis from running out of distinct requests.
# And credentials in the three places a token is read from: schemathesis generates none while the
# description says auth is optional. And, now and then, a body sent under another media type, which
# schemathesis does not do on its own.
_LATIN1_VISIBLE = st.characters(codec="latin-1", exclude_categories=["Cc"])
_HEADER_VALUE = st.text(_LATIN1_VISIBLE, max_size=64).map(str.strip)
_JWT_LIKE = st.lists(st.from_regex(r"\A[A-Za-z0-9_-]{0,48}\Z"), min_size=1, max_size=4).map(".".join)


_NOISE_HEADERS = st.dictionaries(
    st.from_regex(r"\A[A-Za-z0-9-]{1,24}\Z").map(lambda name: "X-Fuzz-" + name), _HEADER_VALUE, max_size=3
)
_NOISE_PARAMS = st.lists(
    st.tuples(st.text(max_size=16).map(lambda name: "x-" + name), st.text(max_size=64)), max_size=3
)
_CONTENT_TYPE = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.sampled_from(
        [
            "",
            "text/plain",
            "multipart/form-data",
            "APPLICATION/JSON",
            "application/json; charset=latin-1",
            "application/merge-patch+json",
            "application/x-www-form-urlencoded; charset=utf-8",
        ]
    ),
    _HEADER_VALUE,
)


def noise(tokens: Sequence[str] = ()) -> st.SearchStrategy[dict[str, Any]]:
    """What goes beside a generated request. `tokens` (valid ones) are sent now and then in any of the
    three places a token is read from, so that a hub with auth on answers more than 401s."""
    jwt_like = st.one_of(_JWT_LIKE, st.sampled_from(list(tokens))) if tokens else _JWT_LIKE
    # Most requests carry one of the tokens given over whatever schemathesis put in Authorization: without
    # it, nearly every answer of a hub with auth on would be a 401.
    valid = {"valid_token": st.sampled_from([*tokens, None])} if tokens else {}
    return st.fixed_dictionaries(
        {"headers": _NOISE_HEADERS, "params": _NOISE_PARAMS, **valid},
        optional={
            "Authorization": st.one_of(jwt_like.map(lambda token: "Bearer " + token), _HEADER_VALUE),
            "hub_token": jwt_like,
            "token": st.one_of(jwt_like, st.text(max_size=64)),
            "Content-Type": _CONTENT_TYPE,
        },
    )


@dataclass
class FuzzReport:
    operation: str
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    # refused by aiohttp's parser before the hub saw them: not checked against the description
    over_http_limits: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"{self.operation}: {self.sent} requests in {self.seconds:.1f} s ({statuses}; "
            f"{self.over_http_limits} over the HTTP layer's limits)"
        )


def load_schema() -> Any:
    document = json.loads(resources.files("hub").joinpath("openapi.json").read_text("utf-8"))
    schema = schemathesis.openapi.from_dict(document)
    # NUL and the security parameters (Authorization, the hub_token cookie, ?token=) are hostile
    # input a real client can send; schemathesis leaves them out unless asked.
    schema.config.generation.update(allow_x00=True, with_security_parameters=True)
    return schema


def fuzz(
    base_url: str, path: str, method: str, examples: int, max_request_line: int, tokens: Sequence[str] = ()
) -> FuzzReport:
    """Send `examples` generated requests (and hypothesis' shrinking, on a failure) to one operation.

    Raises on the first response that fails a check, or on a connection the hub broke. A request over
    the HTTP layer's limits (`max_request_line`, `MAX_HEADER_LINE`) must be refused with a 400; what
    else it answers is aiohttp's, not the hub's, so it is not checked against the description."""
    operation = load_schema()[path][method]
    strategy = operation.as_strategy(GenerationMode.POSITIVE)
    if operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody"):
        strategy = strategy | operation.as_strategy(GenerationMode.NEGATIVE)
    report = FuzzReport(f"{method} {path}")

    with requests.Session() as session:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
        @given(case=strategy, noise=noise(tokens))
        def run(case: Any, noise: dict[str, Any]) -> None:
            response = send(session, case, base_url, noise)
            report.sent += 1
            report.statuses[response.status_code] += 1
            if over_http_limits(response.request, max_request_line):
                report.over_http_limits += 1
                assert response.status_code == 400, response.status_code
                return
            case.validate_response(response, checks=CHECKS)

        started = time.monotonic()
        run()
        report.seconds = time.monotonic() - started
    return report


def send(session: requests.Session, case: Any, base_url: str, noise: dict[str, Any]) -> schemathesis.Response:
    kwargs = case.as_transport_kwargs(base_url=base_url)
    kwargs["headers"] = {**noise["headers"], **kwargs.get("headers", {})}
    if "Authorization" in noise:
        kwargs["headers"].setdefault("Authorization", noise["Authorization"])
    if noise.get("valid_token") is not None:
        kwargs["headers"]["Authorization"] = "Bearer " + noise["valid_token"]
    if "hub_token" in noise:
        kwargs["cookies"] = {"hub_token": noise["hub_token"], **(kwargs.get("cookies") or {})}
    if noise.get("Content-Type") is not None and {"json", "data"} & kwargs.keys():
        kwargs["headers"]["Content-Type"] = noise["Content-Type"]
    extra = noise["params"] + ([("token", noise["token"])] if "token" in noise else [])
    params = kwargs.get("params")
    if isinstance(params, str):
        kwargs["params"] = "&".join(filter(None, [params, urlencode(extra)]))
    else:
        kwargs["params"] = [
            (name, value)
            for name, values in (params or {}).items()
            for value in (values if isinstance(values, list) else [values])
        ] + extra
    response = session.request(**kwargs, stream=True, timeout=TIMEOUT, allow_redirects=False)
    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
        head = b""
        while head.count(b"\n\n") < STREAM_OPEN_BLOCKS:
            chunk = response.raw.read1(64 * 1024)
            if not chunk:
                break  # ended early: the checks see what it sent
            head += chunk
        response._content = head
        setattr(response, STREAM_CUT_SHORT_ATTRIBUTE, True)
        response.close()  # hangs up: the hub must notice and drop the subscription
    elif response.status_code == 200 and response.request.path_url.startswith("/events"):
        # An NDJSON or text stream writes nothing until an event comes: its headers say it is open.
        response._content = b""
        setattr(response, STREAM_CUT_SHORT_ATTRIBUTE, True)
        response.close()
    else:
        response.content  # noqa: B018 -- read it whole, so that the connection can be reused
    return schemathesis.Response.from_requests(response, verify=True)


def over_http_limits(request: requests.PreparedRequest, max_request_line: int) -> bool:
    if len(request.path_url.encode()) > max_request_line:
        return True
    for name, value in request.headers.items():
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        if len(name) + len(raw) > MAX_HEADER_LINE:
            return True
    return False
