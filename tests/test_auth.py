"""Tokens and grants, without a server: verification refusals and the selector covering rule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given

from hub import cli
from hub import config as hub_config
from hub.errors import ConfigError, Forbidden, Unauthorized
from hub.http.auth import LEEWAY, MAX_SELECTORS, Authorizer, Grants, TokenCache, mint
from hub.wire.event import Draft
from hub.wire.topics import Selector
from tests.support.selector_strategies import selector_text, topic_text

SECRET = "s" * 32


def hs_authorizer(**auth: object) -> Authorizer:
    return Authorizer(hub_config.build({"auth": {"jwt_secret": SECRET, **auth}}).auth)


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, object], claims: dict[str, object], sign: bytes = b"") -> str:
    """A token assembled by hand, as an attacker would: PyJWT refuses to sign some of these."""
    head = b64(orjson.dumps(header)) + "." + b64(orjson.dumps(claims))
    return head + "." + b64(sign)


GRANT = {"hub": {"publish": ["news/*"], "subscribe": ["users/42/**"]}}


def test_a_valid_token_grants_its_selectors():
    grants = hs_authorizer().verify(mint(publish=["news/*"], subscribe=["users/42/**"], secret=SECRET))
    assert [s.text for s in grants.publish] == ["news/*"]
    assert [s.text for s in grants.subscribe] == ["users/42/**"]


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda: jwt.encode({**GRANT, "exp": int(time.time()) - 60}, SECRET, "HS256"), "token_expired"),
        (lambda: "not.a.token", "invalid_token"),
        (lambda: "garbage", "invalid_token"),
        (lambda: jwt.encode(GRANT, "x" * 32, "HS256"), "invalid_token"),  # wrongly signed
        (lambda: handmade({"alg": "none", "typ": "JWT"}, GRANT), "invalid_token"),
        (lambda: handmade({"alg": "None", "typ": "JWT"}, GRANT), "invalid_token"),
        (lambda: jwt.encode(GRANT, SECRET + SECRET, "HS512"), "invalid_token"),  # another algorithm
        (lambda: jwt.encode({**GRANT, "nbf": int(time.time()) + 600}, SECRET, "HS256"), "invalid_token"),
        (lambda: jwt.encode({"hub": ["news/*"]}, SECRET, "HS256"), "invalid_token"),
        (lambda: jwt.encode({"hub": {"publish": "news/*"}}, SECRET, "HS256"), "invalid_token"),
        (lambda: jwt.encode({"hub": {"subscribe": ["a b"]}}, SECRET, "HS256"), "invalid_token"),
        (lambda: jwt.encode({"hub": {"subscribe": ["a/**/b"]}}, SECRET, "HS256"), "invalid_token"),
    ],
    ids=[
        "expired",
        "malformed",
        "not-a-jwt",
        "wrong-secret",
        "alg-none",
        "alg-None",
        "wrong-algorithm",
        "not-yet-valid",
        "claim-not-object",
        "claim-not-list",
        "bad-selector",
        "bad-pattern",
    ],
)
def test_bad_tokens_are_refused_with_401(make_token, code):
    with pytest.raises(Unauthorized) as refused:
        hs_authorizer().verify(make_token())
    assert refused.value.code == code
    assert refused.value.status == 401


def test_refusal_messages_never_carry_the_token():
    token = jwt.encode(GRANT, "x" * 32, "HS256")
    with pytest.raises(Unauthorized) as refused:
        hs_authorizer().verify(token)
    assert token not in refused.value.message
    assert token.split(".")[2] not in str(refused.value.body())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_rs256_and_es256_public_keys_verify_their_tokens(rsa_key, ec_key, tmp_path):
    for key, alg in ((rsa_key, "RS256"), (ec_key, "ES256")):
        path = tmp_path / f"{alg}.pem"
        path.write_text(pem_public(key))
        for value in (pem_public(key), str(path)):  # PEM text or a file
            authorizer = Authorizer(hub_config.build({"auth": {"jwt_public_key": value}}).auth)
            token = jwt.encode(GRANT, key, alg)
            assert [s.text for s in authorizer.verify(token).subscribe] == ["users/42/**"]


def test_algorithm_confusion_is_refused(rsa_key):
    """An HS256 token whose HMAC secret is our public key: the classic RS256 -> HS256 attack."""
    public = pem_public(rsa_key)
    authorizer = Authorizer(hub_config.build({"auth": {"jwt_public_key": public}}).auth)
    unsigned = handmade({"alg": "HS256", "typ": "JWT"}, GRANT).rsplit(".", 1)[0]
    signature = hmac.new(public.encode(), unsigned.encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthorized, match="algorithm"):
        authorizer.verify(unsigned + "." + b64(signature))


def test_minted_private_key_tokens_and_file_refusals(rsa_key, tmp_path):
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    token = mint(subscribe=["a/*"], private_key=private, ttl=60)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    authorizer = Authorizer(hub_config.build({"auth": {"jwt_public_key": pem_public(rsa_key)}}).auth)
    assert [s.text for s in authorizer.verify(token).subscribe] == ["a/*"]
    with pytest.raises(ConfigError, match=r"auth\.jwt_public_key"):
        Authorizer(hub_config.build({"auth": {"jwt_public_key": str(tmp_path / "missing.pem")}}).auth)
    with pytest.raises(ConfigError, match=r"auth\.jwt_public_key"):
        Authorizer(hub_config.build({"auth": {"jwt_public_key": "-----BEGIN PUBLIC KEY-----\nxx"}}).auth)


@pytest.mark.parametrize(
    ("auth", "names"),
    [
        ({"jwt_secret": "short"}, "auth.jwt_secret"),
        ({"jwt_secret": SECRET, "jwt_public_key": "k"}, "auth.jwt_secret"),
        ({"jwt_secret": SECRET, "jwt_algorithm": "none"}, "auth.jwt_algorithm"),
        ({"jwt_secret": SECRET, "jwt_algorithm": "RS256"}, "auth.jwt_algorithm"),
        ({"public_topics": ["a b"]}, "auth.public_topics"),
    ],
)
def test_bad_auth_config_names_the_key(auth, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        hub_config.build({"auth": auth})


def test_subscribe_needs_every_selector_covered():
    authorizer = hs_authorizer(public_topics=["news/**"])
    token = mint(subscribe=["users/42/**", "jobs/*"], secret=SECRET)
    sel = [Selector.parse(t) for t in ("news", "news/a/b", "users/42", "users/42/x/y", "jobs/7", "jobs/*")]
    authorizer.check_subscribe(token, sel)
    authorizer.check_subscribe(None, sel[:2])  # public: no token needed
    with pytest.raises(Unauthorized, match="needs a token"):
        authorizer.check_subscribe(None, [Selector.parse("users/42")])
    for denied in ("users/43", "users/**", "jobs/**", "jobs/7/x", "**", "*"):
        with pytest.raises(Forbidden):
            authorizer.check_subscribe(token, [Selector.parse(denied)])


def test_publish_needs_every_topic_of_every_event_granted():
    authorizer = hs_authorizer()
    grants = authorizer.publisher(mint(publish=["news/*"], secret=SECRET))
    authorizer.check_publish(grants, [Draft(("news/a", "news/b"), 1)])
    with pytest.raises(Forbidden, match="news/a/b"):
        authorizer.check_publish(grants, [Draft(("news/a",), 1), Draft(("news/a", "news/a/b"), 1)])
    with pytest.raises(Unauthorized):
        authorizer.publisher(None)


def test_auth_off_allows_everything_and_ignores_tokens():
    authorizer = Authorizer(hub_config.build().auth)
    authorizer.check_subscribe(None, [Selector.parse("**")])
    assert authorizer.publisher("garbage") is None


@given(selector_text, selector_text, topic_text)
def test_a_covering_selector_matches_every_topic_of_the_covered_one(grant, asked, topic):
    granted, wanted = Selector.parse(grant), Selector.parse(asked)
    if granted.covers(wanted) and wanted.matches(topic):
        assert granted.matches(topic)


@given(selector_text, selector_text)
def test_covering_is_not_needlessly_strict(grant, asked):
    """If every topic up to the depth explored matches both or neither way, covers() agrees."""
    granted, wanted = Selector.parse(grant), Selector.parse(asked)
    topics = ["/".join(p) for n in range(1, 7) for p in _paths(n)]
    leaks = [t for t in topics if wanted.matches(t) and not granted.matches(t)]
    if granted.covers(wanted):
        assert not leaks
    else:
        assert leaks, f"{grant} covers {asked} on every topic of up to 6 segments, yet covers() says no"


def _paths(n: int) -> list[list[str]]:
    if n == 0:
        return [[]]
    return [[*p, s] for p in _paths(n - 1) for s in ("a", "b", "c")]


@pytest.mark.parametrize(
    "token", ["\udce9", "x\udcff.y.z", "é", mint(subscribe=["a"], secret=SECRET) + "\udcff"]
)
def test_an_undecodable_token_is_refused_with_401_not_an_encoding_error(token):
    """aiohttp reads header bytes that are not UTF-8 as lone surrogates, and PyJWT raised
    UnicodeEncodeError on them: a 500 with a traceback."""
    with pytest.raises(Unauthorized) as refused:
        hs_authorizer().verify(token)
    assert refused.value.code == "invalid_token"


def test_the_subject_is_the_sub_claim_or_the_verified_claims_whatever_the_spelling():
    authorizer = hs_authorizer()
    assert authorizer.verify(mint(publish=["a"], subject="alice", secret=SECRET)).subject == "sub:alice"
    # Another token of the same subject is the same publisher.
    assert (
        authorizer.verify(mint(publish=["b"], subject="alice", ttl=60, secret=SECRET)).subject == "sub:alice"
    )
    anonymous = jwt.encode(GRANT, SECRET, "HS256")
    respelled = anonymous + "="  # PyJWT accepts it: a fresh rate bucket, when keyed on the string
    assert authorizer.verify(respelled).subject == authorizer.verify(anonymous).subject
    assert authorizer.verify(anonymous).subject.startswith("claims:")
    other = jwt.encode({**GRANT, "x": 1}, SECRET, "HS256")
    assert authorizer.verify(other).subject != authorizer.verify(anonymous).subject
    long = authorizer.verify(mint(publish=["a"], subject="x" * 10_000, secret=SECRET)).subject
    assert long.startswith("sub#")
    assert len(long) < 64
    with pytest.raises(Unauthorized, match="sub"):
        authorizer.verify(jwt.encode({**GRANT, "sub": "\udcff"}, SECRET, "HS256"))


def test_a_verified_token_is_checked_once_then_served_from_the_cache():
    authorizer = hs_authorizer()
    token = mint(publish=[f"room/{i}" for i in range(3000)], secret=SECRET)
    first = authorizer.verify(token)
    assert authorizer.verify(token) is first


def test_the_token_cache_is_bounded_and_forgets_expired_tokens():
    cache = TokenCache(tokens=3, selectors=10)
    grants = [Grants((Selector.parse("a"),), expires=100.0) for _ in range(4)]
    for i, g in enumerate(grants):
        cache.put(bytes([i]), g)
    assert len(cache) == 3
    assert cache.get(bytes([0]), 50.0) is None  # the least recently used went first
    assert cache.get(bytes([1]), 50.0) is grants[1]
    assert cache.get(bytes([1]), 100.0 + LEEWAY + 1) is None  # expired: verified again, and refused
    big = Grants(tuple(Selector.parse(f"t/{i}") for i in range(6)))
    cache.put(b"big", big)
    cache.put(b"big2", big)
    assert len(cache) == 1  # 12 selectors are over the bound of 10: the oldest went
    assert cache.get(b"big2", 0.0) is big


def test_a_token_granting_absurdly_many_selectors_is_refused():
    token = jwt.encode({"hub": {"publish": [f"t/{i}" for i in range(MAX_SELECTORS + 1)]}}, SECRET, "HS256")
    with pytest.raises(Unauthorized, match=f"at most {MAX_SELECTORS}"):
        hs_authorizer().verify(token)
    half = [f"t/{i}" for i in range(MAX_SELECTORS // 2 + 1)]
    token = jwt.encode({"hub": {"publish": half, "subscribe": half}}, SECRET, "HS256")
    with pytest.raises(Unauthorized, match=f"at most {MAX_SELECTORS}"):
        hs_authorizer().verify(token)


def test_stats_need_an_admin_token_when_auth_is_on():
    authorizer = hs_authorizer()
    authorizer.check_admin(mint(admin=True, secret=SECRET))
    with pytest.raises(Unauthorized):
        authorizer.check_admin(None)
    with pytest.raises(Forbidden) as refused:
        authorizer.check_admin(mint(subscribe=["**"], publish=["**"], secret=SECRET))
    assert refused.value.code == "admin_required"
    with pytest.raises(Unauthorized, match="admin"):
        authorizer.verify(jwt.encode({"hub": {"admin": "yes"}}, SECRET, "HS256"))
    Authorizer(hub_config.build().auth).check_admin(None)  # auth off: open


def test_hub_token_admin_mints_a_token_for_the_stats(capsys):
    assert cli.main(["token", "--admin", "--secret", SECRET]) == 0
    token = capsys.readouterr().out.strip()
    assert hs_authorizer().verify(token).admin
    hs_authorizer().check_admin(token)
