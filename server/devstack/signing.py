"""The dev token issuer of `orders up` and `orders token`: an RSA signing key kept under
ORDERS_DATA_DIR, the JWKS the servers verify with, and tokens signed with the key.

A stand-in for a real identity provider, for a laptop and for the tests; production points
ORDERS_JWKS, ORDERS_JWT_ISSUER and ORDERS_JWT_AUDIENCE at its own (docs/security.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from server.platform import personal
from server.platform.scopes import TENANT_SCOPES

ISSUER = "orders-dev"
AUDIENCE = "orders"
ALGORITHM = "RS256"
DEFAULT_TTL_SECONDS = 12 * 3600


def _kid(public_jwk: dict[str, Any]) -> str:
    """The key's RFC 7638 thumbprint: the same key always has the same kid."""
    members = {k: public_jwk[k] for k in ("e", "kty", "n")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# A service token's home tenant: it acts for others with orders.any_tenant and x-tenant-id.
SERVICE_TENANT = "default"
SERVICE_TTL_SECONDS = 30 * 86400  # re-minted by every `orders up`


class DevIssuer:
    """`directory`/signing-key.pem (mode 0600) and `directory`/jwks.json, made on first use."""

    def __init__(self, directory: Path, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.directory = directory
        self.issuer = issuer
        self.audience = audience
        self.key_path = directory / "signing-key.pem"
        self.jwks_path = directory / "jwks.json"
        self._private_key = self._load_or_create()
        public_jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self._private_key.public_key()))
        self.kid = _kid(public_jwk)
        jwks = json.dumps({"keys": [{**public_jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}]}, indent=2)
        if not self.jwks_path.exists() or self.jwks_path.read_text() != jwks:
            self.jwks_path.write_text(jwks)

    def _load_or_create(self) -> rsa.RSAPrivateKey:
        if self.key_path.exists():
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{self.key_path} is not an RSA private key")
            return key
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # Written where only its owner can read it, in one step: never a moment world-readable.
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        return key

    def env(self) -> dict[str, str]:
        """What the servers need to verify this issuer's tokens."""
        return {"ORDERS_JWKS": str(self.jwks_path), "ORDERS_JWT_ISSUER": self.issuer,
                "ORDERS_JWT_AUDIENCE": self.audience}

    def mint(self, tenant_id: str | None, scopes: Iterable[str] = TENANT_SCOPES, *, ttl_seconds: float = DEFAULT_TTL_SECONDS,
             subject: str = "dev", **claims: Any) -> str:
        """A token for `tenant_id` with `scopes`; `claims` add to or replace the standard ones
        (a claim given as None is left out)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": subject, "tenant_id": tenant_id,
            "scope": " ".join(scopes), "iat": now, "nbf": now, "exp": now + int(ttl_seconds),
            "jti": str(uuid.uuid4()), **claims,
        }
        payload = {name: value for name, value in payload.items() if value is not None}  # None drops a claim
        return jwt.encode(payload, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def service_token_file(self, name: str, scopes: Iterable[str], ttl_seconds: float = SERVICE_TTL_SECONDS) -> Path:
        """A fresh token for service `name` (its subject) in `directory`/`name`.token, mode 0600: the
        file a service reads its token from (the saga's ORDERS_SAGA_TOKEN_FILE)."""
        path = self.directory / f"{name}.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.mint(SERVICE_TENANT, scopes, ttl_seconds=ttl_seconds, subject=name) + "\n")
        return path

    def public_key_pem(self) -> bytes:
        return self._private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)


def dev_kek(data_dir: Path) -> str:
    """The dev key-encryption key (ORDERS_KEK's form) under `data_dir`, made on first use (0600).
    Losing it makes every customer's personal data unreadable, as forgetting them all would."""
    path = data_dir / "kek"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(personal.new_kek_text() + "\n")
    return path.read_text().strip()
