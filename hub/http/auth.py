"""JWT authorization: which topics a request may subscribe to and publish to.

A token carries the claim `hub: {"publish": [selectors], "subscribe": [selectors], "admin": bool,
"control": bool}`. A
subscription is allowed when each of its selectors is covered by one granted (or public) selector, so
that no event outside the grant can match it; a publish when each topic of each event matches a publish
selector; `/stats` and `/metrics` with `admin: true`; the list of every subscription and disconnects
with `control: true`. A topic's subscribers and presence are read with the grant that subscribes to it.
Refusals: 401 for a missing or unverifiable token, 403 for a valid token without the topic.
No I/O here but reading the public key file at startup.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt.utils import base64url_decode

from hub.config import HMAC_MIN_BYTES, AuthConfig
from hub.errors import BadRequest, ConfigError, Forbidden, Unauthorized
from hub.wire.event import Draft
from hub.wire.presence import guarded_selector
from hub.wire.selector_set import SelectorSet
from hub.wire.topics import Selector

CLAIM = "hub"
COOKIE = "hub_token"
# Seconds of clock skew tolerated on exp/nbf/iat: tokens are minted on other machines, and a token
# refused for being issued "in the future" one second ago is a hard bug for an operator to find.
LEEWAY = 5
# Selectors one token may grant, publish and subscribe together. Checking costs the same whatever the
# number (see hub.wire.selector_set), but each costs memory while its token is cached; an issuer granting
# more should grant patterns.
MAX_SELECTORS = 4096
# Verified tokens kept, so that a client's next request skips the signature and the parsing. Bounded in
# tokens and in the selectors they hold: a cached token costs memory in proportion to its grants.
CACHE_TOKENS = 1024
MAX_SUBJECT_BYTES = 256  # a longer sub names its publisher by its digest
CACHE_SELECTORS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Grants:
    publish: tuple[Selector, ...] = ()
    subscribe: tuple[Selector, ...] = ()
    admin: bool = False  # may read /stats, /stats/stream and /metrics
    control: bool = False  # may list every subscription, and disconnect streams (POST /disconnect)
    # Who holds the token, whatever its spelling: `sub:<sub>` (`sub#<digest>` past 256 bytes), or
    # without a sub claim `claims:<digest of the verified header and payload>`. Empty when built by hand.
    subject: str = ""
    expires: float | None = None  # the exp claim, when there is one
    publish_set: SelectorSet = field(init=False, repr=False, compare=False)
    subscribe_set: SelectorSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "publish_set", SelectorSet(self.publish))
        object.__setattr__(self, "subscribe_set", SelectorSet(self.subscribe))

    @property
    def size(self) -> int:
        return len(self.publish) + len(self.subscribe)


def _selectors(value: object, what: str) -> tuple[Selector, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unauthorized("invalid_token", f"the token's {CLAIM}.{what} claim must be a list of selectors")
    if len(value) > MAX_SELECTORS:
        raise Unauthorized(
            "invalid_token",
            f"the token grants {len(value)} {what} selectors; this hub accepts at most {MAX_SELECTORS}",
        )
    try:
        return tuple(Selector.parse(v) for v in value)
    except BadRequest as exc:
        raise Unauthorized("invalid_token", f"the token's {CLAIM}.{what} claim: {exc.message}") from None


def grants_from_claims(claims: dict[str, Any], subject: str = "") -> Grants:
    exp = claims.get("exp")
    expires = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    claim = claims.get(CLAIM)
    if claim is None:
        return Grants(subject=subject, expires=expires)
    if not isinstance(claim, dict):
        raise Unauthorized("invalid_token", f"the token's {CLAIM} claim must be an object")
    admin = claim.get("admin", False)
    control = claim.get("control", False)
    for name, value in (("admin", admin), ("control", control)):
        if not isinstance(value, bool):
            raise Unauthorized("invalid_token", f"the token's {CLAIM}.{name} claim must be true or false")
    publish = _selectors(claim.get("publish"), "publish")
    subscribe = _selectors(claim.get("subscribe"), "subscribe")
    if len(publish) + len(subscribe) > MAX_SELECTORS:
        raise Unauthorized(
            "invalid_token",
            f"the token grants {len(publish) + len(subscribe)} selectors; "
            f"this hub accepts at most {MAX_SELECTORS}",
        )
    return Grants(publish, subscribe, admin, control, subject, expires)


def subject_of(token: str, claims: dict[str, Any]) -> str:
    """The publisher a verified token names, the same for every spelling of the token."""
    sub = claims.get("sub")
    if isinstance(sub, str) and sub:
        try:
            encoded = sub.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, escaped in the JSON: no one's name
            raise Unauthorized("invalid_token", "the token's sub claim is not valid Unicode") from None
        if len(encoded) <= MAX_SUBJECT_BYTES:
            return "sub:" + sub
        # Kept by the rate limiter and in idempotency records: a fixed size, whatever the issuer wrote.
        return "sub#" + hashlib.blake2b(encoded, digest_size=16).hexdigest()
    # The decoded header and payload: re-encodings PyJWT accepts (padding, spare bits in the last
    # base64 character) decode to the same bytes, and any other change breaks the signature.
    signed, _ = token.encode("ascii").rsplit(b".", 1)
    header, payload = signed.split(b".", 1)  # as PyJWT splits it
    digest = hashlib.blake2b(base64url_decode(header) + b"." + base64url_decode(payload), digest_size=16)
    return "claims:" + digest.hexdigest()


class TokenCache:
    """Verified tokens' grants, least recently used first out; a token is looked up by its digest."""

    def __init__(self, tokens: int = CACHE_TOKENS, selectors: int = CACHE_SELECTORS) -> None:
        self.max_tokens = tokens
        self.max_selectors = selectors
        self._grants: OrderedDict[bytes, Grants] = OrderedDict()
        self._selectors = 0

    def __len__(self) -> int:
        return len(self._grants)

    @staticmethod
    def key(token: str) -> bytes:
        # A digest, not the token: the cache neither keeps credentials nor 90 kB keys. 256 bits, as a
        # collision would hand one token's grants to another.
        return hashlib.blake2b(token.encode("ascii"), digest_size=32).digest()

    def get(self, key: bytes, now: float) -> Grants | None:
        grants = self._grants.get(key)
        if grants is None:
            return None
        if grants.expires is not None and now > grants.expires + LEEWAY:
            self._drop(key)  # verified again, it is refused as expired
            return None
        self._grants.move_to_end(key)
        return grants

    def put(self, key: bytes, grants: Grants) -> None:
        if grants.size > self.max_selectors:
            return
        if key in self._grants:
            self._drop(key)
        self._grants[key] = grants
        self._selectors += grants.size
        while len(self._grants) > self.max_tokens or self._selectors > self.max_selectors:
            self._drop(next(iter(self._grants)))

    def _drop(self, key: bytes) -> None:
        self._selectors -= self._grants.pop(key).size


class Authorizer:
    """Verifies tokens and checks requests against their grants. Off when no key is configured."""

    def __init__(self, config: AuthConfig) -> None:
        self.enabled = config.enabled
        self.public = tuple(Selector.parse(t) for t in config.public_topics)
        self._key: Any = None
        self._algorithm = ""
        if config.jwt_secret:
            self._key = config.jwt_secret
            self._algorithm = config.jwt_algorithm or "HS256"
        elif config.jwt_public_key:
            self._key = _load_public_key(config.jwt_public_key)
            self._algorithm = config.jwt_algorithm or _algorithm_for(self._key)
        self._public_set = SelectorSet(self.public)
        self.cache = TokenCache()

    def verify(self, token: str) -> Grants:
        # A JWT is ASCII (base64url and dots). aiohttp reads bytes that are not UTF-8 as lone
        # surrogates, which PyJWT cannot encode: refuse them here, as the malformed tokens they are.
        if not token.isascii():
            raise Unauthorized("invalid_token", "the token is not a JWT: it has characters other than ASCII")
        key = TokenCache.key(token)
        now = time.time()
        cached = self.cache.get(key, now)
        if cached is not None:
            return cached
        grants = self._verify(token)
        self.cache.put(key, grants)
        return grants

    def _verify(self, token: str) -> Grants:
        try:
            # One algorithm, the configured one: `none` and algorithm confusion (an HS256 token signed
            # with our RSA public key as its secret) fail here.
            claims = jwt.decode(token, self._key, algorithms=[self._algorithm], leeway=LEEWAY)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("invalid_token", "the token is not valid yet (nbf/iat)") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized(
                "invalid_token", f"the token's algorithm is not allowed; this hub accepts {self._algorithm}"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("invalid_token", "the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            # The message names the rule broken (a malformed header, a bad claim type), never the token.
            raise Unauthorized("invalid_token", f"the token is invalid: {exc}") from None
        return grants_from_claims(claims, subject_of(token, claims))

    def check_subscribe(self, token: str | None, selectors: Sequence[Selector]) -> float | None:
        """Refuses what the token does not allow. Returns when the subscription's right ends: its
        token's exp, when some selector is not public and the token has one; else None (for good)."""
        if not self.enabled:
            return None
        grants = self.verify(token) if token is not None else None
        expires = None
        for asked in selectors:
            # `$presence/<topic>` is read with `<topic>`'s grant.
            selector = guarded_selector(asked)
            if self._public_set.covers(selector):
                continue
            expires = grants.expires if grants is not None else None
            if grants is None:
                raise Unauthorized(
                    "token_required", f"subscribing to {asked.text!r} needs a token; it is not public"
                )
            if not grants.subscribe_set.covers(selector):
                raise Forbidden("topic_forbidden", f"the token does not allow subscribing to {asked.text!r}")
        if expires is not None and expires <= time.time():
            # Within the leeway, but a stream ends at its token's exp (hub.http.expiry): one opened now
            # would end at once, and its client would come back with the same token again and again.
            raise Unauthorized("token_expired", "the token has expired")
        return expires

    def publisher(self, token: str | None) -> Grants | None:
        """A publisher's grants, checked before its body is read; None when auth is off."""
        if not self.enabled:
            return None
        if token is None:
            raise Unauthorized("token_required", "publishing needs a token")
        return self.verify(token)

    def check_control(self, token: str | None, what: str) -> None:
        """Every subscription, and disconnects: for a token with `hub.control`, when auth is on."""
        self._check_claim(token, "control", what)

    def check_admin(self, token: str | None) -> None:
        """The hub's own figures (/stats, /metrics): for a token with `hub.admin`, when auth is on."""
        self._check_claim(token, "admin", "the hub's stats")

    def _check_claim(self, token: str | None, claim: str, what: str) -> None:
        if not self.enabled:
            return
        if token is None:
            raise Unauthorized("token_required", f"{what} needs a token with {CLAIM}.{claim}")
        if not getattr(self.verify(token), claim):
            raise Forbidden(f"{claim}_required", f"{what} needs a token with {CLAIM}.{claim}: true")

    @staticmethod
    def check_publish(grants: Grants | None, drafts: Sequence[Draft]) -> None:
        if grants is None:
            return
        allowed = grants.publish_set
        for draft in drafts:
            for topic in draft.topics:
                if not allowed.matches(topic):
                    raise Forbidden("topic_forbidden", f"the token does not allow publishing to {topic!r}")


def _read_pem(value: str, key: str) -> bytes:
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {value}: {exc.strerror}") from None


def _load_public_key(value: str) -> Any:
    try:
        return load_pem_public_key(_read_pem(value, "auth.jwt_public_key"))
    except ValueError:
        raise ConfigError("auth.jwt_public_key: not a PEM public key") from None


def _algorithm_for(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return {"secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name, "ES256")
    raise ConfigError("auth.jwt_public_key: only RSA and EC keys are supported; set auth.jwt_algorithm")


def mint(
    *,
    publish: Sequence[str] = (),
    subscribe: Sequence[str] = (),
    ttl: float | None = 3600.0,
    secret: str = "",
    private_key: str = "",
    algorithm: str = "",
    subject: str | None = None,
    admin: bool = False,
    control: bool = False,
) -> str:
    """A token granting the given selectors; HS256 with `secret`, or signed with a PEM private key."""
    for text in (*publish, *subscribe):
        Selector.parse(text)
    claims: dict[str, Any] = {CLAIM: {"publish": list(publish), "subscribe": list(subscribe)}}
    if admin:
        claims[CLAIM]["admin"] = True
    if control:
        claims[CLAIM]["control"] = True
    now = int(time.time())
    claims["iat"] = now
    if ttl is not None:
        claims["exp"] = now + int(ttl)
    if subject is not None:
        claims["sub"] = subject
    try:
        if private_key:
            key: Any = load_pem_private_key(_read_pem(private_key, "private key"), password=None)
            return jwt.encode(claims, key, algorithm=algorithm or _algorithm_for(key))
        algorithm = algorithm or "HS256"
        if not secret:
            raise ConfigError("auth.jwt_secret: minting a token needs a secret or a private key")
        if len(secret.encode()) < HMAC_MIN_BYTES.get(algorithm, 0):
            raise ConfigError(
                f"auth.jwt_secret: {algorithm} needs at least {HMAC_MIN_BYTES[algorithm]} bytes"
            )
        return jwt.encode(claims, secret, algorithm=algorithm)
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"cannot sign with this key and algorithm: {exc}") from None
