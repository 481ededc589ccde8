"""Opaque, tamper-safe tokens for paging and resuming: a JSON payload and an HMAC-SHA256 over it,
both base64url. The payload binds the token to its kind and to the request's filter, so a token
that was edited, forged or used with another filter is rejected as INVALID_ARGUMENT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from server.domain.errors import FieldViolation, InvalidArgumentError

FORMAT = 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:16]


def sign(key: bytes, kind: str, filter_: dict[str, Any], **position: Any) -> str:
    body = json.dumps({"v": FORMAT, "k": kind, "f": filter_, **position}, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(body)}.{_b64(_mac(key, body))}"


def verify(key: bytes, token: str, kind: str, filter_: dict[str, Any], field: str) -> dict[str, Any]:
    """The token's position fields, or InvalidArgumentError naming `field`."""

    def bad(why: str) -> InvalidArgumentError:
        return InvalidArgumentError([FieldViolation(field, why)])

    try:
        body_text, mac_text = token.split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
    except ValueError:
        raise bad("is not a token this service issued") from None
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise bad("is not a token this service issued (or was signed with another key)")
    payload = json.loads(body)
    if payload.get("v") != FORMAT or payload.get("k") != kind:
        raise bad("is not a token this service issued")
    if payload.get("f") != filter_:
        raise bad("was issued for another filter; use it only with the request that returned it")
    return {k: v for k, v in payload.items() if k not in ("v", "k", "f")}
