"""Every CommandService and QueryService RPC, against the real servers, with every kind of bad
token: each is refused with UNAUTHENTICATED or PERMISSION_DENIED and an ErrorInfo naming why, and
nothing is written. Health checks and reflection stay open; ORDERS_AUTH=off is loud."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf.message import Message

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import events_pb2
from orders.v1 import query_service_pb2 as query_pb
from server.platform.process import free_port
from tests.e2e.client import BadRequest, ErrorInfo, commands, detail, eur, new_id, place_request, register, status_of
from tests.harness import GRPCURL, Stack, issuer, scalar, serving, token, wait_until

pytestmark = pytest.mark.e2e

COMMANDS = cmd_pb.DESCRIPTOR.services_by_name["CommandService"]
QUERIES = query_pb.DESCRIPTOR.services_by_name["QueryService"]
RPCS = [(service, method) for service in (COMMANDS, QUERIES) for method in service.methods]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer().issuer, "aud": issuer().audience, "sub": "mallory", "tenant_id": "default",
              "scope": "orders.read orders.write orders.admin", "iat": now, "nbf": now, "exp": now + 600, **changes}
    return {k: v for k, v in claims.items() if v is not None}


def _hs256_with_public_key() -> str:
    """The classic confusion attack: an HS256 token whose HMAC secret is the RSA public key."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer().kid}).encode())
    body = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(issuer().public_key_pem(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _signed_by_another_key() -> str:
    """Our kid, another key's signature."""
    return jwt.encode(_claims(), _other_key(), algorithm="RS256", headers={"kid": issuer().kid})


# name -> (authorization metadata value, or None for none; expected code; ErrorInfo reason)
BAD_TOKENS: dict[str, tuple[Callable[[], str | None], grpc.StatusCode, str]] = {
    "missing": (lambda: None, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    "not a bearer": (lambda: f"Basic {token()}", grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED"),
    "malformed": (lambda: "Bearer not.a-jwt", grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED"),
    "expired": (lambda: "Bearer " + issuer().mint("default", exp=int(time.time()) - 3600, iat=int(time.time()) - 7200,
                                                  nbf=int(time.time()) - 7200),
                grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED"),
    "not yet valid": (lambda: "Bearer " + issuer().mint("default", nbf=int(time.time()) + 3600),
                      grpc.StatusCode.UNAUTHENTICATED, "TOKEN_NOT_YET_VALID"),
    "wrong issuer": (lambda: "Bearer " + issuer().mint("default", iss="https://elsewhere.example"),
                     grpc.StatusCode.UNAUTHENTICATED, "TOKEN_WRONG_ISSUER"),
    "wrong audience": (lambda: "Bearer " + issuer().mint("default", aud="another-service"),
                       grpc.StatusCode.UNAUTHENTICATED, "TOKEN_WRONG_AUDIENCE"),
    "bad signature": (lambda: "Bearer " + _signed_by_another_key(), grpc.StatusCode.UNAUTHENTICATED,
                      "TOKEN_BAD_SIGNATURE"),
    "alg none": (lambda: "Bearer " + jwt.encode(_claims(), "", algorithm="none", headers={"kid": issuer().kid}),
                 grpc.StatusCode.UNAUTHENTICATED, "TOKEN_ALGORITHM_REFUSED"),
    "HS256 with the public key": (lambda: "Bearer " + _hs256_with_public_key(), grpc.StatusCode.UNAUTHENTICATED,
                                  "TOKEN_ALGORITHM_REFUSED"),
    "unknown kid": (lambda: "Bearer " + jwt.encode(_claims(), _other_key(), algorithm="RS256",
                                                   headers={"kid": "retired-key"}),
                    grpc.StatusCode.UNAUTHENTICATED, "TOKEN_UNKNOWN_KEY"),
    "no tenant claim": (lambda: "Bearer " + issuer().mint(None), grpc.StatusCode.UNAUTHENTICATED,
                        "TOKEN_TENANT_MISSING"),
    "no sub claim": (lambda: "Bearer " + issuer().mint("default", sub=None), grpc.StatusCode.UNAUTHENTICATED,
                     "TOKEN_CLAIM_MISSING"),
    "no scope": (lambda: "Bearer " + issuer().mint("default", scopes=()), grpc.StatusCode.PERMISSION_DENIED,
                 "SCOPE_MISSING"),
}


def valid_request(method: Any, customer_id: str) -> Message:
    """A request each RPC would carry out for a caller it admits (the control case proves it)."""
    order_id = new_id("o")
    requests: dict[str, Message] = {
        "RegisterCustomer": cmd_pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=new_id("c"),
                                                           display_name="Eve", email="eve@example.com"),
        "ReserveCredit": cmd_pb.ReserveCreditRequest(request_id=new_id("r"), customer_id=customer_id,
                                                     amount=eur(1), order_id=order_id),
        # An unknown customer: the control case answers NOT_FOUND, and the module's customer stays.
        "ForgetCustomer": cmd_pb.ForgetCustomerRequest(request_id=new_id("r"), customer_id=new_id("c")),
        "ReleaseCredit": cmd_pb.ReleaseCreditRequest(request_id=new_id("r"), customer_id=customer_id,
                                                     amount=eur(1), order_id=order_id),
        "AddStock": cmd_pb.AddStockRequest(request_id=new_id("r"), product_id=new_id("p"), quantity=5),
        "ReserveStock": cmd_pb.ReserveStockRequest(request_id=new_id("r"), product_id=new_id("p"), quantity=1,
                                                   order_id=order_id),
        "ReleaseStock": cmd_pb.ReleaseStockRequest(request_id=new_id("r"), product_id=new_id("p"), quantity=1,
                                                   order_id=order_id),
        "PlaceOrder": place_request(order_id, customer_id),
        "ConfirmOrder": cmd_pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=order_id),
        "ShipOrder": cmd_pb.ShipOrderRequest(request_id=new_id("r"), order_id=order_id),
        "CancelOrder": cmd_pb.CancelOrderRequest(request_id=new_id("r"), order_id=order_id),
        "GetOrderSummary": query_pb.GetOrderSummaryRequest(order_id=order_id),
        "ListOrders": query_pb.ListOrdersRequest(),
        "GetCustomerOrders": query_pb.GetCustomerOrdersRequest(customer_id=customer_id),
        "GetProductSales": query_pb.GetProductSalesRequest(),
        "GetCustomer": query_pb.GetCustomerRequest(customer_id=customer_id),
        "GetProduct": query_pb.GetProductRequest(product_id=new_id("p")),
        "WatchOrders": query_pb.WatchOrdersRequest(customer_id=customer_id),
    }
    return requests[method.name]


def call(stack: Stack, service: Any, method: Any, request: Message, metadata: tuple[tuple[str, str], ...]) -> Any:
    """The RPC's first response (a stream's first message), or the grpc.RpcError it ended with."""
    addr = stack.command_addr if service is COMMANDS else stack.query_addr
    path = f"/{service.full_name}/{method.name}"
    with grpc.insecure_channel(addr) as channel:
        try:
            if method.server_streaming:
                stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString)(
                    request, timeout=10, metadata=metadata)
                first = next(stream)
                stream.cancel()
                return first
            return channel.unary_unary(path, request_serializer=type(request).SerializeToString)(
                request, timeout=10, metadata=metadata)
        except grpc.RpcError as error:
            return error


def writes(db: psycopg.Connection[Any]) -> tuple[int, int]:
    return scalar(db, "SELECT count(*) FROM events"), scalar(db, "SELECT count(*) FROM idempotency")


@pytest.fixture(scope="module")
def customer(stack: Stack) -> str:
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    return customer_id


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_every_rpc_refuses_a_bad_token_with_its_reason_and_writes_nothing(
    stack: Stack, db: psycopg.Connection[Any], customer: str, case: str
) -> None:
    make, code, reason = BAD_TOKENS[case]
    authorization = make()
    metadata = (("authorization", authorization),) if authorization is not None else ()
    before = writes(db)

    outcomes = {method.name: call(stack, service, method, valid_request(method, customer), metadata)
                for service, method in RPCS}

    for name, outcome in outcomes.items():
        assert isinstance(outcome, grpc.RpcError), f"{name} answered {outcome!r}"
        assert outcome.code() == code, f"{name}: {outcome.code()} {outcome.details()}"
        assert detail(status_of(outcome), ErrorInfo).reason == reason, name
        if authorization is not None and " " in authorization:
            assert authorization.split(" ", 1)[1] not in (outcome.details() or ""), "the token is echoed"
    assert writes(db) == before


def test_the_same_requests_with_a_good_token_are_carried_out(stack: Stack, db: psycopg.Connection[Any],
                                                             customer: str) -> None:
    """The control case: what the bad tokens were refused would have been done."""
    before = writes(db)
    metadata = (("authorization", f"Bearer {token()}"),)

    outcomes = {method.name: call(stack, service, method, valid_request(method, customer), metadata)
                for service, method in RPCS}

    carried_out = [name for name, outcome in outcomes.items() if not isinstance(outcome, grpc.RpcError)]
    assert {"RegisterCustomer", "AddStock", "PlaceOrder", "ListOrders", "GetProductSales",
            "GetCustomerOrders", "WatchOrders"} <= set(carried_out)
    refused = {name: outcome.code() for name, outcome in outcomes.items() if isinstance(outcome, grpc.RpcError)}
    assert grpc.StatusCode.UNAUTHENTICATED not in refused.values()
    assert grpc.StatusCode.PERMISSION_DENIED not in refused.values()
    assert writes(db)[0] >= before[0] + 3  # RegisterCustomer, AddStock, PlaceOrder at least


@pytest.mark.parametrize(("scope", "service"), [("orders.read", COMMANDS), ("orders.write", QUERIES),
                                                ("orders.admin", COMMANDS), ("orders.admin", QUERIES)])
def test_a_token_without_the_rpcs_scope_is_permission_denied_naming_the_scope(
    stack: Stack, db: psycopg.Connection[Any], customer: str, scope: str, service: Any
) -> None:
    metadata = (("authorization", "Bearer " + issuer().mint("default", [scope])),)
    before = writes(db)

    for method in service.methods:
        needed = "orders.read" if service is QUERIES else "orders.admin" if method.name == "ForgetCustomer" else "orders.write"
        if needed == scope:
            continue  # ForgetCustomer is the one RPC orders.admin grants
        outcome = call(stack, service, method, valid_request(method, customer), metadata)
        assert isinstance(outcome, grpc.RpcError) and outcome.code() == grpc.StatusCode.PERMISSION_DENIED, method.name
        info = detail(status_of(outcome), ErrorInfo)
        assert (info.reason, info.metadata["required_scope"]) == ("SCOPE_MISSING", needed)
    assert writes(db) == before


def test_an_x_tenant_id_header_naming_another_tenant_is_permission_denied(
    stack: Stack, db: psycopg.Connection[Any], customer: str
) -> None:
    metadata = (("authorization", f"Bearer {token('default')}"), ("x-tenant-id", "someone-else"))
    before = writes(db)

    for service, method in RPCS:
        outcome = call(stack, service, method, valid_request(method, customer), metadata)
        assert isinstance(outcome, grpc.RpcError) and outcome.code() == grpc.StatusCode.PERMISSION_DENIED, method.name
        assert detail(status_of(outcome), ErrorInfo).reason == "TENANT_MISMATCH"
    assert writes(db) == before


def test_a_service_token_with_any_tenant_acts_for_the_tenant_its_header_names(
    stack: Stack, db: psycopg.Connection[Any]
) -> None:
    service = "Bearer " + issuer().mint("default", ["orders.write", "orders.any_tenant"], subject="svc-saga")
    customer_id = new_id("c")
    request = cmd_pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id, display_name="Ann",
                                             email="ann@example.com")
    register_customer = COMMANDS.methods_by_name["RegisterCustomer"]

    outcome = call(stack, COMMANDS, register_customer, request, (("authorization", service), ("x-tenant-id", "acme")))

    assert not isinstance(outcome, grpc.RpcError), outcome
    assert scalar(db, "SELECT tenant_id FROM customers WHERE customer_id = %s", customer_id) == "acme"
    # The scope adds no other right: a read still needs orders.read.
    get_order = QUERIES.methods_by_name["GetCustomer"]
    refused = call(stack, QUERIES, get_order, valid_request(get_order, customer_id),
                   (("authorization", service), ("x-tenant-id", "acme")))
    assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.PERMISSION_DENIED
    # And a tenant it names must still be a valid tenant id.
    invalid = call(stack, COMMANDS, register_customer, request, (("authorization", service), ("x-tenant-id", "no such")))
    assert isinstance(invalid, grpc.RpcError) and invalid.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_actor_of_every_event_is_the_tokens_subject(stack: Stack, db: psycopg.Connection[Any]) -> None:
    customer_id = new_id("c")
    metadata = (("authorization", "Bearer " + issuer().mint("default", subject="svc-checkout")),)
    request = cmd_pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id, display_name="Ann",
                                             email="ann@example.com")
    assert not isinstance(call(stack, COMMANDS, COMMANDS.methods_by_name["RegisterCustomer"], request, metadata),
                          grpc.RpcError)

    payload = scalar(db, "SELECT payload FROM events WHERE aggregate_id = %s", customer_id)
    envelope = events_pb2.Envelope.FromString(payload)
    assert envelope.actor == "svc-checkout"
    # Which request had the effect, and (no saga involved) what caused it: the same request.
    assert envelope.request_id == envelope.causation_id == request.request_id


def test_health_and_reflection_answer_without_a_token(stack: Stack) -> None:
    for addr in (stack.command_addr, stack.query_addr):
        assert serving(addr)
        listed = subprocess.run([GRPCURL, "-plaintext", "-max-time", "10", addr, "list"],
                                capture_output=True, text=True, check=True).stdout.split()
        assert "grpc.health.v1.Health" in listed


def test_no_token_reaches_the_servers_logs(stack: Stack) -> None:
    good = token()
    for name in ("command-server", "query-server"):
        assert good not in stack.log(name)
        assert good.split(".")[2] not in stack.log(name)  # not even its signature


@pytest.fixture(scope="module")
def open_stack(database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A command server and a query server with ORDERS_AUTH=off and reflection off."""
    running = Stack(database_url, nats_url, tmp_path_factory.mktemp("open-logs"),
                    extra_env={"ORDERS_AUTH": "off", "ORDERS_REFLECTION": "off"})
    running.start("command-server")
    running.start("query-server")
    wait_until(lambda: running.alive() and serving(running.command_addr) and serving(running.query_addr),
               what="servers without authentication SERVING")
    yield running
    running.stop_all()


def test_with_auth_off_the_header_names_the_tenant_and_the_servers_say_so_loudly(
    open_stack: Stack, db: psycopg.Connection[Any]
) -> None:
    customer_id = new_id("c")
    request = cmd_pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=customer_id, display_name="Al",
                                             email="al@example.com")

    reply = call(open_stack, COMMANDS, COMMANDS.methods_by_name["RegisterCustomer"], request,
                 (("x-tenant-id", "lab"),))

    assert not isinstance(reply, grpc.RpcError), reply
    assert scalar(db, "SELECT tenant_id FROM customers WHERE customer_id = %s", customer_id) == "lab"
    for name in ("command-server", "query-server"):
        assert "AUTHENTICATION IS OFF" in open_stack.log(name)


def test_reflection_off_hides_the_services_but_not_health(open_stack: Stack) -> None:
    listed = subprocess.run([GRPCURL, "-plaintext", "-max-time", "10", open_stack.command_addr, "list"],
                            capture_output=True, text=True)

    assert listed.returncode != 0 and "reflection" in listed.stderr.lower()
    assert serving(open_stack.command_addr)


def test_a_server_with_auth_on_and_no_jwks_exits_naming_the_settings(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack(database_url, nats_url, tmp_path, command_addr=f"127.0.0.1:{free_port()}")
    env = {k: v for k, v in stack.env().items() if not k.startswith(("ORDERS_JWKS", "ORDERS_JWT_"))}

    done = subprocess.run([sys.executable, "-m", "server", "command-server"], env=env, capture_output=True,
                          text=True, timeout=60)

    assert done.returncode == 2
    for name in ("ORDERS_JWKS", "ORDERS_JWT_ISSUER", "ORDERS_JWT_AUDIENCE", "ORDERS_AUTH=off"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr


def test_with_auth_off_a_malformed_tenant_header_is_invalid_argument_naming_it(open_stack: Stack) -> None:
    for service, method in RPCS:
        outcome = call(open_stack, service, method, valid_request(method, "c-1"), (("x-tenant-id", "a/b"),))
        assert isinstance(outcome, grpc.RpcError) and outcome.code() == grpc.StatusCode.INVALID_ARGUMENT, method.name
        violations = detail(status_of(outcome), BadRequest).field_violations
        assert [v.field for v in violations] == ["x-tenant-id"]
