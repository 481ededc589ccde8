"""Translation between protobuf messages and the domain, in one place."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import events_pb2, types_pb2
from server.domain import commands as c
from server.domain import events as e
from server.domain.errors import FieldViolation
from server.domain.money import Money
from server.platform import upcasting

REASONS = {
    types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST: c.CancellationReason.CUSTOMER_REQUEST,
    types_pb2.CANCELLATION_REASON_OUT_OF_STOCK: c.CancellationReason.OUT_OF_STOCK,
    types_pb2.CANCELLATION_REASON_CREDIT_DECLINED: c.CancellationReason.CREDIT_DECLINED,
    types_pb2.CANCELLATION_REASON_OTHER: c.CancellationReason.OTHER,
    types_pb2.CANCELLATION_REASON_DEADLINE_EXCEEDED: c.CancellationReason.DEADLINE_EXCEEDED,
}
REASON_NUMBERS = {reason: number for number, reason in REASONS.items()}


def money_to_domain(m: types_pb2.Money) -> Money:
    return Money(m.currency_code, m.units, m.nanos)


def money_to_proto(m: Money) -> types_pb2.Money:
    return types_pb2.Money(currency_code=m.currency_code, units=m.units, nanos=m.nanos)


def line_to_proto(line: c.OrderLine) -> types_pb2.OrderLine:
    return types_pb2.OrderLine(
        product_id=line.product_id, quantity=line.quantity, unit_price=money_to_proto(line.unit_price)
    )


# --- requests to commands: fields are copied as sent, checked by the command ---------------------


def to_register_customer(request: cmd_pb.RegisterCustomerRequest) -> c.RegisterCustomer:
    limit = request.credit_limit if request.HasField("credit_limit") else types_pb2.Money(currency_code="XXX")
    return c.RegisterCustomer(request.customer_id, request.display_name, request.email, money_to_domain(limit))


def to_forget_customer(request: cmd_pb.ForgetCustomerRequest) -> c.ForgetCustomer:
    return c.ForgetCustomer(request.customer_id)


def to_reserve_credit(request: cmd_pb.ReserveCreditRequest) -> c.ReserveCredit:
    return c.ReserveCredit(request.customer_id, request.expected_version, money_to_domain(request.amount), request.order_id)


def to_release_credit(request: cmd_pb.ReleaseCreditRequest) -> c.ReleaseCredit:
    return c.ReleaseCredit(request.customer_id, request.expected_version, money_to_domain(request.amount), request.order_id)


def to_add_stock(request: cmd_pb.AddStockRequest) -> c.AddStock:
    return c.AddStock(request.product_id, request.expected_version, request.quantity)


def to_reserve_stock(request: cmd_pb.ReserveStockRequest) -> c.ReserveStock:
    return c.ReserveStock(request.product_id, request.expected_version, request.quantity, request.order_id)


def to_release_stock(request: cmd_pb.ReleaseStockRequest) -> c.ReleaseStock:
    return c.ReleaseStock(request.product_id, request.expected_version, request.quantity, request.order_id)


def to_place_order(request: cmd_pb.PlaceOrderRequest) -> c.PlaceOrder:
    lines = tuple(c.OrderLine(line.product_id, line.quantity, money_to_domain(line.unit_price)) for line in request.lines)
    return c.PlaceOrder(request.order_id, request.customer_id, lines)


def to_confirm_order(request: cmd_pb.ConfirmOrderRequest) -> c.ConfirmOrder:
    return c.ConfirmOrder(request.order_id, request.expected_version)


def to_ship_order(request: cmd_pb.ShipOrderRequest) -> c.ShipOrder:
    return c.ShipOrder(request.order_id, request.expected_version)


def to_cancel_order(request: cmd_pb.CancelOrderRequest) -> c.CancelOrder:
    return c.CancelOrder(request.order_id, request.expected_version, REASONS.get(request.reason), request.note)


def request_id_violations(request_id: str) -> list[FieldViolation]:
    if not request_id:
        return [FieldViolation("request_id", "must be set (a UUID is a good choice)")]
    if len(request_id) > 128 or not request_id.isprintable():
        return [FieldViolation("request_id", "must be at most 128 printable characters")]
    return []


def request_hash(method: str, request: Message) -> bytes:
    """Identifies a request's payload, so a reused request_id with other content is caught."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(method.encode() + b"\0" + copy.SerializeToString(deterministic=True)).digest()


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventContext:
    """Who asked for the change: carried into every event's metadata."""

    tenant_id: str
    correlation_id: str
    causation_id: str
    actor: str
    request_id: str = ""


def envelope(
    event: e.Event, ctx: EventContext, aggregate_type: str, aggregate_id: str, version: int, event_id: uuid.UUID
) -> events_pb2.Envelope:
    occur_time = timestamp_pb2.Timestamp()
    occur_time.GetCurrentTime()
    env = events_pb2.Envelope(
        event_id=str(event_id),
        event_type=type(event).__name__,
        tenant_id=ctx.tenant_id,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        occur_time=occur_time,
        correlation_id=ctx.correlation_id,
        causation_id=ctx.causation_id,
        actor=ctx.actor,
        request_id=ctx.request_id,
    )
    _set_payload(env, event)
    env.schema_version = upcasting.schema_version(env.WhichOneof("payload") or "")
    return env


def _set_payload(env: events_pb2.Envelope, event: e.Event) -> None:
    match event:
        case e.CustomerRegistered():
            env.customer_registered.CopyFrom(
                events_pb2.CustomerRegistered(
                    customer_id=event.customer_id,
                    display_name=event.display_name,
                    email=event.email,
                    credit_limit=money_to_proto(event.credit_limit),
                )
            )
        case e.CustomerForgotten():
            env.customer_forgotten.CopyFrom(events_pb2.CustomerForgotten(customer_id=event.customer_id))
        case e.CreditReserved():
            env.credit_reserved.CopyFrom(
                events_pb2.CreditReserved(
                    customer_id=event.customer_id, order_id=event.order_id, amount=money_to_proto(event.amount)
                )
            )
        case e.CreditReleased():
            env.credit_released.CopyFrom(
                events_pb2.CreditReleased(
                    customer_id=event.customer_id, order_id=event.order_id, amount=money_to_proto(event.amount)
                )
            )
        case e.StockAdded():
            env.stock_added.CopyFrom(events_pb2.StockAdded(product_id=event.product_id, quantity=event.quantity))
        case e.StockReserved():
            env.stock_reserved.CopyFrom(
                events_pb2.StockReserved(product_id=event.product_id, order_id=event.order_id, quantity=event.quantity)
            )
        case e.StockReleased():
            env.stock_released.CopyFrom(
                events_pb2.StockReleased(product_id=event.product_id, order_id=event.order_id, quantity=event.quantity)
            )
        case e.OrderPlaced():
            env.order_placed.CopyFrom(
                events_pb2.OrderPlaced(
                    order_id=event.order_id,
                    customer_id=event.customer_id,
                    lines=[line_to_proto(line) for line in event.lines],
                    total=money_to_proto(event.total),
                    line_totals=[money_to_proto(line.amount) for line in event.lines],
                )
            )
        case e.OrderConfirmed():
            env.order_confirmed.CopyFrom(events_pb2.OrderConfirmed(order_id=event.order_id))
        case e.OrderShipped():
            env.order_shipped.CopyFrom(events_pb2.OrderShipped(order_id=event.order_id))
        case e.OrderCancelled():
            env.order_cancelled.CopyFrom(
                events_pb2.OrderCancelled(order_id=event.order_id, reason=REASON_NUMBERS[event.reason], note=event.note)
            )
