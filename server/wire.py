"""Translation between protobuf messages and the domain, in one place."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import events_pb2, types_pb2
from server.domain import model
from server.domain.errors import FieldViolation, InvalidCommandError

ORDER_STATES = {
    model.OrderState.PLACED: types_pb2.ORDER_STATE_PLACED,
    model.OrderState.CONFIRMED: types_pb2.ORDER_STATE_CONFIRMED,
    model.OrderState.SHIPPED: types_pb2.ORDER_STATE_SHIPPED,
    model.OrderState.CANCELLED: types_pb2.ORDER_STATE_CANCELLED,
}


def money_to_domain(m: types_pb2.Money) -> model.Money:
    return model.Money(m.currency_code, m.units, m.nanos)


def money_to_proto(m: model.Money) -> types_pb2.Money:
    return types_pb2.Money(currency_code=m.currency_code, units=m.units, nanos=m.nanos)


def line_to_proto(line: model.OrderLine) -> types_pb2.OrderLine:
    return types_pb2.OrderLine(
        product_id=line.product_id, quantity=line.quantity, unit_price=money_to_proto(line.unit_price)
    )


def register_customer(req: cmd_pb.RegisterCustomerRequest) -> model.RegisterCustomer:
    return model.RegisterCustomer(req.customer_id, req.display_name, req.email)


def place_order(req: cmd_pb.PlaceOrderRequest) -> model.PlaceOrder:
    return model.PlaceOrder(
        order_id=req.order_id,
        customer_id=req.customer_id,
        lines=tuple(
            model.OrderLine(line.product_id, line.quantity, money_to_domain(line.unit_price))
            for line in req.lines
        ),
    )


def check_request_id(request_id: str) -> None:
    if not request_id:
        raise InvalidCommandError([FieldViolation("request_id", "must be set (a UUID is a good choice)")])
    if len(request_id) > 128 or not request_id.isprintable():
        raise InvalidCommandError([FieldViolation("request_id", "must be at most 128 printable characters")])


def request_hash(method: str, request: Message) -> bytes:
    """Identifies a request's payload, so a reused request_id with other content is caught."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")  # type: ignore[arg-type]
    return hashlib.sha256(method.encode() + b"\0" + copy.SerializeToString(deterministic=True)).digest()


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventContext:
    """Who asked for the change: carried into every event's metadata."""

    tenant_id: str
    correlation_id: str
    causation_id: str


def envelope(
    event: model.Event, ctx: EventContext, aggregate_type: str, aggregate_id: str, version: int
) -> events_pb2.Envelope:
    occur_time = timestamp_pb2.Timestamp()
    occur_time.FromDatetime(dt.datetime.now(dt.timezone.utc))
    env = events_pb2.Envelope(
        event_id=str(uuid.uuid4()),
        event_type=type(event).__name__,
        schema_version=1,
        tenant_id=ctx.tenant_id,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        occur_time=occur_time,
        correlation_id=ctx.correlation_id,
        causation_id=ctx.causation_id,
    )
    match event:
        case model.CustomerRegistered():
            env.customer_registered.CopyFrom(
                events_pb2.CustomerRegistered(
                    customer_id=event.customer_id, display_name=event.display_name, email=event.email
                )
            )
        case model.OrderPlaced():
            env.order_placed.CopyFrom(
                events_pb2.OrderPlaced(
                    order_id=event.order_id,
                    customer_id=event.customer_id,
                    lines=[line_to_proto(line) for line in event.lines],
                    total=money_to_proto(event.total),
                )
            )
    return env


# --- consistency tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class ConsistencyToken:
    """A write the caller wants to read: aggregate and the version the command produced."""

    aggregate_type: str
    aggregate_id: str
    version: int

    def encode(self) -> str:
        raw = f"1|{self.aggregate_type}|{self.aggregate_id}|{self.version}".encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, token: str) -> ConsistencyToken:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            fmt, aggregate_type, aggregate_id, version = raw.split("|")
            if fmt != "1" or int(version) < 1:
                raise ValueError(token)
            return cls(aggregate_type, aggregate_id, int(version))
        except ValueError as exc:
            raise InvalidCommandError(
                [FieldViolation("consistency_token", "is not a token returned by a command")]
            ) from exc
