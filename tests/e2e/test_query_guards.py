"""What the query server refuses at once or bounds: consistency tokens it did not sign for the
caller's tenant, waits past ORDERS_READ_WAIT_SECONDS, WatchOrders streams past their caps, and
statements past the call's deadline."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest

from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_grpc
from server.config import libpq_url
from tests.e2e.client import (
    BadRequest,
    ErrorInfo,
    as_tenant,
    channel,
    detail,
    new_id,
    place_for_a_new_customer,
    queries,
    status_of,
)
from tests.harness import Stack, wait_until

pytestmark = pytest.mark.e2e
READ_WAIT_SECONDS = 0.5
PER_CONNECTION, PER_TENANT = 2, 3


@pytest.fixture(scope="module")
def stack(database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(database_url, nats_url, tmp_path_factory.mktemp("logs"), extra_env={
        "ORDERS_READ_WAIT_SECONDS": str(READ_WAIT_SECONDS),
        "ORDERS_WATCH_MAX_PER_CONNECTION": str(PER_CONNECTION),
        "ORDERS_WATCH_MAX_PER_TENANT": str(PER_TENANT),
    }).start_all()
    yield running
    running.stop_all()




def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def refusal(stack: Stack, tenant_id: str, order_id: str, token: str) -> tuple[str, float]:
    """The field violation's description a read with `token` gets, and how long it took to get it."""
    _, query = queries(stack.query_addr)
    began = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=token),
                              metadata=as_tenant(tenant_id), timeout=30)
    took = time.monotonic() - began
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    [violation] = detail(status_of(raised.value), BadRequest).field_violations
    assert violation.field == "consistency_token"
    return violation.description, took


def test_a_forged_or_edited_consistency_token_is_invalid_argument_at_once(stack: Stack) -> None:
    tenant_id, order_id = new_id("t"), new_id("o")
    token = place_for_a_new_customer(stack.command_addr, tenant_id, order_id).consistency_token
    body, mac = token.split(".")
    endless = str(2**63 - 1).encode()
    forged = {
        "edited to the last version": b64(b"order|" + order_id.encode() + b"|" + endless) + "." + mac,
        "unsigned, as tokens were": b64(b"1|order|" + order_id.encode() + b"|" + endless),
        "another MAC": body + "." + b64(b"\0" * 16),
        "nonsense": "nonsense!",
    }
    for what, text in forged.items():
        _, took = refusal(stack, tenant_id, order_id, text)
        assert took < 5, f"{what}: refused only after {took:.1f}s"

    _, query = queries(stack.query_addr)
    summary = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=token),
                                    metadata=as_tenant(tenant_id), timeout=30).summary
    assert summary.version == 1


def test_another_tenants_consistency_token_is_refused_as_if_forged_even_on_the_same_order_id(stack: Stack) -> None:
    tenant_a, tenant_b, order_id = new_id("ta"), new_id("tb"), new_id("o")
    token_a = place_for_a_new_customer(stack.command_addr, tenant_a, order_id).consistency_token
    place_for_a_new_customer(stack.command_addr, tenant_b, order_id)

    told_b, _ = refusal(stack, tenant_b, order_id, token_a)
    told_forged, _ = refusal(stack, tenant_b, order_id, "nonsense!")
    assert told_b == told_forged  # nothing tells B that A wrote anything


def test_the_wait_for_a_consistency_token_ends_at_its_cap_well_before_the_deadline(stack: Stack) -> None:
    assert stack.cli("projector", "pause", timeout=60).returncode == 0
    try:
        tenant_id, order_id = new_id("t"), new_id("o")
        token = place_for_a_new_customer(stack.command_addr, tenant_id, order_id).consistency_token
        _, query = queries(stack.query_addr)
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=token),
                                  metadata=as_tenant(tenant_id), timeout=30)
        took = time.monotonic() - began
    finally:
        assert stack.cli("projector", "resume", timeout=60).returncode == 0
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert detail(status_of(raised.value), ErrorInfo).reason == "READ_MODEL_BEHIND"
    assert READ_WAIT_SECONDS * 0.8 <= took < 10, took


def local_channel(addr: str) -> grpc.Channel:
    """A channel with a connection of its own (channels otherwise share one per target)."""
    return channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])


def open_stream(stub: query_grpc.QueryServiceStub, tenant_id: str) -> Any:
    """A WatchOrders stream, once it is open (its first heartbeat, as nothing matches it)."""
    stream = stub.WatchOrders(query_pb.WatchOrdersRequest(order_id=new_id("o-none")), metadata=as_tenant(tenant_id),
                              timeout=60)
    assert next(stream).HasField("heartbeat")
    return stream


def watch_limit(stub: query_grpc.QueryServiceStub, tenant_id: str) -> dict[str, str]:
    """The ErrorInfo metadata of a stream refused for a limit."""
    with pytest.raises(grpc.RpcError) as raised:
        open_stream(stub, tenant_id)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value
    info = detail(status_of(raised.value), ErrorInfo)
    assert info.reason == "WATCH_LIMIT"
    return dict(info.metadata)


def test_streams_over_the_per_connection_cap_are_refused_and_a_closed_one_frees_its_slot(stack: Stack) -> None:
    tenant_id = new_id("t")
    with local_channel(stack.query_addr) as channel:
        stub = query_grpc.QueryServiceStub(channel)
        streams = [open_stream(stub, tenant_id) for _ in range(PER_CONNECTION)]
        assert watch_limit(stub, tenant_id) == {"limit": "per_connection", "max_streams": str(PER_CONNECTION)}
        with local_channel(stack.query_addr) as other:  # another connection is not held back
            open_stream(query_grpc.QueryServiceStub(other), tenant_id).cancel()

        streams.pop().cancel()
        streams.append(wait_until(lambda: open_stream(stub, tenant_id), timeout=10, what="the slot freed"))
        for stream in streams:
            stream.cancel()


def test_streams_over_the_per_tenant_cap_are_refused_and_a_closed_one_frees_its_slot(stack: Stack) -> None:
    tenant_id = new_id("t")
    channels = [local_channel(stack.query_addr) for _ in range(PER_TENANT + 1)]
    try:
        stubs = [query_grpc.QueryServiceStub(c) for c in channels]
        streams = [open_stream(stub, tenant_id) for stub in stubs[:PER_TENANT]]
        spare = stubs[PER_TENANT]
        assert watch_limit(spare, tenant_id) == {"limit": "per_tenant", "max_streams": str(PER_TENANT)}
        open_stream(spare, new_id("t-other")).cancel()  # another tenant is not held back

        streams.pop().cancel()
        streams.append(wait_until(lambda: open_stream(spare, tenant_id), timeout=10, what="the slot freed"))
        for stream in streams:
            stream.cancel()
    finally:
        for channel in channels:
            channel.close()


def test_a_read_held_up_by_a_lock_ends_by_its_deadline_and_leaves_no_statement_waiting(stack: Stack) -> None:
    _, query = queries(stack.query_addr)
    waiting = """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND application_name = 'orders-query-server' AND wait_event_type = 'Lock'"""
    with psycopg.connect(libpq_url(stack.database_url)) as locker, \
            psycopg.connect(libpq_url(stack.database_url), autocommit=True) as observer:
        locker.execute("LOCK TABLE order_summaries IN ACCESS EXCLUSIVE MODE")  # held until the rollback
        try:
            with pytest.raises(grpc.RpcError) as raised:
                query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=new_id("o")), timeout=2)
            # The server's own answer (the client's deadline alone would carry no details): its
            # statement timeout ended the read before the deadline.
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert detail(status_of(raised.value), ErrorInfo).reason == "DEADLINE_EXCEEDED"
            # ... and PostgreSQL no longer works on it, though the lock is still held.
            assert observer.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                    "'orders-query-server'").fetchone() != (0,)  # its connections are there to see
            wait_until(lambda: observer.execute(waiting).fetchone() == (0,), timeout=5, what="no statement waiting")
        finally:
            locker.rollback()
