"""Opaque, tamper-safe tokens, signed with ORDERS_TOKEN_KEY (HMAC-SHA256, truncated to 128 bits),
both base64url: the query server's page and resume tokens, and the consistency tokens the command
server returns and the query server waits on (so both servers import this one module).

A page or resume token is a JSON payload bound to its kind and to the request's filter (the
tenant among it). A consistency token is short, as every command response carries one: the
aggregate and version in plain text, and a MAC that also covers the tenant, so it names no tenant
yet verifies for its own alone. A token edited, forged, used with another filter or by another
tenant is rejected as INVALID_ARGUMENT at once, naming the field."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
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


# --- consistency tokens ------------------------------------------------------------------------

CONSISTENCY_FIELD = "consistency_token"
MAX_VERSION = 2**63 - 1  # aggregate versions are bigint


@dataclass(frozen=True)
class ConsistencyToken:
    """A write the caller wants to read: aggregate and the version the command produced."""

    aggregate_type: str
    aggregate_id: str
    version: int


def _consistency_mac(key: bytes, tenant_id: str, body: bytes) -> bytes:
    # "c1" and NUL separators: never the input of a page token's MAC (a JSON object), and a
    # tenant id (letters, digits, - and _) cannot end early.
    return _mac(key, b"c1\0" + tenant_id.encode() + b"\0" + body)


def sign_consistency(key: bytes, tenant_id: str, token: ConsistencyToken) -> str:
    body = f"{token.aggregate_type}|{token.aggregate_id}|{token.version}".encode()
    return f"{_b64(body)}.{_b64(_consistency_mac(key, tenant_id, body))}"


def verify_consistency(key: bytes, tenant_id: str, text: str) -> ConsistencyToken:
    """The write a token names, or InvalidArgumentError on `consistency_token`. One answer for a
    token that is garbage, edited, signed with another key or another tenant's: it tells the
    caller nothing of other tenants' writes."""
    try:
        body_text, mac_text = text.split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
        if not hmac.compare_digest(mac, _consistency_mac(key, tenant_id, body)):
            raise ValueError("not signed for this tenant with this key")
        aggregate_type, aggregate_id, version = body.decode().split("|")
        if not (aggregate_type and aggregate_id and version.isdigit() and 1 <= int(version) <= MAX_VERSION):
            raise ValueError("not a write")
    except ValueError:  # base64's errors and a body that is not text among them
        raise InvalidArgumentError([FieldViolation(
            CONSISTENCY_FIELD, "is not a token a command returned to this tenant")]) from None
    return ConsistencyToken(aggregate_type, aggregate_id, int(version))
