"""TLS and mutual TLS on both gRPC servers, against the real server processes: who completes
the handshake and who does not, with the Python client, a raw stub and grpcurl. Each
certificate is made in the test by a throwaway CA."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import command_service_pb2_grpc as cmd_grpc
from orders.v1 import types_pb2
from orders_client import OrdersClient
from tests.certs import Authority, Issued, expired_window
from tests.e2e.client import eur, new_id, place_request, with_token
from tests.harness import GRPCURL, Stack, token, wait_until

pytestmark = pytest.mark.e2e
# Both stacks check tokens as usual: TLS and bearer tokens apply together.
TENANT = (("x-tenant-id", "tls"),)
# Each channel makes its own connection: a handshake refused once is not remembered by another.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


@dataclass(frozen=True)
class Certs:
    ca: Authority
    server: Issued
    client: Issued
    foreign_ca: Authority
    foreign_client: Issued
    expired_client: Issued

    def trusting(self, ca: Authority | None = None, client: Issued | None = None) -> grpc.ChannelCredentials:
        """A client that trusts `ca` (default: ours) and presents `client`, if given."""
        pair = (client.key.read_bytes(), client.cert.read_bytes()) if client else (None, None)
        return grpc.ssl_channel_credentials((ca or self.ca).cert.read_bytes(), *pair)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca, foreign_ca = Authority.create(folder, "orders-test-ca"), Authority.create(folder, "foreign-ca")
    not_before, not_after = expired_window()
    return Certs(
        ca=ca,
        server=ca.issue(folder, "server", server=True),
        client=ca.issue(folder, "client"),
        foreign_ca=foreign_ca,
        foreign_client=foreign_ca.issue(folder, "foreign-client"),
        expired_client=ca.issue(folder, "expired-client", not_before=not_before, not_after=not_after),
    )


def _servers(stack: Stack, roles: tuple[str, ...]) -> Stack:
    for role in roles:
        stack.start(role)
    for addr in (stack.command_addr, stack.query_addr):
        wait_until(lambda: stack.alive() and health(addr, stack.credentials) == health_pb2.HealthCheckResponse.SERVING,
                   what=f"{addr} SERVING over TLS")
    return stack


@pytest.fixture(scope="module")
def tls(certs: Certs, database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The two servers with TLS, no client certificate asked for; calls need a token, as usual."""
    env = dict(ORDERS_TLS_CERT=str(certs.server.cert), ORDERS_TLS_KEY=str(certs.server.key))
    stack = Stack(database_url, nats_url, tmp_path_factory.mktemp("tls-logs"), extra_env=env,
                  credentials=certs.trusting())
    yield _servers(stack, ("command-server", "query-server"))
    stack.stop_all()


@pytest.fixture(scope="module")
def mtls(certs: Certs, database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack with mutual TLS: a client certificate signed by our CA is required."""
    env = dict(ORDERS_TLS_CERT=str(certs.server.cert), ORDERS_TLS_KEY=str(certs.server.key),
               ORDERS_TLS_CLIENT_CA=str(certs.ca.cert))
    stack = Stack(database_url, nats_url, tmp_path_factory.mktemp("mtls-logs"), extra_env=env,
                  credentials=certs.trusting(client=certs.client))
    yield _servers(stack, ("command-server", "query-server", "relay", "projector"))
    stack.stop_all()


def health(addr: str, credentials: grpc.ChannelCredentials | None) -> int | grpc.StatusCode:
    """The health status, or the status code of a call that failed."""
    with (grpc.insecure_channel(addr, OWN_CONNECTION) if credentials is None
          else grpc.secure_channel(addr, credentials, OWN_CONNECTION)) as channel:
        try:
            return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)
        except grpc.RpcError as error:
            return error.code()


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, "-max-time", "10", *args], capture_output=True, text=True, timeout=60)


def test_under_tls_a_plaintext_client_is_refused(tls: Stack) -> None:
    for addr in (tls.command_addr, tls.query_addr):
        assert health(addr, None) == grpc.StatusCode.UNAVAILABLE


def test_under_tls_a_client_that_trusts_another_ca_is_refused(tls: Stack, certs: Certs) -> None:
    assert health(tls.command_addr, certs.trusting(certs.foreign_ca)) == grpc.StatusCode.UNAVAILABLE


def test_under_tls_a_client_trusting_the_ca_is_served_with_its_token(tls: Stack, certs: Certs) -> None:
    with grpc.secure_channel(tls.command_addr, certs.trusting(), OWN_CONNECTION) as channel:
        stub = cmd_grpc.CommandServiceStub(channel)
        customer_id = new_id("c")
        stub.RegisterCustomer(cmd_pb.RegisterCustomerRequest(
            request_id=new_id("r"), customer_id=customer_id, display_name="Ada", email="ada@example.com"),
            timeout=10, metadata=with_token(TENANT))

        placed: cmd_pb.PlaceOrderResponse = stub.PlaceOrder(place_request(new_id("o"), customer_id), timeout=10,
                                                            metadata=with_token(TENANT))

    assert placed.version == 1
    assert health(tls.query_addr, certs.trusting()) == health_pb2.HealthCheckResponse.SERVING


def test_under_tls_a_call_without_a_token_is_still_unauthenticated(tls: Stack, certs: Certs) -> None:
    with grpc.secure_channel(tls.command_addr, certs.trusting(), OWN_CONNECTION) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            cmd_grpc.CommandServiceStub(channel).PlaceOrder(place_request(new_id("o"), new_id("c")), timeout=10)

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("client", ["none", "foreign", "expired"])
def test_under_mutual_tls_a_client_without_a_valid_certificate_fails_the_handshake(
    mtls: Stack, certs: Certs, client: str,
) -> None:
    presented = {"none": None, "foreign": certs.foreign_client, "expired": certs.expired_client}[client]

    for addr in (mtls.command_addr, mtls.query_addr):
        assert health(addr, certs.trusting(client=presented)) == grpc.StatusCode.UNAVAILABLE
    # ... and the server is up: a client with a certificate is served
    assert health(mtls.command_addr, certs.trusting(client=certs.client)) == health_pb2.HealthCheckResponse.SERVING
    # gRPC's plain-text line per refused handshake stays out of the JSON logs.
    assert "Handshake failed" not in mtls.log("command-server") + mtls.log("query-server")


def test_under_mutual_tls_the_python_client_with_a_certificate_places_and_reads_an_order(
    mtls: Stack, certs: Certs,
) -> None:
    async def scenario() -> tuple[str, types_pb2.Money]:
        async with OrdersClient(mtls.command_addr, mtls.query_addr, token=token("tls"),
                                root_certificates=certs.ca.cert.read_bytes(),
                                certificate_chain=certs.client.cert.read_bytes(),
                                private_key=certs.client.key.read_bytes()) as client:
            customer_id, order_id = new_id("c"), new_id("o")
            await client.register_customer(customer_id, "Ada", "ada@example.com")
            line = types_pb2.OrderLine(product_id="p-1", quantity=4, unit_price=eur(2, 500_000_000))
            placed = await client.place_order(order_id, customer_id, [line])
            summary = await client.get_order_summary(order_id, placed.consistency_token)
            return summary.order_id, summary.total

    assert asyncio.run(scenario())[1] == eur(10)


def test_the_python_client_wants_both_halves_of_a_client_certificate(certs: Certs) -> None:
    with pytest.raises(ValueError, match="both certificate_chain and private_key"):
        OrdersClient("127.0.0.1:1", "127.0.0.1:2", certificate_chain=certs.client.cert.read_bytes())


def test_grpcurl_with_a_client_certificate_lists_checks_and_calls_and_without_one_fails(
    mtls: Stack, certs: Certs,
) -> None:
    trusted = ("-cacert", str(certs.ca.cert), "-cert", str(certs.client.cert), "-key", str(certs.client.key))

    listed = grpcurl(*trusted, mtls.query_addr, "list")
    checked = grpcurl(*trusted, mtls.command_addr, "grpc.health.v1.Health/Check")
    registered = grpcurl(*trusted, "-rpc-header", f"authorization: Bearer {token('tls')}", "-d",
                         f'{{"request_id":"{new_id("r")}","customer_id":"{new_id("c")}","display_name":"Ada",'
                         '"email":"ada@example.com"}', mtls.command_addr, "orders.v1.CommandService/RegisterCustomer")
    without_cert = grpcurl("-cacert", str(certs.ca.cert), mtls.command_addr, "grpc.health.v1.Health/Check")
    plaintext = grpcurl("-plaintext", mtls.command_addr, "grpc.health.v1.Health/Check")

    assert listed.returncode == 0 and "orders.v1.QueryService" in listed.stdout.split(), listed.stderr
    assert checked.returncode == 0 and '"SERVING"' in checked.stdout, checked.stderr
    assert registered.returncode == 0 and '"version": "1"' in registered.stdout, registered.stderr
    assert without_cert.returncode != 0 and "Failed to dial" in without_cert.stderr, without_cert.stderr
    assert plaintext.returncode != 0 and "SERVING" not in plaintext.stdout


def test_a_certificate_pinned_by_the_probes_of_orders_up_is_enough_to_trust_the_server(
    tls: Stack, certs: Certs,
) -> None:
    pinned = grpc.ssl_channel_credentials(certs.server.cert.read_bytes())

    assert health(tls.command_addr, pinned) == health_pb2.HealthCheckResponse.SERVING
