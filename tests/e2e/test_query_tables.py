"""Each query reads its own read model's table and no other, as PostgreSQL's per-table scan
counters see it."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_grpc
from orders.v1 import types_pb2
from projector.views import MODELS
from server.config import libpq_url
from server.platform.process import free_port
from tests.e2e.client import commands, eur, new_id, place_request, queries, register
from tests.e2e.projection import lagging_aggregates
from tests.harness import Stack, scalar, serving, wait_until

pytestmark = pytest.mark.e2e
READ_MODEL_TABLES = [table.name for model in MODELS for table in model.tables]
Db = psycopg.Connection[Any]


@dataclass(frozen=True)
class Orders:
    customer_id: str
    product_id: str
    order_id: str


def scans(db: Db) -> dict[str, int]:
    """Sequential plus index scans so far, per read-model table."""
    db.execute("SELECT pg_stat_clear_snapshot()")  # read the counters afresh, not this session's cached copy
    rows = db.execute(
        "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        [READ_MODEL_TABLES],
    ).fetchall()
    return {name: 0 for name in READ_MODEL_TABLES} | {name: int(count) for name, count in rows}


def _stop(stack: Stack, name: str, db: Db) -> None:
    """Stops process `name` and waits until its database sessions are gone: a session publishes
    the statistics it holds back when it ends, so none of its scans can land later."""
    ports = [c.laddr.port for c in psutil.Process(stack.procs[name].pid).net_connections("tcp")]
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(%s)"
    assert scalar(db, sessions, ports) > 0
    stack.kill(name, signal.SIGTERM)
    del stack.procs[name]
    wait_until(lambda: scalar(db, sessions, ports) == 0, what=f"the sessions of {name} to end")


@contextlib.contextmanager
def own_query_server(stack: Stack, db: Db) -> Iterator[query_grpc.QueryServiceStub]:
    """A query server of the test's own, stopped on the way out so that every scan it made is counted."""
    addr = f"127.0.0.1:{free_port()}"
    proc = stack.start("query-server", name="query-measured", QUERY_ADDR=addr, METRICS_ADDR=f"127.0.0.1:{free_port()}")
    try:
        wait_until(lambda: proc.poll() is None and serving(addr), what="the measured query-server SERVING")
        channel, stub = queries(addr)
        with channel:
            yield stub
    finally:
        _stop(stack, "query-measured", db)


@pytest.fixture(scope="module")
def quiet_read_models(stack: Stack, database_url: str) -> Iterator[Orders]:
    """Given orders in every read model, one of them cancelled, stock of their product, and the projector caught up and
    stopped, so that only queries move the read models' scan counters (the stack's own query
    server is never asked)."""
    _, cmd = commands(stack.command_addr)
    customer_id, product_id = new_id("c"), new_id("p")
    register(cmd, customer_id)
    cmd.AddStock(pb.AddStockRequest(request_id=new_id("r"), product_id=product_id, expected_version=0, quantity=5),
                 timeout=10)
    line = types_pb2.OrderLine(product_id=product_id, quantity=2, unit_price=eur(3))
    kept, cancelled = (cmd.PlaceOrder(place_request(new_id("o"), customer_id, line), timeout=10) for _ in range(2))
    cmd.CancelOrder(pb.CancelOrderRequest(request_id=new_id("r"), order_id=cancelled.order_id, expected_version=1,
                                          reason=types_pb2.CANCELLATION_REASON_OTHER), timeout=10)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as db:
        wait_until(lambda: lagging_aggregates(db) == 0, what="every event applied")
        _stop(stack, "projector", db)
    yield Orders(customer_id, product_id, kept.order_id)
    stack.start("projector")


def _watch_first(query: query_grpc.QueryServiceStub, orders: Orders) -> Any:
    stream = query.WatchOrders(query_pb.WatchOrdersRequest(order_id=orders.order_id), timeout=10)
    try:
        return next(stream).update.summary.order_id
    finally:
        stream.cancel()


Call = Callable[[query_grpc.QueryServiceStub, Orders], Any]
CALLS: dict[str, tuple[Call, str]] = {
    "GetOrderSummary": (lambda q, o: q.GetOrderSummary(
        query_pb.GetOrderSummaryRequest(order_id=o.order_id), timeout=10).summary.order_id, "order_summaries"),
    "ListOrders": (lambda q, o: q.ListOrders(
        query_pb.ListOrdersRequest(customer_id=o.customer_id), timeout=10).orders, "order_summaries"),
    "WatchOrders": (_watch_first, "order_summaries"),
    "GetCustomerOrders": (lambda q, o: q.GetCustomerOrders(
        query_pb.GetCustomerOrdersRequest(customer_id=o.customer_id), timeout=10).totals, "customer_orders"),
    "GetProductSales": (lambda q, o: q.GetProductSales(
        query_pb.GetProductSalesRequest(product_id=o.product_id), timeout=10).sales, "product_sales"),
    "GetCustomer": (lambda q, o: q.GetCustomer(
        query_pb.GetCustomerRequest(customer_id=o.customer_id), timeout=10).customer.version, "customer_credit"),
    "GetProduct": (lambda q, o: q.GetProduct(
        query_pb.GetProductRequest(product_id=o.product_id), timeout=10).product.version, "product_stock"),
}


@pytest.mark.parametrize("rpc", CALLS)
def test_a_query_scans_its_own_read_model_table_and_no_other(
    rpc: str, stack: Stack, quiet_read_models: Orders, db: Db
) -> None:
    """When a query runs on quiet read models, then the only read-model table whose scan counters
    move is the one its read model owns."""
    call, table = CALLS[rpc]
    before = scans(db)

    with own_query_server(stack, db) as query:
        assert call(query, quiet_read_models)

    after = scans(db)
    assert [name for name in READ_MODEL_TABLES if after[name] != before[name]] == [table]
