"""OrdersClient: every call has a deadline; commands get a request_id, so a retry after
UNAVAILABLE or DEADLINE_EXCEEDED is safe and has one effect; failures raise OrdersError."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import command_service_pb2_grpc as cmd_grpc
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import query_service_pb2_grpc as query_grpc
from orders.v1 import types_pb2

T = TypeVar("T")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class OrdersError(Exception):
    """A call that failed, with its gRPC code and the google.rpc details the server sent."""

    def __init__(self, code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.status = status

    def _detail(self, kind: type[T]) -> T | None:
        for packed in self.status.details if self.status else ():
            if packed.Is(kind.DESCRIPTOR):  # type: ignore[attr-defined]
                message = kind()
                packed.Unpack(message)
                return message
        return None

    @property
    def field_violations(self) -> dict[str, str]:
        """Bad request fields and what is wrong with each."""
        bad = self._detail(error_details_pb2.BadRequest)
        return {v.field: v.description for v in bad.field_violations} if bad else {}

    @property
    def reason(self) -> str | None:
        """The ErrorInfo reason, e.g. VERSION_CONFLICT or REQUEST_ID_REUSED."""
        info = self._detail(error_details_pb2.ErrorInfo)
        return info.reason if info else None


class OrdersClient:
    """Talks to a command server and a query server. Use as `async with OrdersClient(...) as c`.

    Plaintext unless `tls` is true or a certificate is given. Over TLS, `root_certificates` (PEM)
    are the CAs trusted to have signed the servers' certificates (default: the system's), and
    `certificate_chain` with `private_key` (PEM) the client certificate that servers with mutual
    TLS require."""

    def __init__(
        self,
        command_addr: str,
        query_addr: str,
        *,
        token: str | None = None,
        tenant_id: str | None = None,
        timeout: float = 5.0,
        attempts: int = 3,
        tls: bool = False,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
    ) -> None:
        """`token`: the bearer JWT every call carries (its tenant_id claim is the tenant).
        `tenant_id`: sent as x-tenant-id, for servers running with ORDERS_AUTH=off."""
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("a client certificate needs both certificate_chain and private_key")
        if tls or root_certificates or certificate_chain:
            credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self._command_channel = grpc.aio.secure_channel(command_addr, credentials)
            self._query_channel = grpc.aio.secure_channel(query_addr, credentials)
        else:
            self._command_channel = grpc.aio.insecure_channel(command_addr)
            self._query_channel = grpc.aio.insecure_channel(query_addr)
        self._commands = cmd_grpc.CommandServiceStub(self._command_channel)
        self._queries = query_grpc.QueryServiceStub(self._query_channel)
        self._metadata = ((("authorization", f"Bearer {token}"),) if token else ()) + (
            (("x-tenant-id", tenant_id),) if tenant_id else ())
        self._timeout = timeout
        self._attempts = attempts

    async def __aenter__(self) -> OrdersClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._command_channel.close()
        await self._query_channel.close()

    async def register_customer(
        self, customer_id: str, display_name: str, email: str, *, request_id: str | None = None
    ) -> cmd_pb.RegisterCustomerResponse:
        request = cmd_pb.RegisterCustomerRequest(
            request_id=request_id or str(uuid.uuid4()), customer_id=customer_id, display_name=display_name, email=email
        )
        return await self._call(lambda t: self._commands.RegisterCustomer(request, timeout=t, metadata=self._metadata))

    async def place_order(
        self, order_id: str, customer_id: str, lines: Sequence[types_pb2.OrderLine], *, request_id: str | None = None
    ) -> cmd_pb.PlaceOrderResponse:
        request = cmd_pb.PlaceOrderRequest(
            request_id=request_id or str(uuid.uuid4()), order_id=order_id, customer_id=customer_id, lines=lines
        )
        return await self._call(lambda t: self._commands.PlaceOrder(request, timeout=t, metadata=self._metadata))

    async def get_order_summary(self, order_id: str, consistency_token: str = "") -> query_pb.OrderSummary:
        request = query_pb.GetOrderSummaryRequest(order_id=order_id, consistency_token=consistency_token)
        reply: query_pb.GetOrderSummaryResponse = await self._call(
            lambda t: self._queries.GetOrderSummary(request, timeout=t, metadata=self._metadata))
        return reply.summary

    async def _call(self, call: Callable[[float], Awaitable[T]]) -> T:
        """Retries only what is safe to retry: the request (and its request_id) stays the same."""
        delay = 0.05
        for attempt in range(1, self._attempts + 1):
            try:
                return await call(self._timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() in RETRYABLE and attempt < self._attempts:
                    await asyncio.sleep(delay)
                    delay *= 4
                    continue
                raise OrdersError(error.code(), error.details() or "", rpc_status.from_call(error)) from None
        raise AssertionError("unreachable")  # pragma: no cover
