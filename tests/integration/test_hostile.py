"""The adversarial layer of issue 18: hostile values on every endpoint, header and query parameter that
reaches the engine, on the memory broker, one Redis and a Redis Cluster, with auth off and on.

Each batch of hostile requests (from 127.0.0.2; the honest client is 127.0.0.1) is followed by the checks
of `tests.support.hostile_run`: (a) Redis keys other than those an accepted publish writes byte for byte
unchanged, on every node; (b) an honest publish, and a resume from the last real id, delivered with no
`reset`; (c) no 5xx, no ERROR log line, no token logged. With auth on, hostile requests carry no
token, a minimal one (one public topic), forged or malformed ones, or bytes that are no token;
`public/**` is open to anonymous readers. Each test also runs the attacks the issue names, as fixed seeds.

`HUB_HOSTILE_EXAMPLES` sets the batches per test (default 15: the layer stays within about a minute);
hypothesis runs derandomized, with no database, so a run is the same each time.
"""

from __future__ import annotations

import logging
import os
import re

import jwt
import pytest
from hypothesis import strategies as st

from tests.support import hostile
from tests.support.hostile import Credentials
from tests.support.hostile_run import HostileRun
from tests.support.ids import plain, vector
from tests.support.raw_http import RawAnswer, RawRequest, send
from tests.support.waiting import settled

SECRET = "hostile-secret-of-at-least-32-bytes!"
LATER = 4_102_444_800  # 2100-01-01
ALLOWED_ORIGIN = "https://app.example"
EXAMPLES = int(os.environ.get("HUB_HOSTILE_EXAMPLES", "15"))
BATCH = 6  # hostile requests per batch, at most

pytestmark = [
    pytest.mark.parametrize("auth", ["off", "jwt"]),
    pytest.mark.timeout(60 + EXAMPLES * 3),
]


def token(publish, subscribe, key=SECRET, algorithm="HS256", exp=LATER):
    """The same bytes every run (no `iat`, a fixed `exp`), so that a run's requests are too."""
    return jwt.encode({"hub": {"publish": publish, "subscribe": subscribe}, "exp": exp}, key, algorithm)


def credentials() -> Credentials:
    minimal = token(["public/min"], ["public/min"])
    everything = (["**"], ["**"])
    hostile_tokens = [
        token(*everything, key="another-secret-of-at-least-32-bytes"),
        token(*everything, exp=1_000_000_000),  # expired
        token(*everything, key="", algorithm="none"),
        token(*everything, key=SECRET * 2, algorithm="HS512"),
        token("**", [["**"]]),  # signed right, claims of the wrong shape
        token([f"public/t{i}" for i in range(3000)], []),
        minimal.replace(".", ".\u00e9", 1),
    ]
    return Credentials(minimal, hostile_tokens)


@pytest.fixture
async def run(hub_factory, broker_kind, request, caplog, auth):
    settings = {"cors__origins": (ALLOWED_ORIGIN,), "cors__allow_credentials": True}
    admin = {}
    if auth == "jwt":
        settings |= {"auth__jwt_secret": SECRET, "auth__public_topics": ("public/**",)}
        admin = {"Authorization": "Bearer " + token(["**"], ["**"])}
    hub = await hub_factory(**settings)
    await settled(lambda: hub.fanout.broker.ready)
    if broker_kind == "redis":
        ports = [request.getfixturevalue("redis_server").port]
    elif broker_kind == "cluster":
        ports = [node.port for node in request.getfixturevalue("redis_cluster").nodes]
    else:
        ports = []
    # Every log path, debug lines included, must keep tokens out.
    caplog.set_level(logging.DEBUG)
    creds = credentials()
    tokens = [creds.minimal, *creds.hostile, *(v.removeprefix("Bearer ") for v in admin.values())]
    signatures = [token.rsplit(".", 1)[-1] for token in tokens if token.rsplit(".", 1)[-1]]
    running = HostileRun(hub, caplog, ports, admin, secrets=signatures)
    await running.start()
    yield running
    print(f"\n[{broker_kind}, auth {auth}] {running.summary()}")


def batches(requests):
    return st.lists(requests, min_size=1, max_size=BATCH)


async def test_hostile_resume_positions_change_nothing_shared(run):
    """Last-Event-ID and ?lastEventId= from the future, the past, other epochs and partitions, numbers no
    counter holds, undecodable bytes: at most that one stream resets."""
    seeds = [
        [
            hostile.request("GET", b"/events?topic=public/**", [(b"Last-Event-ID", value.encode())]),
            hostile.request("GET", b"/events?topic=public/probe&lastEventId=" + value.encode()),
        ]
        for value in future_ids(run.anchors)
    ]
    await run.run(batches(hostile.resume_requests(run.anchors, credentials())), EXAMPLES, seeds=seeds)


async def test_hostile_history_queries_change_nothing_shared(run):
    """?after=, ?limit= and ?format= on a topic's history: a 4xx or a history, never a write."""
    seeds = [
        [hostile.request("GET", b"/topics/public%2Fprobe/history?after=" + value.encode())]
        for value in future_ids(run.anchors)
    ]
    await run.run(batches(hostile.history_requests(run.anchors, credentials())), EXAMPLES, seeds=seeds)


async def test_hostile_topics_and_selectors_change_nothing_shared(run):
    """Topics and selectors spelled every way, in every place one is read from."""
    await run.run(batches(hostile.topic_requests(credentials())), EXAMPLES)


async def test_hostile_publishes_write_only_their_own_topics(run):
    """Nested and huge data, hostile Idempotency-Keys, media types, progress reports and streamed bodies:
    refused with a 4xx before anything is stored, or published to their own topics only; an
    Idempotency-Key a hostile client used does not swallow the honest client's publish."""
    creds = credentials()
    await run.run(
        batches(hostile.publish_requests(creds)), EXAMPLES, check=reuse_check, seeds=publish_seeds(creds)
    )


def publish_seeds(creds):
    """The issue's: an event nested 254 deep, as data and as a progress result; an Idempotency-Key the
    attacker takes first (the honest publish after the batch reuses it); one key, two bodies."""
    token = [(b"Authorization", b"Bearer " + creds.minimal.encode())]
    json_type = [(b"Content-Type", b"application/json")]
    deep = hostile.nested(254, "list")
    key = [(b"Idempotency-Key", b"order-7-created")]

    def publish(body, headers=(), note="publish"):
        return hostile.request(
            "POST", b"/publish", [*json_type, *token, *headers], body, ["public/min"], note
        )

    def history(topic):
        return hostile.request("GET", b"/topics/" + topic + b"/history", token, note="history")

    return [
        # its history after it: a JSON array that parses (it was a bare `[`), or no such event stored
        [publish(b'{"topic": "public/min", "data": ' + deep + b"}"), history(b"public%2Fmin")],
        [
            hostile.request(
                "POST",
                b"/progress/min",
                [*json_type, *token],
                b'{"done": true, "result": ' + deep + b"}",
                ["jobs/min"],
                "progress",
            ),
            history(b"jobs%2Fmin"),
        ],
        [publish(b'{"topic": "public/min", "data": "attacker"}', key)],
        [
            publish(b'{"topic": "public/min", "data": "first"}', [(b"Idempotency-Key", b"reused-1")]),
            publish(
                b'{"topic": "public/min", "data": "second"}', [(b"Idempotency-Key", b"reused-1")], REUSED
            ),
        ],
        # refused while 600 KB of body is still arriving, in a header and in the body's encoding: the
        # hub closed at once, and the kernel's reset took the 400 with it
        [
            hostile.request(
                "POST",
                b"/progress/min",
                [*json_type, *token, (b"Idempotency-Key", b"a\x1bb")],
                b'{"done": true, "result": ' + hostile.nested(100_000, "object") + b"}",
                note="progress",
            ),
            publish(hostile.nested(100_000, "object"), [(b"Content-Encoding", b"gzip")]),
        ],
    ]


REUSED = "the same key, another body"


def reuse_check(request: RawRequest, answer: RawAnswer) -> list[str]:
    if request.note == REUSED and answer.status not in (401, 403, 422):
        return [f"an Idempotency-Key reused with another body answered {answer.status}, not 422"]
    return []


async def test_hostile_credentials_and_origins_on_every_endpoint(run, auth):
    """Tokens forged, undecodable, huge or in the wrong scheme, in every place one is read from, from any
    Origin: never a 5xx, no version banner, no cookie-authenticated write from an origin CORS does not
    allow, and (auth on) no stats for a client without a token."""
    creds = credentials()
    await run.run(
        batches(hostile.credential_requests(creds)),
        EXAMPLES,
        check=credential_check(auth, creds),
        seeds=credential_seeds(creds),
    )


def credential_seeds(creds):
    """The issue's: tokens that are not UTF-8, and cookie-authenticated simple requests (a form post, a
    `text/plain` post) from a foreign Origin to every route that publishes."""
    cookie = (b"Cookie", b"hub_token=" + creds.minimal.encode())
    evil = (b"Origin", b"https://evil.example")
    return [
        [
            hostile.request("GET", b"/events?topic=public/min", [(b"Authorization", b"Bearer \xe9")]),
            hostile.request("GET", b"/events?topic=public/min", [(b"Cookie", b"hub_token=x\xff")]),
            hostile.request(
                "POST",
                b"/publish",
                [(b"Authorization", b"Bearer \xe9"), (b"Content-Type", b"application/json")],
                b'{"topic": "public/min", "data": "x"}',
                ["public/min"],
            ),
        ],
        [
            hostile.request(
                "POST",
                b"/publish",
                [cookie, evil, (b"Content-Type", b"application/x-www-form-urlencoded")],
                b"topic=public/min&data=csrf",
                ["public/min"],
            ),
            hostile.request(
                "POST",
                b"/progress/min",
                [cookie, evil, (b"Content-Type", b"text/plain")],
                b'{"current": 1, "total": 2}',
                ["jobs/min"],
            ),
            hostile.request(
                "POST",
                b"/publish/stream?topic=public/min",
                [cookie, evil, (b"Content-Type", b"text/plain")],
                b"csrf",
                ["public/min"],
            ),
        ],
    ]


PRIVATE_READS = (b"/stats", b"/stats/stream", b"/metrics")


def credential_check(auth, creds):
    """No version banner; and with auth on, no cookie-authenticated write from an origin CORS does not
    allow, and no stats without a valid token."""
    cookie = b"hub_token=" + creds.minimal.encode()

    def carries_token(request: RawRequest) -> bool:
        headers = dict(request.headers)
        query = request.target.partition(b"?")[2].split(b"&")
        return (
            headers.get(b"Authorization") == b"Bearer " + creds.minimal.encode()
            or headers.get(b"Cookie") == cookie
            or b"token=" + creds.minimal.encode() in query
        )

    def check(request: RawRequest, answer: RawAnswer) -> list[str]:
        found = []
        if re.search(r"python|aiohttp", answer.headers.get("server", ""), re.IGNORECASE):
            found.append("a version banner in the Server header")
        if auth != "jwt" or answer.status != 200:
            return found
        headers = dict(request.headers)
        origin = headers.get(b"Origin")
        if (
            request.method == b"POST"
            and headers.get(b"Cookie") == cookie
            and origin is not None
            and origin != ALLOWED_ORIGIN.encode()
        ):
            found.append(f"a cookie-authenticated write from Origin {origin!r} was accepted")
        path = request.target.split(b"?")[0]
        if path in PRIVATE_READS and not carries_token(request):
            found.append(f"{path.decode()} answered 200 without a token while auth is on")
        return found

    return check


async def test_a_future_id_resets_only_its_own_stream(run, broker_kind):
    """The issue's attack, exactly: the current epoch (or digest) with a seq from the future, in the
    header and in the query. That stream gets a `reset`; Redis, the honest client and every later
    publish do not notice."""
    ids = future_ids(run.anchors)
    requests = []
    for value in ids:
        header = hostile.request("GET", b"/events?topic=public/probe", [(b"Last-Event-ID", value.encode())])
        query = hostile.request("GET", b"/events?topic=public/probe&lastEventId=" + value.encode())
        requests += [header, query]

    def check(request: RawRequest, answer: RawAnswer) -> list[str]:
        if answer.status != 200 or not answer.reset:
            return [f"a resume from the future answered {answer.status} with no reset"]
        return []

    await run.batch(requests, check)
    run.assert_clean()
    # and a stream that did not send one still opens with the epoch it had before
    again = await send(run.hub.url, RawRequest(b"GET", b"/events?topic=public/probe"))
    assert again.status == 200, again
    assert not again.reset, again


def future_ids(anchors):
    out = []
    for anchor in anchors[:1]:
        if anchor.is_vector:
            digest, seqs = vector(anchor.id)
            entries = "".join(f"_{p}.99999999" for p in seqs)
            out += [digest + entries, digest + "".join(f"_{p}.{s + 1000000}" for p, s in seqs.items())]
        else:
            epoch, seq = plain(anchor.id)
            out += [f"{epoch}-99999999999999999999", f"{epoch}-1000000", f"{epoch}-{seq + 1}"]
    return out
