"""Overload: past its limit of calls in progress, a server refuses at once with RESOURCE_EXHAUSTED
and details, keeps answering health checks, and the calls it admitted complete."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2

from server.config import libpq_url
from server.platform.process import free_port
from tests.e2e.client import ErrorInfo, commands, detail, new_id, place_request, register, status_of
from tests.harness import Stack, sample, scrape, serving, wait_until

pytestmark = pytest.mark.e2e

LIMIT = 4
# PlaceOrder's foreign-key check waiting for a customer row that a test transaction holds.
WAITING = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%%INSERT INTO orders%%'"


@pytest.fixture(scope="module")
def metrics() -> str:
    """The limited command server's Prometheus endpoint."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def limited(database_url: str, metrics: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A command server alone (the relay and NATS play no part), with room for LIMIT calls."""
    stack = Stack(database_url, "", tmp_path_factory.mktemp("logs"))
    stack.start("command-server", ORDERS_MAX_CALLS_IN_PROGRESS=str(LIMIT), METRICS_ADDR=metrics)
    wait_until(lambda: stack.alive() and serving(stack.command_addr), what="command-server SERVING")
    yield stack
    stack.stop_all()


def test_a_call_past_the_limit_is_refused_with_details_and_succeeds_when_retried(
    limited: Stack, metrics: str, database_url: str
) -> None:
    _, cmd = commands(limited.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)
    refused_before = sample(scrape(metrics), "grpc_server_handled_total", grpc_method="PlaceOrder",
                            grpc_type="unary", grpc_code="ResourceExhausted")
    held = [place_request(new_id("o"), customer_id) for _ in range(LIMIT)]
    extra = place_request(new_id("o"), customer_id)

    with psycopg.connect(libpq_url(database_url)) as blocker, \
            psycopg.connect(libpq_url(database_url), autocommit=True) as observer:
        blocker.execute("SELECT 1 FROM customers WHERE customer_id = %s FOR UPDATE", (customer_id,))
        started_before = sample(scrape(metrics), "grpc_server_started_total", grpc_method="PlaceOrder")
        in_progress = [cmd.PlaceOrder.future(request, timeout=30) for request in held]
        # All of them in progress, their writes (in one or two groups) waiting for the row.
        wait_until(lambda: sample(scrape(metrics), "grpc_server_started_total", grpc_method="PlaceOrder")
                   == started_before + LIMIT, timeout=10, what=f"{LIMIT} orders in progress")
        waiting = wait_until(lambda: (observer.execute(WAITING).fetchone() or (0,))[0], timeout=10,
                             what="the orders' writes waiting for the customer's row")

        with pytest.raises(grpc.RpcError) as caught:
            cmd.PlaceOrder(extra, timeout=10, metadata=(("x-correlation-id", "overload-1"),))

        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = status_of(caught.value)
        info = detail(status, ErrorInfo)
        assert (info.reason, info.metadata["limit"]) == ("OVERLOADED", str(LIMIT))
        retry = detail(status, error_details_pb2.RetryInfo)
        assert retry.retry_delay.ToMilliseconds() > 0
        assert ("x-correlation-id", "overload-1") in caught.value.trailing_metadata()
        assert serving(limited.command_addr)  # probes still answer while the calls wait
        assert observer.execute(WAITING).fetchone() == (waiting,)  # the refused call reached no database
        blocker.rollback()

        assert [call.result().version for call in in_progress] == [1] * LIMIT

    assert cmd.PlaceOrder(extra, timeout=10).version == 1  # the refusal wrote nothing: the retry places it
    refused = sample(scrape(metrics), "grpc_server_handled_total", grpc_method="PlaceOrder",
                     grpc_type="unary", grpc_code="ResourceExhausted")
    assert refused == refused_before + 1
