"""Hypothesis strategies for what a hostile client sends: positions from the future and the past, other
epochs and partitions, numbers no counter holds, undecodable bytes, deep nesting, encoding tricks.

Every strategy yields bytes (or requests made of bytes) for `tests.support.raw_http`, so that nothing a
client library refuses or normalises is left out. Positions are made from an `Anchor`, a real id the hub
under test issued, because the dangerous ones are near-misses of real ids: the current epoch with a seq
from the future, the current digest with a partition that is not ours.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from hub.wire.event import EPOCH_ALPHABET
from tests.support.ids import is_vector, plain, vector
from tests.support.raw_http import RawRequest

PARTITIONS = 16  # the hub's default `redis.partitions`, which the cluster tests use

# Seqs no counter holds, in every spelling a parser might accept: past 2**53 (Lua numbers are doubles),
# past 2**63 (Redis integers), negative, fractions, exponents, Unicode digits (`str.isdigit` accepts
# them, `int` takes some and not others), signs, whitespace, hex, nothing.
NUMBERS = (
    "99999999999999999999",
    "1000000",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "1" + "0" * 400,
    "-1",
    "-0",
    "-9223372036854775809",
    "1.5",
    "1e9",
    "1E400",
    "inf",
    "nan",
    "0x10",
    "+1",
    " 1",
    "1 ",
    "1_000",
    "00000000000000000001",
    "\u0661\u0662\u0663",  # Arabic-Indic digits
    "\uff11\uff12",  # fullwidth
    "\u00b2",  # a digit to str.isdigit, not to int()
    "\U0001d7d7" * 21,  # mathematical bold nines, past 2**64
    "",
)
numbers = st.one_of(
    st.sampled_from(NUMBERS),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)

# Bytes that are not UTF-8: a lone continuation byte, a truncated sequence, an overlong `/`, an encoded
# surrogate, and bytes no UTF-8 holds at all.
UNDECODABLE = (b"\xff", b"\x80", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xfe\xff", b"\xe9")

epochs = st.text(EPOCH_ALPHABET, min_size=1, max_size=12)


@dataclass(frozen=True)
class Anchor:
    """A real id: a plain `<epoch>-<seq>` (memory, one Redis) or a cluster vector."""

    id: str

    @property
    def is_vector(self) -> bool:
        return is_vector(self.id)


def _plain_positions(epoch: str, seq: int) -> st.SearchStrategy[str]:
    return st.one_of(
        # the future of the current epoch: the issue's `<epoch>-99999999999999999999` and `-1000000`
        st.integers(min_value=seq + 1, max_value=seq + 10**7).map(lambda n: f"{epoch}-{n}"),
        st.integers(min_value=2**53, max_value=10**30).map(lambda n: f"{epoch}-{n}"),
        numbers.map(lambda n: f"{epoch}-{n}"),
        # the past: real positions, which must resume cleanly
        st.integers(min_value=0, max_value=seq).map(lambda n: f"{epoch}-{n}"),
        # other epochs, and epochs that only look like ours
        st.tuples(epochs, numbers).map(lambda t: f"{t[0]}-{t[1]}"),
        st.sampled_from([epoch.upper(), epoch + epoch, " " + epoch, epoch[:-1]]).map(lambda e: f"{e}-{seq}"),
        st.just(f"{epoch}-{seq}-{seq}"),
        st.just(f"{epoch}--{seq}"),
        # a cluster id on a hub with one counter
        st.tuples(st.integers(0, 99), numbers).map(lambda t: f"{epoch[:6]:a<6}_{t[0]}.{t[1]}"),
    )


def _vector_positions(anchor: str) -> st.SearchStrategy[str]:
    digest, seqs = vector(anchor)
    parts = list(seqs)

    def entries(mapping: Sequence[tuple[object, object]]) -> str:
        return "".join(f"_{p}.{s}" for p, s in mapping)

    bump = st.tuples(st.sampled_from(parts), st.one_of(st.integers(1, 10**7), st.integers(2**53, 10**30)))
    foreign = st.one_of(
        st.sampled_from([PARTITIONS, PARTITIONS + 1, 63, 64, 65, 99999, -1, 2**64]),
        st.integers(0, PARTITIONS - 1).filter(lambda p: p not in seqs),
    )
    return st.one_of(
        # the current digest, one partition's seq from the future: the issue's `<digest>_12.99999999`
        bump.map(lambda t: digest + entries([(p, s + t[1] if p == t[0] else s) for p, s in seqs.items()])),
        st.just(digest + entries([(p, 99999999) for p in parts])),
        # a partition the subscription does not read, or no hub has
        st.tuples(foreign, numbers).map(
            lambda t: digest + entries(sorted([*seqs.items(), t], key=lambda e: str(e[0])))
        ),
        # numbers no counter holds, in one entry
        st.tuples(st.sampled_from(parts), numbers).map(
            lambda t: digest + entries([(p, t[1] if p == t[0] else s) for p, s in seqs.items()])
        ),
        # shapes: entries out of order, twice, missing; other digests; separators doubled
        st.just(digest + entries(sorted(seqs.items(), reverse=True))),
        st.just(digest + entries([*seqs.items(), *seqs.items()])),
        st.just(digest),
        st.just(digest + "_"),
        st.just(digest + entries(seqs.items()).replace("_", "__")),
        st.just(digest.upper() + entries(seqs.items())),
        epochs.map(lambda d: f"{d:a<6}"[:6] + entries(seqs.items())),
        st.just(digest + entries([(p, 0) for p in parts])),  # the past: must resume cleanly
        # as many entries as a position may hold, and past it
        st.integers(1, 300).map(lambda n: digest + entries([(p, 1) for p in range(n)])),
        # a plain id on a cluster hub
        st.tuples(epochs, numbers).map(lambda t: f"{t[0]}-{t[1]}"),
    )


def positions(anchor: Anchor) -> st.SearchStrategy[str]:
    """A Last-Event-ID (or ?lastEventId=, or ?after=) a hostile client sends, as text."""
    near = _vector_positions(anchor.id) if anchor.is_vector else _plain_positions(*plain(anchor.id))
    return st.one_of(
        near,
        near,
        near,
        st.sampled_from(["earliest", "EARLIEST", " earliest", "earliest\x00", "-", "", "null", "0"]),
        st.integers(1100, 5000).map(lambda n: anchor.id + "9" * n),  # past any id's length bound
        st.text(max_size=40),
    )


def header_bytes(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """A header value from text: as UTF-8, as Latin-1, or with bytes that are not UTF-8 spliced in.
    Line breaks are left out: they would end the header, which the raw request needs whole."""

    def utf8(value: str) -> bytes:
        return value.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")

    spliced = st.tuples(text, st.sampled_from(UNDECODABLE), st.integers(0, 64)).map(
        lambda t: utf8(t[0])[: t[2]] + t[1] + utf8(t[0])[t[2] :]
    )
    return st.one_of(text.map(utf8), text.map(utf8), spliced)


def query_value(value: bytes) -> st.SearchStrategy[bytes]:
    """A query value as it goes on the request line: percent-encoded, encoded twice, with `+` for a space,
    or raw bytes left as they are (a lenient parser takes them, a strict one refuses)."""
    raw_safe = value.replace(b" ", b"%20").replace(b"#", b"%23").replace(b"&", b"%26").replace(b"\r", b"")
    raw_safe = raw_safe.replace(b"\n", b"").replace(b"\t", b"%09")
    return st.sampled_from(
        [
            urllib.parse.quote_from_bytes(value, safe="").encode(),
            urllib.parse.quote_from_bytes(value, safe="").replace("%", "%25").encode(),
            urllib.parse.quote_plus(value.decode("latin-1"), encoding="latin-1").encode(),
            raw_safe,
        ]
    )


def query_pairs(pairs: Sequence[tuple[bytes, bytes]]) -> st.SearchStrategy[bytes]:
    """A query string from pairs whose values are sent in one of `query_value`'s spellings."""
    if not pairs:
        return st.just(b"")
    return st.tuples(*(query_value(v).map(lambda q, n=n: n + b"=" + q) for n, v in pairs)).map(
        lambda parts: b"?" + b"&".join(parts)
    )


# Topics and selectors: valid ones near the public corner, and every way to spell one that is not.
HOSTILE_TOPICS = (
    "public/min",
    "public/probe",
    "public/*",
    "public/**",
    "**",
    "*",
    "private/x",
    "public/../private/x",
    "public/./a",
    "public//a",
    "/public/a",
    "public/a/",
    "public/**/a",
    "public/***",
    "public/a*",
    "PUBLIC/a",
    "public/%2A%2A",
    "public%2F**",
    "public/\uff41",  # fullwidth
    "public/a\u200b",  # zero width space
    "public/e\u0301",  # combining accent
    "public/\ud800",  # a lone surrogate
    "public/a\x00",
    "public/a b",
    "public/a\tb",
    "public/\u2028",
    "public/" + "a" * 250,
    "public/" + "a/" * 200 + "a",
    "public/" + "é" * 130,
    "",
)
topics = st.one_of(st.sampled_from(HOSTILE_TOPICS), st.text(max_size=24).map(lambda t: "public/" + t))


def nested(depth: int, kind: str) -> bytes:
    inner = b"1"
    if kind == "list":
        return b"[" * depth + inner + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + inner + b"}" * depth
    return (b'[{"a":' * depth) + inner + (b"}]" * depth)


# JSON a publisher sends as `data`, or a progress `result`: nested to any depth, numbers no parser
# holds, escapes of lone surrogates, and bytes that are not JSON or not UTF-8.
json_data = st.one_of(
    st.tuples(st.integers(1, 100_000), st.sampled_from(["list", "object", "mixed"])).map(
        lambda t: nested(*t)
    ),
    st.sampled_from([252, 253, 254, 255, 256, 257, 511, 512, 513, 1024]).map(lambda d: nested(d, "list")),
    st.sampled_from(
        [
            b"1e400",
            b"-1e400",
            b"123456789012345678901234567890",
            b"-0",
            b"NaN",
            b"Infinity",
            b'"\\ud800"',
            b'"\\udc00\\ud800"',
            b'"\xff"',
            b'"\xed\xa0\x80"',
            b'{"a":1,"a":2}',
            b'"' + b"a" * 300_000 + b'"',
            b'"\\u0000"',
            b"[" * 10 + b"]",
        ]
    ),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
)

idempotency_keys = st.one_of(
    st.from_regex(r"\A[!-~]{1,40}\Z"),
    st.sampled_from(["order-7-created", "a", "x" * 200, "x" * 201, " ", "a b", "é", "key\x00", "*", "%2A"]),
    st.text(max_size=30),
)


@dataclass(frozen=True)
class Credentials:
    """How a hostile request authenticates: the tokens it may carry, valid and not."""

    minimal: str  # a valid token granting one public topic
    # signed with another secret, `alg: none`, expired, another algorithm; or signed right but with
    # claims of the wrong shape, or thousands of grants
    hostile: Sequence[str]


def credential_headers(creds: Credentials) -> st.SearchStrategy[tuple[list[tuple[bytes, bytes]], bytes]]:
    """Headers, and a query suffix, carrying a token: none, the minimal one, a hostile one, or bytes
    that are not a token at all (undecodable, huge, in the wrong scheme)."""
    token = st.one_of(
        st.just(creds.minimal.encode()),
        st.sampled_from(list(creds.hostile)).map(str.encode),
        header_bytes(st.text(max_size=60)),
        st.sampled_from(UNDECODABLE),
        st.just(creds.minimal.encode() + b"="),
        st.just(creds.minimal.encode()[:-1] + b"\xff"),
        st.integers(8000, 8180).map(lambda n: b"a" * n),
    )
    place = st.sampled_from(["none", "bearer", "cookie", "query", "scheme"])

    def build(pair: tuple[str, bytes]) -> tuple[list[tuple[bytes, bytes]], bytes]:
        where, value = pair
        if where == "bearer":
            return [(b"Authorization", b"Bearer " + value)], b""
        if where == "cookie":
            return [(b"Cookie", b"hub_token=" + value)], b""
        if where == "query":
            return [], b"token=" + urllib.parse.quote_from_bytes(value, safe="").encode()
        if where == "scheme":
            return [(b"Authorization", b"Basic " + value)], b""
        return [], b""

    return st.tuples(place, token).map(build)


ORIGINS = (
    b"https://evil.example",
    b"null",
    b"https://app.example.evil.example",
    b"https://app.example",  # the allowed origin (see the tests' cors.origins)
    b"http://app.example",
    b"https://APP.example",
    b"\xff",
)
origins = st.one_of(st.none(), st.sampled_from(ORIGINS))


def with_query(path: bytes, query: bytes, extra: bytes) -> bytes:
    if not extra:
        return path + query
    return path + (query + b"&" if query else b"?") + extra


def request(
    method: str,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    writes: Sequence[str] = (),
    note: str = "",
) -> RawRequest:
    return RawRequest(method.encode(), target, tuple(headers), body, tuple(writes), note)


# Requests, one strategy per surface of the hub. `creds` adds a token (or not) to each; every request
# also carries, now and then, an Origin.
SUBSCRIPTIONS = ("public/probe", "public/min", "public/**", "public/*", "**", "private/x")
FORMATS = (None, b"sse", b"ndjson", b"text", b"bytes", b"SSE", b"\xff")
# What a byte stream's resume point adds to a position (`<id>:<offset>`), hostile or not.
OFFSETS = st.one_of(
    st.sampled_from([b"", b":0", b":1", b":", b"::1", b":-1", b":01", b":1e3", b":9007199254740992"]),
    numbers.map(lambda n: b":" + n.encode("utf-8", "surrogatepass")),
)


def _with_creds(
    creds: Credentials, build: st.SearchStrategy[tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]]
) -> st.SearchStrategy[RawRequest]:
    """Requests from (method, path, query, headers, body), with a token and an Origin added."""

    def make(
        parts: tuple[
            tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes], tuple[list, bytes], bytes | None
        ],
    ) -> RawRequest:
        (method, path, query, headers, body), (token_headers, token_query), origin = parts
        extra = [(b"Origin", origin)] if origin is not None else []
        target = with_query(path, query, token_query)
        return RawRequest(method.encode(), target, (*headers, *token_headers, *extra), body)

    return st.tuples(build, credential_headers(creds), origins).map(make)


def resume_requests(anchors: Sequence[Anchor], creds: Credentials) -> st.SearchStrategy[RawRequest]:
    """`GET /events` with a hostile position in Last-Event-ID, in ?lastEventId=, or both."""
    position = st.sampled_from(list(anchors)).flatmap(lambda a: header_bytes(positions(a)))

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
        value = draw(position) + draw(OFFSETS)
        where = draw(st.sampled_from(["header", "query", "both"]))
        topics = draw(st.lists(st.sampled_from(SUBSCRIPTIONS), min_size=1, max_size=3))
        pairs = [(b"topic", t.encode()) for t in topics]
        if where != "header":
            pairs.append(
                (b"lastEventId", value if where == "query" else draw(header_bytes(st.text(max_size=30))))
            )
        fmt = draw(st.sampled_from(FORMATS))
        if fmt is not None:
            pairs.append((b"format", fmt))
        headers = [(b"Last-Event-ID", value)] if where != "query" else []
        return "GET", b"/events", draw(query_pairs(pairs)), headers, b""

    return _with_creds(creds, build())


def history_requests(anchors: Sequence[Anchor], creds: Credentials) -> st.SearchStrategy[RawRequest]:
    """`GET /topics/{topic}/history` with hostile ?after=, ?limit= and ?format=."""
    after = st.sampled_from(list(anchors)).flatmap(lambda a: header_bytes(positions(a)))

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
        topic = draw(st.sampled_from(["public/probe", "public/min", "private/x", "public/none"]))
        pairs = []
        if draw(st.booleans()):
            pairs.append((b"after", draw(after)))
        if draw(st.booleans()):
            pairs.append((b"limit", draw(numbers).encode("utf-8", "surrogatepass")))
        if draw(st.booleans()):
            pairs.append(
                (b"format", draw(st.sampled_from([b"json", b"ndjson", b"csv", b"", b"JSON", b"\xff"])))
            )
        path = b"/topics/" + draw(query_value(topic.encode())) + b"/history"
        return "GET", path, draw(query_pairs(pairs)), [], b""

    return _with_creds(creds, build())


def topic_requests(creds: Credentials) -> st.SearchStrategy[RawRequest]:
    """Every place a topic or selector reaches the hub, with hostile ones: subscriptions (one, several,
    past the limit), a history's path, a job's name, a streamed publish's query, a publish's body."""
    topic = topics.map(lambda t: t.encode("utf-8", "surrogatepass"))

    @st.composite
    def build(draw: st.DrawFn) -> RawRequest:
        where = draw(
            st.sampled_from(["events", "many", "history", "presence", "progress", "stream", "publish"])
        )
        value = draw(topic)
        spelled = draw(query_value(value))
        # what the hub may take the topic for, whichever way it decodes the spelling sent
        written = (
            value.decode("utf-8", "replace"),
            value.decode("utf-8", "surrogateescape"),
            value.decode("latin-1"),
            urllib.parse.quote_from_bytes(value, safe=""),
            urllib.parse.unquote(value.decode("latin-1")),
        )
        json_topic = json.dumps(value.decode("utf-8", "surrogatepass")).encode("utf-8", "surrogatepass")
        if where == "events":
            more = draw(st.lists(topic, max_size=3))
            query = draw(query_pairs([(b"topic", t) for t in [value, *more]]))
            return request("GET", b"/events" + query, note="subscribe")
        if where == "many":
            n = draw(st.sampled_from([100, 101, 1000]))
            query = b"?" + b"&".join(b"topic=public/t%d" % i for i in range(n))
            return request("GET", b"/events" + query, note="subscribe to many")
        if where == "history":
            return request("GET", b"/topics/" + spelled + b"/history", note="history")
        if where == "presence":
            tail = draw(st.sampled_from([b"/subscribers", b"/presence", b"/presence?limit=1000"]))
            return request("GET", b"/topics/" + spelled + tail, note="presence")
        if where == "progress":
            body = b'{"current": 1, "total": 2}'
            jobs = tuple("jobs/" + w for w in written)
            return request(
                "POST", b"/progress/" + spelled, [(b"Content-Type", b"application/json")], body, jobs
            )
        if where == "stream":
            headers = [(b"Content-Type", b"text/plain")]
            return request("POST", b"/publish/stream?topic=" + spelled, headers, b"x", written, "stream")
        body = b'{"topic": ' + json_topic + b', "data": "x"}'
        return request(
            "POST", b"/publish", [(b"Content-Type", b"application/json")], body, written, "publish"
        )

    def add(parts: tuple[RawRequest, tuple[list, bytes]]) -> RawRequest:
        req, (token_headers, token_query) = parts
        path, _, query = req.target.partition(b"?")
        target = with_query(path, b"?" + query if query else b"", token_query)
        return RawRequest(req.method, target, (*req.headers, *token_headers), req.body, req.writes, req.note)

    return st.tuples(build(), credential_headers(creds)).map(add)


PUBLISH_TOPICS = ("public/min", "public/hostile", "public/probe")
CONTENT_TYPES = (
    b"application/json",
    b"application/octet-stream",
    b"application/json; charset=latin-1",
    b"application/x-www-form-urlencoded",
    b"text/plain",
    b"multipart/form-data; boundary=x",
    b"",
    b"\xff",
)


def publish_requests(creds: Credentials) -> st.SearchStrategy[RawRequest]:
    """Publishes with hostile bodies (nesting, numbers, bytes), Idempotency-Keys, media types; progress
    reports with hostile numbers and results; streamed publishes with hostile bodies."""
    field_value = st.one_of(json_data, st.sampled_from([b'"x"', b"1", b"null", b'""', b'"\\u0000"']))

    @st.composite
    def build(draw: st.DrawFn) -> RawRequest:
        where = draw(st.sampled_from(["publish", "publish", "batch", "form", "progress", "stream", "binary"]))
        topic = draw(st.sampled_from(PUBLISH_TOPICS))
        content_type = draw(st.sampled_from(CONTENT_TYPES))
        headers = [(b"Content-Type", content_type)]
        if draw(st.booleans()):
            headers.append((b"Idempotency-Key", draw(header_bytes(idempotency_keys))))
        if where == "progress":
            job = topic.rsplit("/", 1)[1]
            report = draw(
                st.sampled_from(
                    [
                        b'{"current": %b, "total": %b, "message": %b}',
                        b'{"done": true, "result": %b}',
                        b'{"error": %b}',
                        b'{"current": %b, "total": %b, "done": true, "error": %b}',
                    ]
                )
            )
            values = [
                draw(st.one_of(numbers.map(str.encode), field_value)) for _ in range(report.count(b"%b"))
            ]
            body = report % tuple(values)
            return request("POST", b"/progress/" + job.encode(), headers, body, ("jobs/" + job,), "progress")
        if where == "binary":
            # Bytes as the body, the event's fields in the query: hostile ones, repeated, or missing.
            headers[0] = (b"Content-Type", b"application/octet-stream")
            # The topic as it is (its other spellings name other topics: topic_requests has those).
            query = b"topic=" + topic.encode() if draw(st.booleans()) else b""
            pairs = []
            for name, value in draw(
                st.lists(
                    st.sampled_from(
                        [
                            (b"topic", b"private/x"),
                            (b"topic", b"$presence/public/min"),
                            (b"event", b"binary"),
                            (b"event", b"reset"),
                            (b"event", b"a\nb"),
                            (b"retry", numbers.map(lambda n: n.encode("utf-8", "surrogatepass"))),
                            (b"retain", b"true"),
                            (b"retain", b"\xff"),
                        ]
                    ),
                    max_size=3,
                )
            ):
                if name == b"topic":
                    query += (b"&" if query else b"") + b"topic=" + value.replace(b"$", b"%24")
                else:
                    pairs.append((name, value if isinstance(value, bytes) else draw(value)))
            body = draw(st.binary(max_size=64))
            rest = draw(query_pairs(pairs))[1:]
            query = b"&".join(part for part in (query, rest) if part)
            target = b"/publish?" + query if query else b"/publish"
            return request("POST", target, headers, body, (topic, "private/x"), "binary publish")
        if where == "stream":
            headers[0] = (
                b"Content-Type",
                draw(
                    st.sampled_from(
                        [
                            b"text/plain",
                            b"application/x-ndjson",
                            b"text/event-stream",
                            b"application/octet-stream",
                        ]
                    )
                ),
            )
            lines = draw(st.lists(field_value, min_size=1, max_size=3))
            if headers[0][1] == b"application/x-ndjson":
                lines = [b'{"data": ' + line + b"}" for line in lines]
            elif headers[0][1] == b"text/event-stream":
                # Some marked as a hub's binary events, their base64 good or not.
                mark = draw(st.sampled_from([b"", b"encoding: base64\n", b"event: binary\nencoding: x\n"]))
                lines = [mark + b"data: " + line + b"\n" for line in lines]
            body = b"\n".join(lines) + b"\n"
            return request(
                "POST", b"/publish/stream?topic=" + topic.encode(), headers, body, (topic,), "stream"
            )
        if where == "form":
            data = draw(field_value)
            body = b"topic=" + topic.encode() + b"&data=" + draw(query_value(data))
            return request("POST", b"/publish", headers, body, (topic,), "form publish")
        events = []
        for _ in range(draw(st.integers(1, 3)) if where == "batch" else 1):
            event = b'{"topic": "%b", "data": %b' % (topic.encode(), draw(field_value))
            for name, value in draw(
                st.lists(
                    st.sampled_from(
                        [
                            (b"event", b'"reset"'),
                            (b"event", b'"a\\nb"'),
                            (b"retry", numbers.map(str.encode)),
                            (b"retain", b"true"),
                            (b"retain", b'"yes"'),
                            (b"topics", b'["public/min", "private/x"]'),
                            (b"id", b'"forged-1"'),
                            (b"encoding", b'"base64"'),
                            (b"encoding", b'"hex"'),
                        ]
                    ),
                    max_size=2,
                )
            ):
                if not isinstance(value, bytes):
                    value = draw(value)
                event += b', "%b": %b' % (name, value)
            events.append(event + b"}")
        body = b"[" + b", ".join(events) + b"]" if where == "batch" else events[0]
        return request("POST", b"/publish", headers, body, (topic, "public/min", "private/x"), where)

    def add(parts: tuple[RawRequest, tuple[list, bytes], bytes | None]) -> RawRequest:
        req, (token_headers, token_query), origin = parts
        path, _, query = req.target.partition(b"?")
        target = with_query(path, b"?" + query if query else b"", token_query)
        extra = [(b"Origin", origin)] if origin is not None else []
        headers = (*req.headers, *token_headers, *extra)
        return RawRequest(req.method, target, headers, req.body, req.writes, req.note)

    return st.tuples(build(), credential_headers(creds), origins).map(add)


# Every endpoint, for the credentials test: what each sends besides its token.
ENDPOINTS = (
    ("GET", b"/events?topic=public/min", b"", ()),
    ("GET", b"/events?topic=**", b"", ()),
    ("GET", b"/topics/public%2Fmin/history", b"", ()),
    ("POST", b"/publish", b'{"topic": "public/min", "data": "csrf"}', ("public/min",)),
    ("POST", b"/publish", b"topic=public/min&data=csrf", ("public/min",)),
    ("POST", b"/progress/min", b'{"current": 1, "total": 2}', ("jobs/min",)),
    ("POST", b"/publish/stream?topic=public/min", b"csrf", ("public/min",)),
    ("POST", b"/publish?topic=public/min", b"\x00csrf", ("public/min",)),
    ("GET", b"/topics/public%2Fmin/subscribers", b"", ()),
    ("GET", b"/topics/public%2Fmin/presence", b"", ()),
    ("GET", b"/subscriptions", b"", ()),
    ("POST", b"/disconnect", b'{"conn": "no-such-stream"}', ()),
    ("GET", b"/stats", b"", ()),
    ("GET", b"/stats/stream", b"", ()),
    ("GET", b"/metrics", b"", ()),
    ("GET", b"/readyz", b"", ()),
    ("GET", b"/healthz", b"", ()),
    ("GET", b"/", b"", ()),
)


def credential_requests(creds: Credentials) -> st.SearchStrategy[RawRequest]:
    """Each endpoint, with a token in every place one is read from (or none), valid or hostile, from
    any Origin, under any media type: a browser's form and `text/plain` posts need no preflight."""

    def make(
        parts: tuple[tuple[str, bytes, bytes, tuple[str, ...]], tuple[list, bytes], bytes | None, bytes],
    ) -> RawRequest:
        (method, target, body, writes), (token_headers, token_query), origin, content_type = parts
        path, _, query = target.partition(b"?")
        full = with_query(path, b"?" + query if query else b"", token_query)
        headers = [*token_headers, *([(b"Origin", origin)] if origin is not None else [])]
        if body:
            headers.append((b"Content-Type", content_type))
        return RawRequest(method.encode(), full, tuple(headers), body, writes, "endpoint")

    return st.tuples(
        st.sampled_from(ENDPOINTS), credential_headers(creds), origins, st.sampled_from(CONTENT_TYPES)
    ).map(make)
