"""JWT authorization: which topics a request may subscribe to and publish to.

A token carries the claim `hub: {"publish": [selectors], "subscribe": [selectors]}`. A subscription is
allowed when each of its selectors is covered by one granted (or public) selector, so that no event
outside the grant can match it; a publish when each topic of each event matches a publish selector.
Refusals: 401 for a missing or unverifiable token, 403 for a valid token without the topic.
No I/O here but reading the public key file at startup.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from hub.config import HMAC_MIN_BYTES, AuthConfig
from hub.errors import BadRequest, ConfigError, Forbidden, Unauthorized
from hub.event import Draft
from hub.topics import Selector

CLAIM = "hub"
COOKIE = "hub_token"
# Seconds of clock skew tolerated on exp/nbf/iat: tokens are minted on other machines, and a token
# refused for being issued "in the future" one second ago is a hard bug for an operator to find.
LEEWAY = 5


@dataclass(frozen=True, slots=True)
class Grants:
    publish: tuple[Selector, ...] = ()
    subscribe: tuple[Selector, ...] = ()


def _selectors(value: object, what: str) -> tuple[Selector, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unauthorized("invalid_token", f"the token's {CLAIM}.{what} claim must be a list of selectors")
    try:
        return tuple(Selector.parse(v) for v in value)
    except BadRequest as exc:
        raise Unauthorized("invalid_token", f"the token's {CLAIM}.{what} claim: {exc.message}") from None


def grants_from_claims(claims: dict[str, Any]) -> Grants:
    claim = claims.get(CLAIM)
    if claim is None:
        return Grants()
    if not isinstance(claim, dict):
        raise Unauthorized("invalid_token", f"the token's {CLAIM} claim must be an object")
    return Grants(
        _selectors(claim.get("publish"), "publish"), _selectors(claim.get("subscribe"), "subscribe")
    )


def _covered(selector: Selector, allowed: Iterable[Selector]) -> bool:
    return any(a.covers(selector) for a in allowed)


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

    def verify(self, token: str) -> Grants:
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
        return grants_from_claims(claims)

    def check_subscribe(self, token: str | None, selectors: Sequence[Selector]) -> None:
        if not self.enabled:
            return
        grants = self.verify(token) if token is not None else None
        for selector in selectors:
            if _covered(selector, self.public):
                continue
            if grants is None:
                raise Unauthorized(
                    "token_required", f"subscribing to {selector.text!r} needs a token; it is not public"
                )
            if not _covered(selector, grants.subscribe):
                raise Forbidden(
                    "topic_forbidden", f"the token does not allow subscribing to {selector.text!r}"
                )

    def publisher(self, token: str | None) -> Grants | None:
        """A publisher's grants, checked before its body is read; None when auth is off."""
        if not self.enabled:
            return None
        if token is None:
            raise Unauthorized("token_required", "publishing needs a token")
        return self.verify(token)

    @staticmethod
    def check_publish(grants: Grants | None, drafts: Sequence[Draft]) -> None:
        if grants is None:
            return
        for draft in drafts:
            for topic in draft.topics:
                if not any(a.matches(topic) for a in grants.publish):
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
) -> str:
    """A token granting the given selectors; HS256 with `secret`, or signed with a PEM private key."""
    for text in (*publish, *subscribe):
        Selector.parse(text)
    claims: dict[str, Any] = {CLAIM: {"publish": list(publish), "subscribe": list(subscribe)}}
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
