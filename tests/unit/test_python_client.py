"""The Python client's retries and errors against an in-process gRPC server that fails on cue:
gRPC's retry policy repeats UNAVAILABLE (the same request, within one deadline), RetryInfo is
honoured for RESOURCE_EXHAUSTED, and a status's details become a typed exception."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_grpc
from orders_client import (
    AbortedError,
    DeadlineExceededError,
    InvalidArgumentError,
    OrdersClient,
    Reconnect,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
    VersionConflictError,
)
from orders_client.errors import error_from
from server.platform.process import free_port


def overloaded(delay_seconds: float) -> status_pb2.Status:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromNanoseconds(int(delay_seconds * 1e9))
    packed = any_pb2.Any()
    packed.Pack(retry)
    return status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="busy", details=[packed])


class Scripted(query_grpc.QueryServiceServicer):
    """Answers GetProduct with the statuses in `script`, one per attempt, then with the product."""

    def __init__(self, script: list[grpc.StatusCode | status_pb2.Status], pause: float = 0.0) -> None:
        self.script = script
        self.pause = pause
        self.attempts: list[dict[str, Any]] = []

    async def GetProduct(self, request: query_pb.GetProductRequest, context: grpc.aio.ServicerContext) -> Any:
        self.attempts.append(dict(context.invocation_metadata()))
        await asyncio.sleep(self.pause)
        if len(self.attempts) <= len(self.script):
            answer = self.script[len(self.attempts) - 1]
            if isinstance(answer, status_pb2.Status):
                st = rpc_status.to_status(answer)
                await context.abort(st.code, st.details, st.trailing_metadata)
            await context.abort(answer, "try again")
        return query_pb.GetProductResponse(product=query_pb.Product(product_id=request.product_id, on_hand=7))

    async def WatchOrders(self, request: query_pb.WatchOrdersRequest, context: grpc.aio.ServicerContext) -> Any:
        """Per call: one update after the request's position, then the next scripted status."""
        self.attempts.append({"resume_token": request.resume_token})
        position = int(request.resume_token or "0") + 1
        summary = query_pb.OrderSummary(order_id="o-1", version=position)
        yield query_pb.WatchOrdersResponse(update=query_pb.OrderUpdate(summary=summary, resume_token=str(position)))
        if len(self.attempts) <= len(self.script):
            answer = self.script[len(self.attempts) - 1]
            assert isinstance(answer, grpc.StatusCode)
            await context.abort(answer, "stream cut")


def against(servicer: Scripted, scenario: Callable[[OrdersClient], Awaitable[None]], **options: Any) -> None:
    async def run() -> None:
        server = grpc.aio.server()
        query_grpc.add_QueryServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            addr = f"127.0.0.1:{port}"
            async with OrdersClient(addr, addr, token="t-1", **options) as client:
                await scenario(client)
        finally:
            await server.stop(None)

    asyncio.run(run())


def test_unavailable_is_retried_by_grpc_with_the_same_request_and_token() -> None:
    servicer = Scripted([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE])

    async def scenario(client: OrdersClient) -> None:
        assert (await client.get_product("p-1")).on_hand == 7

    against(servicer, scenario)
    assert len(servicer.attempts) == 3
    assert servicer.attempts[-1].get("grpc-previous-rpc-attempts") == "2", "gRPC's retry policy made the tries"
    assert {a["authorization"] for a in servicer.attempts} == {"Bearer t-1"}


def test_without_a_retry_policy_unavailable_is_raised_at_once() -> None:
    servicer = Scripted([grpc.StatusCode.UNAVAILABLE])

    async def scenario(client: OrdersClient) -> None:
        with pytest.raises(UnavailableError):
            await client.get_product("p-1")

    against(servicer, scenario, retry=None)
    assert len(servicer.attempts) == 1


def test_retries_stop_at_the_policys_attempts() -> None:
    servicer = Scripted([grpc.StatusCode.UNAVAILABLE] * 10)

    async def scenario(client: OrdersClient) -> None:
        with pytest.raises(UnavailableError):
            await client.get_product("p-1")

    against(servicer, scenario, retry=RetryPolicy(max_attempts=3, initial_backoff=0.01))
    assert len(servicer.attempts) == 3


def test_one_deadline_bounds_every_try() -> None:
    servicer = Scripted([grpc.StatusCode.UNAVAILABLE] * 10, pause=0.3)

    async def scenario(client: OrdersClient) -> None:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await client.get_product("p-1", timeout=1.0)
        assert time.monotonic() - started < 1.5

    against(servicer, scenario, retry=RetryPolicy(initial_backoff=0.01))
    assert 2 <= len(servicer.attempts) <= 4


def test_resource_exhausted_is_retried_after_the_delay_retry_info_asks_for() -> None:
    servicer = Scripted([overloaded(0.3)])

    async def scenario(client: OrdersClient) -> None:
        started = time.monotonic()
        assert (await client.get_product("p-1")).on_hand == 7
        assert time.monotonic() - started >= 0.3

    against(servicer, scenario)
    assert len(servicer.attempts) == 2


def test_a_retry_delay_past_the_deadline_raises_at_once_with_the_delay() -> None:
    servicer = Scripted([overloaded(5)])

    async def scenario(client: OrdersClient) -> None:
        started = time.monotonic()
        with pytest.raises(ResourceExhaustedError) as raised:
            await client.get_product("p-1", timeout=1.0)
        assert time.monotonic() - started < 0.9
        assert raised.value.retry_delay == 5.0

    against(servicer, scenario)
    assert len(servicer.attempts) == 1


def test_resource_exhausted_without_retry_info_is_not_retried() -> None:
    servicer = Scripted([grpc.StatusCode.RESOURCE_EXHAUSTED])

    async def scenario(client: OrdersClient) -> None:
        with pytest.raises(ResourceExhaustedError) as raised:
            await client.get_product("p-1")
        assert raised.value.retry_delay is None

    against(servicer, scenario)
    assert len(servicer.attempts) == 1


def _trailers(status: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    return (("grpc-status-details-bin", status.SerializeToString()),)


def test_an_aborted_status_with_a_version_conflict_becomes_a_version_conflict_error() -> None:
    info = error_details_pb2.ErrorInfo(reason="VERSION_CONFLICT", domain="orders.v1",
                                       metadata={"expected": "1", "actual": "2"})
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=code_pb2.ABORTED, message="stale", details=[packed])

    error = error_from(grpc.StatusCode.ABORTED, "stale", _trailers(status))
    other = error_from(grpc.StatusCode.ABORTED, "busy")

    assert isinstance(error, VersionConflictError)
    assert (error.expected_version, error.actual_version, error.domain) == (1, 2, "orders.v1")
    assert type(other) is AbortedError and other.error_info is None


def test_details_whose_code_disagrees_with_the_call_are_ignored() -> None:
    status = overloaded(1)
    error = error_from(grpc.StatusCode.UNAVAILABLE, "down", _trailers(status))
    assert isinstance(error, UnavailableError)
    assert (error.status, error.retry_delay) == (None, None)


def test_a_subscription_resumes_after_its_last_update_until_the_stream_ends_for_good() -> None:
    servicer = Scripted([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT])
    versions: list[int] = []

    async def scenario(client: OrdersClient) -> None:
        subscription = client.watch_orders(order_id="o-1", reconnect=Reconnect(initial_backoff=0.01))
        with pytest.raises(InvalidArgumentError):
            async for update in subscription:
                versions.append(update.summary.version)
        assert (subscription.resumes, subscription.resume_token) == (2, "3")

    against(servicer, scenario)
    assert [a["resume_token"] for a in servicer.attempts] == ["", "1", "2"]
    assert versions == [1, 2, 3]


def test_a_subscription_gives_up_when_the_stream_stays_broken() -> None:
    nothing_there = f"127.0.0.1:{free_port()}"

    async def scenario() -> float:
        async with OrdersClient(nothing_there, nothing_there) as client:
            subscription = client.watch_orders(reconnect=Reconnect(initial_backoff=0.01, give_up_after=0.5))
            started = time.monotonic()
            with pytest.raises(UnavailableError):
                async for _ in subscription:
                    pass
            assert subscription.resumes >= 1
            return time.monotonic() - started

    assert 0.5 <= asyncio.run(scenario()) < 5
