"""Token verification (server.platform.auth) against JWKS files: which key verifies which
algorithm, the claims this service requires, the cache, and key rotation."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from orders.v1 import command_service_pb2, query_service_pb2
from server.command import service as command_service
from server.config import ConfigError, Settings
from server.platform import auth, serving

ISSUER, AUDIENCE = "https://issuer.example", "orders"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-a", "tenant_id": "acme", "scope": "orders.read",
            "iat": now, "exp": now + 60, **changes}
    return {k: v for k, v in base.items() if v is not None}


def write_jwks(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(entries)}))
    return path


def rsa_entry(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    return {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, **extra}


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def verifier(jwks: Path, leeway: float = 0) -> auth.Verifier:
    keys = auth.KeySet(str(jwks))
    keys.load()
    return auth.Verifier(keys, ISSUER, AUDIENCE, leeway)


def principal(v: auth.Verifier, token: str) -> auth.Principal:
    return asyncio.run(v.principal(f"Bearer {token}"))


def reason(v: auth.Verifier, authorization: str | None) -> str:
    with pytest.raises(auth.UnauthenticatedError) as refused:
        asyncio.run(v.principal(authorization))
    return refused.value.reason


def test_a_good_token_names_its_subject_tenant_and_scopes(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(write_jwks(tmp_path / "jwks.json", rsa_entry(rsa_key, "k1")))
    token = jwt.encode(claims(scope="orders.read orders.write"), rsa_key, algorithm="PS256", headers={"kid": "k1"})

    caller = principal(v, token)

    assert (caller.subject, caller.tenant_id, caller.scopes) == ("svc-a", "acme", frozenset({"orders.read", "orders.write"}))


def test_a_key_that_names_its_algorithm_verifies_only_that_one(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(write_jwks(tmp_path / "jwks.json", rsa_entry(rsa_key, "k1", alg="RS256")))
    token = jwt.encode(claims(), rsa_key, algorithm="PS256", headers={"kid": "k1"})

    assert reason(v, f"Bearer {token}") == "TOKEN_ALGORITHM_REFUSED"


def test_an_ec_key_refuses_an_rsa_algorithm_and_accepts_its_own(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    entry = {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e1"}
    v = verifier(write_jwks(tmp_path / "jwks.json", entry))

    assert principal(v, jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "e1"})).tenant_id == "acme"
    assert reason(v, "Bearer " + jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "e1"})) == \
        "TOKEN_ALGORITHM_REFUSED"


def test_a_symmetric_key_set_is_the_only_one_that_verifies_hs256(tmp_path: Path) -> None:
    secret = b"s" * 32
    entry = {"kty": "oct", "k": jwt.utils.base64url_encode(secret).decode(), "kid": "h1"}
    v = verifier(write_jwks(tmp_path / "jwks.json", entry))

    assert principal(v, jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "h1"})).subject == "svc-a"


@pytest.mark.parametrize(("changes", "expected"), [
    ({"exp": -120}, "TOKEN_EXPIRED"),  # seconds from now
    ({"nbf": 120}, "TOKEN_NOT_YET_VALID"),
    ({"iss": "https://other.example"}, "TOKEN_WRONG_ISSUER"),
    ({"aud": "billing"}, "TOKEN_WRONG_AUDIENCE"),
    ({"exp": None}, "TOKEN_CLAIM_MISSING"),
    ({"sub": None}, "TOKEN_CLAIM_MISSING"),
    ({"tenant_id": None}, "TOKEN_TENANT_MISSING"),
    ({"tenant_id": "a/b"}, "TOKEN_TENANT_INVALID"),
])
def test_claims_this_service_requires(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, changes: dict[str, Any],
                                      expected: str) -> None:
    v = verifier(write_jwks(tmp_path / "jwks.json", rsa_entry(rsa_key, "k1")))
    changes = {name: int(time.time()) + value if name in ("exp", "nbf") and value is not None else value
               for name, value in changes.items()}

    assert reason(v, "Bearer " + jwt.encode(claims(**changes), rsa_key, algorithm="RS256", headers={"kid": "k1"})) \
        == expected


def test_the_leeway_forgives_a_clock_a_little_behind(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(write_jwks(tmp_path / "jwks.json", rsa_entry(rsa_key, "k1")), leeway=30)
    token = jwt.encode(claims(exp=int(time.time()) - 5), rsa_key, algorithm="RS256", headers={"kid": "k1"})

    assert principal(v, token).tenant_id == "acme"


@pytest.mark.parametrize(("authorization", "expected"), [
    (None, "TOKEN_MISSING"), ("", "TOKEN_MISSING"), ("Bearer", "TOKEN_MALFORMED"), ("Basic abc", "TOKEN_MALFORMED"),
    ("Bearer " + "a" * 9000, "TOKEN_MALFORMED"), ("Bearer a.b.c", "TOKEN_MALFORMED"),
])
def test_an_authorization_that_is_no_bearer_jwt(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, authorization: str | None,
                                                expected: str) -> None:
    v = verifier(write_jwks(tmp_path / "jwks.json", rsa_entry(rsa_key, "k1")))

    assert reason(v, authorization) == expected


def test_a_verified_token_is_not_verified_again(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(write_jwks(tmp_path / "jwks.json", rsa_entry(rsa_key, "k1")))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})

    assert principal(v, token) is principal(v, token)


def test_a_new_key_published_beside_the_old_is_found_when_a_token_names_it(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", rsa_entry(rsa_key, "k1"))
    v = verifier(jwks)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_jwks(jwks, rsa_entry(rsa_key, "k1"), rsa_entry(new_key, "k2"))
    token = jwt.encode(claims(), new_key, algorithm="RS256", headers={"kid": "k2"})
    assert reason(v, f"Bearer {token}") == "TOKEN_UNKNOWN_KEY"  # read moments ago: not yet again

    monkeypatch.setattr(auth, "REFRESH_SECONDS", 0.0)

    assert principal(v, token).subject == "svc-a"


def test_a_key_set_without_a_usable_key_is_refused_at_start(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    no_kid = {k: v for k, v in rsa_entry(rsa_key, "k1").items() if k != "kid"}
    settings = Settings.from_env({"ORDERS_JWKS": str(write_jwks(tmp_path / "jwks.json", no_kid)),
                                  "ORDERS_JWT_ISSUER": ISSUER, "ORDERS_JWT_AUDIENCE": AUDIENCE})

    with pytest.raises(ConfigError, match="no usable signing key"):
        auth.verifier_from(settings)


def test_authentication_needs_a_key_set_an_issuer_and_an_audience_unless_it_is_off() -> None:
    with pytest.raises(ConfigError) as missing:
        auth.verifier_from(Settings.from_env({}))

    assert [p.split(" ")[0] for p in missing.value.problems[:3]] == [
        "ORDERS_JWKS", "ORDERS_JWT_ISSUER", "ORDERS_JWT_AUDIENCE"]
    assert auth.verifier_from(Settings.from_env({"ORDERS_AUTH": "off"})) is None


@pytest.mark.parametrize(("name", "value"), [("ORDERS_AUTH", "maybe"), ("ORDERS_REFLECTION", "yes"),
                                             ("ORDERS_JWT_LEEWAY_SECONDS", "3600")])
def test_malformed_auth_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_every_rpc_needs_a_scope() -> None:
    commands = command_service.required_scopes()
    queries = serving.required_scopes(query_service_pb2.DESCRIPTOR.services_by_name["QueryService"], auth.READ)

    assert len(commands) == 11 == len(command_service_pb2.DESCRIPTOR.services_by_name["CommandService"].methods)
    assert commands.pop("/orders.v1.CommandService/ForgetCustomer") == auth.ADMIN
    assert set(commands.values()) == {auth.WRITE}
    assert len(queries) == 7 and set(queries.values()) == {auth.READ}
    assert queries["/orders.v1.QueryService/GetCustomer"] == queries["/orders.v1.QueryService/GetProduct"] == auth.READ
    assert queries["/orders.v1.QueryService/WatchOrders"] == auth.READ


def test_a_key_set_is_read_from_an_http_url(rsa_key: rsa.RSAPrivateKey) -> None:
    document = json.dumps({"keys": [rsa_entry(rsa_key, "k1")]}).encode()

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        keys = auth.KeySet(f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json")
        keys.load()
        v = auth.Verifier(keys, ISSUER, AUDIENCE, 0)

        assert principal(v, jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})).tenant_id == "acme"
    finally:
        server.shutdown()


def test_an_unreachable_key_set_url_stops_the_server_naming_it() -> None:
    settings = Settings.from_env({"ORDERS_JWKS": "http://127.0.0.1:9/jwks.json", "ORDERS_JWT_ISSUER": ISSUER,
                                  "ORDERS_JWT_AUDIENCE": AUDIENCE})

    with pytest.raises(ConfigError, match="cannot read the JWKS at http://127.0.0.1:9/jwks.json"):
        auth.verifier_from(settings)
