"""The clients: workers that place orders and confirm or cancel their own, over gRPC, each call
recorded as `invoke` then `ok`, `fail` or `info`. A worker knows its orders' versions, so a
conflict is never its own doing; a call of unknown outcome is sent again, identical (same
request id), until it gets a definite answer or the worker gives up on that order."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from orders.v1 import types_pb2
from tests.chaos.history import FAIL, INFO, INVOKE, OK, History, Op

CALL_TIMEOUT = 5.0
RETRIES = 6  # identical resends of a call whose outcome is unknown
# A definite answer: the command did not happen (or, for OK, did).
DEFINITE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED,
            grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE}
PRODUCTS = [f"p-{n}" for n in range(8)]


def total_text(value: Decimal) -> str:
    """Totals as both sides of the checker write them."""
    return f"{value:.9f}"


@dataclass
class Order:
    order_id: str
    version: int = 0
    state: str = "PLACED"
    unknown: bool = False  # an outcome never resolved: the worker leaves this order alone


class Worker:
    def __init__(self, number: int, stub: pb_grpc.CommandServiceStub, metadata: tuple[tuple[str, str], ...],
                 customer_id: str, history: History, rng: random.Random) -> None:
        self.number, self.stub, self.metadata = number, stub, metadata
        self.customer_id, self.history, self.rng = customer_id, history, rng
        self.orders: list[Order] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            open_orders = [o for o in self.orders if o.state == "PLACED" and not o.unknown]
            if not open_orders or self.rng.random() < 0.5:
                await self.place()
            else:
                order = self.rng.choice(open_orders)
                await (self.confirm(order) if self.rng.random() < 0.6 else self.cancel(order))

    async def place(self) -> None:
        order = Order(f"o-{self.number}-{uuid.uuid4().hex[:10]}")
        lines, total = [], Decimal(0)
        for product in self.rng.sample(PRODUCTS, self.rng.randint(1, 3)):
            quantity, cents = self.rng.randint(1, 5), self.rng.randint(100, 9999)
            lines.append(types_pb2.OrderLine(product_id=product, quantity=quantity, unit_price=types_pb2.Money(
                currency_code="EUR", units=cents // 100, nanos=(cents % 100) * 10_000_000)))
            total += quantity * Decimal(cents) / 100
        request = pb.PlaceOrderRequest(request_id=str(uuid.uuid4()), order_id=order.order_id,
                                       customer_id=self.customer_id, lines=lines)
        self.orders.append(order)
        answer = await self.call("place", self.stub.PlaceOrder, request, order, total=total_text(total))
        if answer is not None:
            order.version = answer.version

    async def confirm(self, order: Order) -> None:
        request = pb.ConfirmOrderRequest(request_id=str(uuid.uuid4()), order_id=order.order_id,
                                         expected_version=order.version)
        if (answer := await self.call("confirm", self.stub.ConfirmOrder, request, order)) is not None:
            order.version, order.state = answer.version, "CONFIRMED"

    async def cancel(self, order: Order) -> None:
        request = pb.CancelOrderRequest(request_id=str(uuid.uuid4()), order_id=order.order_id,
                                        expected_version=order.version,
                                        reason=types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST)
        if (answer := await self.call("cancel", self.stub.CancelOrder, request, order)) is not None:
            order.version, order.state = answer.version, "CANCELLED"

    async def call(self, f: str, method: Any, request: Any, order: Order, total: str = "") -> Any:
        """The call, sent again while its outcome is unknown; the answer of an `ok`, else None."""
        base = dict(f=f, process=self.number, order_id=order.order_id, request_id=request.request_id,
                    expected_version=getattr(request, "expected_version", 0))
        for attempt in range(RETRIES + 1):
            self.history.add(Op(INVOKE, **base))
            try:
                answer = await method(request, metadata=self.metadata, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                # ABORTED on a resend may be the first send still in flight: not yet known.
                definite = exc.code() in DEFINITE and not (attempt and exc.code() == grpc.StatusCode.ABORTED)
                self.history.add(Op(FAIL if definite else INFO, **base, code=exc.code().name,
                                    detail=exc.details() or ""))
                if definite:
                    if f == "place":
                        order.state = "REFUSED"
                    return None
                await asyncio.sleep(min(0.2 * 2 ** attempt, 3.0))
                continue
            self.history.add(Op(OK, **base, version=answer.version, total=total,
                                response=answer.SerializeToString(deterministic=True).hex()))
            return answer
        order.unknown = True
        return None
