"""Who is calling: a bearer JWT verified against a JWKS, the scope each RPC needs, and the tenant
and actor a verified token names.

Signatures and claims are PyJWT's work. What is ours: which algorithms a key may verify (only
its own family: an RSA key never checks an HS256 token, nothing checks `alg: none`), the claims
this service requires (`exp`, `sub`, `tenant_id`, `iss`, `aud`), and a cache of tokens already
verified, so a client that sends the same token on every call pays for its signature once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from server.config import ConfigError, Settings
from server.platform import tenancy
from server.platform.scopes import ADMIN, ANY_TENANT, READ, SCOPES, WRITE

__all__ = ["ADMIN", "ANY_TENANT", "READ", "SCOPES", "WRITE", "KeySet", "PermissionDeniedError", "Principal", "UnauthenticatedError",
           "Verifier", "verifier_from"]

log = logging.getLogger(__name__)


# What a key of each JWK type may verify, unless the key names its one algorithm ("alg").
_FAMILIES = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
    "oct": ("HS256", "HS384", "HS512"),
}
# A key set that names a key the caller's token does not is re-read at most this often.
REFRESH_SECONDS = 30.0
# Verified tokens kept, and for how long at most (a key removed from the set stops working then).
CACHE_SIZE = 10_000
CACHE_SECONDS = 300.0
MAX_TOKEN_BYTES = 8192


class UnauthenticatedError(Exception):
    """No usable credentials: the caller does not get to say who it is. `reason` goes to ErrorInfo."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDeniedError(Exception):
    """A known caller asking for what its token does not allow."""

    def __init__(self, reason: str, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata


@dataclass(frozen=True)
class Principal:
    """A verified caller: its subject (the actor recorded on events), tenant and scopes."""

    subject: str
    tenant_id: str
    scopes: frozenset[str]
    expires_at: float  # seconds since the epoch

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDeniedError("SCOPE_MISSING", f"the token lacks the scope {scope} this call needs",
                                        required_scope=scope)


@dataclass(frozen=True)
class _Key:
    key: Any
    algorithms: tuple[str, ...]


def _keys_of(document: Mapping[str, Any], source: str) -> dict[str, _Key]:
    """The usable keys of a JWKS document by kid; a key without a kid or of an unknown type is
    left out with a warning, a document that is not a JWKS is an error."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError(f"{source} is not a JWKS document (no \"keys\" list)")
    keys: dict[str, _Key] = {}
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        family = _FAMILIES.get(entry.get("kty", "")) if isinstance(entry, dict) else None
        if not kid or family is None or entry.get("use", "sig") != "sig":
            log.warning("a JWKS entry is not a signing key with a kid; ignored", extra={"jwks": source, "kid": kid})
            continue
        alg = entry.get("alg")
        if alg is not None and alg not in family:
            log.warning("a JWKS entry names an algorithm outside its key type; ignored",
                        extra={"jwks": source, "kid": kid, "alg": alg})
            continue
        try:
            key = jwt.PyJWK(entry, alg).key
        except jwt.PyJWTError as exc:
            log.warning("a JWKS entry is not a usable key; ignored", extra={"jwks": source, "kid": kid, "error": str(exc)})
            continue
        keys[kid] = _Key(key, (alg,) if alg else family)
    return keys


class KeySet:
    """The JWKS at a file path or an http(s) URL, read at start and again (at most every
    REFRESH_SECONDS, off the event loop) when a token names a kid it does not hold: rotating a key
    is publishing the new one beside the old."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._keys: dict[str, _Key] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Reads the set now; raises ValueError with a message naming the source when it cannot."""
        try:
            if self.source.startswith(("http://", "https://")):
                with urllib.request.urlopen(self.source, timeout=5) as reply:  # noqa: S310 (the scheme is checked)
                    document = json.load(reply)
            else:
                document = json.loads(Path(self.source).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the JWKS at {self.source}: {exc}") from None
        self._keys = _keys_of(document, self.source)
        self._read_at = time.monotonic()
        if not self._keys:
            raise ValueError(f"the JWKS at {self.source} holds no usable signing key with a kid")

    async def key(self, kid: str) -> _Key | None:
        found = self._keys.get(kid)
        if found is not None or time.monotonic() - self._read_at < REFRESH_SECONDS:
            return found
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._read_at >= REFRESH_SECONDS:
                try:
                    await asyncio.to_thread(self.load)
                except ValueError as exc:
                    self._read_at = time.monotonic()  # keep the old keys; try again later
                    log.warning("cannot refresh the JWKS; keeping the keys it had", extra={"error": str(exc)})
        return self._keys.get(kid)


# PyJWT's refusals, as the reasons callers see in ErrorInfo; the first match wins (subclasses first).
_REFUSALS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "TOKEN_EXPIRED", "the bearer token has expired"),
    (jwt.ImmatureSignatureError, "TOKEN_NOT_YET_VALID", "the bearer token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidIssuerError, "TOKEN_WRONG_ISSUER", "the bearer token was issued by an issuer this service does not trust"),
    (jwt.InvalidAudienceError, "TOKEN_WRONG_AUDIENCE", "the bearer token is meant for another audience"),
    (jwt.InvalidSignatureError, "TOKEN_BAD_SIGNATURE", "the bearer token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "TOKEN_ALGORITHM_REFUSED", "the bearer token's algorithm is not allowed for its key"),
    (jwt.MissingRequiredClaimError, "TOKEN_CLAIM_MISSING", "the bearer token lacks a required claim"),
    (jwt.DecodeError, "TOKEN_MALFORMED", "the bearer token is not a well-formed JWT"),
    (jwt.InvalidTokenError, "TOKEN_INVALID", "the bearer token is not valid"),
)


class Verifier:
    """Turns an `authorization` header into a Principal or an UnauthenticatedError."""

    def __init__(self, keys: KeySet, issuer: str, audience: str, leeway_seconds: float) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def principal(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            principal, keep_until = cached
            if now <= keep_until:
                return principal
            del self._verified[token]
        principal = await self._verify(token)
        if len(self._verified) >= CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (principal, min(principal.expires_at + self.leeway, now + CACHE_SECONDS))
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UnauthenticatedError("TOKEN_MALFORMED", "the bearer token is not a well-formed JWT") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnauthenticatedError("TOKEN_UNKNOWN_KEY", "the bearer token names no key (kid)")
        key = await self.keys.key(kid)
        if key is None:
            raise UnauthenticatedError("TOKEN_UNKNOWN_KEY", "the bearer token names a key (kid) this service does not know")
        if header.get("alg") not in key.algorithms:
            raise UnauthenticatedError("TOKEN_ALGORITHM_REFUSED", "the bearer token's algorithm is not allowed for its key")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=list(key.algorithms), audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            reason, message = next((r, m) for kind, r, m in _REFUSALS if isinstance(exc, kind))
            raise UnauthenticatedError(reason, message) from None
        return _principal_of(claims)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise UnauthenticatedError("TOKEN_MISSING", "this call needs a bearer token: metadata authorization: Bearer <JWT>")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES:
        raise UnauthenticatedError("TOKEN_MALFORMED", "the authorization metadata must be: Bearer <JWT>")
    return token


def _principal_of(claims: Mapping[str, Any]) -> Principal:
    tenant_id = claims.get("tenant_id")
    if not isinstance(tenant_id, str) or not tenant_id:
        raise UnauthenticatedError("TOKEN_TENANT_MISSING", "the bearer token has no tenant_id claim")
    if not tenancy.is_valid(tenant_id):
        raise UnauthenticatedError("TOKEN_TENANT_INVALID", "the bearer token's tenant_id is not a valid tenant id")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 256:
        raise UnauthenticatedError("TOKEN_CLAIM_MISSING", "the bearer token's sub claim is empty or too long")
    scope = claims.get("scope", "")
    scopes = frozenset(scope.split() if isinstance(scope, str) else ())
    return Principal(subject, tenant_id, scopes, float(claims["exp"]))


def verifier_from(settings: Settings) -> Verifier | None:
    """The servers' verifier, its key set read now; None when ORDERS_AUTH=off."""
    if not settings.auth:
        return None
    source, issuer, audience = settings.require_auth()
    keys = KeySet(source)
    try:
        keys.load()
    except ValueError as exc:
        raise ConfigError([f"ORDERS_JWKS: {exc}"]) from None
    return Verifier(keys, issuer, audience, settings.jwt_leeway_seconds)
