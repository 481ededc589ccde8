"""Rebuilding read models from the events table while commands keep flowing: parity finds no
difference, the swap is one transaction, and queries never fail across it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.message import Message

from orders.v1 import query_service_pb2 as qpb
from server.config import libpq_url
from tests.e2e.client import queries
from tests.e2e.grants import grant_problems
from tests.e2e.projection import Traffic, lagging_aggregates, read_model_differences
from tests.harness import Stack, scalar, wait_until

pytestmark = pytest.mark.e2e


def test_rebuild_parity_and_swap_while_commands_flow_and_queries_never_fail(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack(database_url, nats_url, tmp_path).start_all()
    db = psycopg.connect(libpq_url(database_url), autocommit=True)
    traffic = Traffic(stack.command_addr, seed=3)
    failures: list[str] = []
    answered = 0
    stop_queries = threading.Event()
    pool = ThreadPoolExecutor(max_workers=2)

    def query_loop() -> None:
        nonlocal answered
        channel, stub = queries(stack.query_addr)
        with channel, psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            while not stop_queries.is_set():
                # Only orders the live read model already holds: any NOT_FOUND is then a torn swap.
                ids = [r[0] for r in conn.execute(
                    "SELECT aggregate_id FROM applied_versions WHERE tenant_id = 'default' AND aggregate_type = 'order'"
                    " ORDER BY random() LIMIT 5")]
                reads: list[tuple[str, Any, Message]] = [
                    (order_id, stub.GetOrderSummary, qpb.GetOrderSummaryRequest(order_id=order_id)) for order_id in ids]
                # The dashboards read their own tables, which are rebuilt and swapped too.
                reads += [("dashboard", stub.GetCustomerOrders,
                           qpb.GetCustomerOrdersRequest(customer_id=traffic.customers[0])),
                          ("sales", stub.GetProductSales, qpb.GetProductSalesRequest()),
                          ("credit", stub.GetCustomer, qpb.GetCustomerRequest(customer_id=traffic.customers[1])),
                          ("stock", stub.GetProduct, qpb.GetProductRequest(product_id=f"{traffic.products}-1"))]
                for what, rpc, request in reads:
                    try:
                        rpc(request, timeout=10)
                        answered += 1
                    except grpc.RpcError as exc:
                        failures.append(f"{what}: {exc.code()}: {exc.details()}")

    try:
        traffic.run(400)  # a history to rebuild
        # Every customer and product the reader asks for is in the live read models before it starts.
        wait_until(lambda: lagging_aggregates(db) == 0, timeout=60, what="the history applied")
        # Futures, so that a writer or reader that crashes fails the test through .result().
        writer = pool.submit(traffic.run, 1_400)
        reader = pool.submit(query_loop)

        began = scalar(db, "SELECT max(id) FROM events")
        built = stack.cli("rebuild", "order_summaries")
        assert built.returncode == 0, built.stderr
        assert "events" in built.stderr  # the progress bar
        parity = stack.cli("parity", "order_summaries")
        assert parity.returncode == 0 and "equal" in parity.stdout, parity.stdout
        swapped = stack.cli("swap", "order_summaries")
        assert swapped.returncode == 0 and "swapped" in swapped.stdout, swapped.stderr
        # Commands kept flowing while the table was rebuilt, checked and swapped.
        assert scalar(db, "SELECT max(id) FROM events") > began
        for model in ("customer_orders", "product_sales", "customer_credit", "product_stock"):
            done = stack.cli("rebuild", model, "--swap")
            assert done.returncode == 0 and "swapped" in done.stdout, done.stdout + done.stderr
        # The swapped-in tables carry the live ones' grants: the query server (its own role) kept
        # reading them above, and the projector (its own role) applies what comes after the swaps.
        assert grant_problems(db) == []

        writer.result()
        traffic.run(100)
        wait_until(lambda: lagging_aggregates(db) == 0, timeout=60, what="every event applied")
        stop_queries.set()
        reader.result()
        assert failures == [] and answered > 0
        assert read_model_differences(db) == {}  # the swapped-in tables keep up with new events
        assert scalar(db, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%__shadow'") == 0
        assert scalar(db, "SELECT count(*) FROM pg_indexes WHERE indexname = 'pk_order_summaries'") == 1
        # A shadow that differs is reported row by row, with a non-zero exit.
        assert stack.cli("rebuild", "product_sales").returncode == 0
        db.execute("UPDATE product_sales__shadow SET units_ordered = units_ordered + 1 WHERE ctid IN "
                   "(SELECT ctid FROM product_sales__shadow LIMIT 1)")
        broken = stack.cli("parity", "product_sales")
        assert broken.returncode == 1 and "shadow only" in broken.stdout and "live only" in broken.stdout
    finally:
        traffic.stop.set()
        stop_queries.set()
        pool.shutdown(wait=True)
        traffic.close()
        db.close()
        stack.stop_all()
