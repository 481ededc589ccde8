"""One async function per command: load, decide (domain), stage the change and its event.
The caller commits the session, so the state change, its event and the idempotency record are
written together."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from server import telemetry
from server.command.store import Session, Written
from server.domain import commands as c
from server.domain import events as e
from server.domain import model
from server.domain.errors import AlreadyExistsError, NotFoundError
from server.platform import wire

A = TypeVar("A")


# RegisterCustomer and PlaceOrder are not read first: their write answers ALREADY_EXISTS itself,
# and an order's foreign key checks its customer. One round trip fewer for the busiest command.


async def register_customer(s: Session, ctx: wire.EventContext, cmd: c.RegisterCustomer) -> Written:
    customer, event = model.register_customer(cmd)
    return _record(s, ctx, event, s.insert(customer))


async def reserve_credit(s: Session, ctx: wire.EventContext, cmd: c.ReserveCredit) -> Written:
    customer, event = model.reserve_credit(_found(await s.customer(cmd.customer_id), "customer", cmd.customer_id), cmd)
    return _record(s, ctx, event, s.update(customer, cmd.expected_version))


async def release_credit(s: Session, ctx: wire.EventContext, cmd: c.ReleaseCredit) -> Written:
    customer, event = model.release_credit(_found(await s.customer(cmd.customer_id), "customer", cmd.customer_id), cmd)
    return _record(s, ctx, event, s.update(customer, cmd.expected_version))


async def add_stock(s: Session, ctx: wire.EventContext, cmd: c.AddStock) -> Written:
    current = await s.product(cmd.product_id)
    if cmd.expected_version == 0 and current is not None:
        raise AlreadyExistsError("product", cmd.product_id)
    if cmd.expected_version > 0:
        _found(current, "product", cmd.product_id)
    product, event = model.add_stock(current, cmd)
    written = s.insert(product) if current is None else s.update(product, cmd.expected_version)
    return _record(s, ctx, event, written)


async def reserve_stock(s: Session, ctx: wire.EventContext, cmd: c.ReserveStock) -> Written:
    product, event = model.reserve_stock(_found(await s.product(cmd.product_id), "product", cmd.product_id), cmd)
    return _record(s, ctx, event, s.update(product, cmd.expected_version))


async def release_stock(s: Session, ctx: wire.EventContext, cmd: c.ReleaseStock) -> Written:
    product, event = model.release_stock(_found(await s.product(cmd.product_id), "product", cmd.product_id), cmd)
    return _record(s, ctx, event, s.update(product, cmd.expected_version))


async def place_order(s: Session, ctx: wire.EventContext, cmd: c.PlaceOrder) -> Written:
    order, event = model.place_order(cmd)
    missing_customer = functools.partial(model.unregistered_customer, cmd.customer_id)
    return _record(s, ctx, event, s.insert(order, missing_reference=missing_customer))


async def confirm_order(s: Session, ctx: wire.EventContext, cmd: c.ConfirmOrder) -> Written:
    order, event = model.confirm_order(_found(await s.order(cmd.order_id), "order", cmd.order_id), cmd)
    return _record(s, ctx, event, s.update(order, cmd.expected_version))


async def ship_order(s: Session, ctx: wire.EventContext, cmd: c.ShipOrder) -> Written:
    order, event = model.ship_order(_found(await s.order(cmd.order_id), "order", cmd.order_id), cmd)
    return _record(s, ctx, event, s.update(order, cmd.expected_version))


async def cancel_order(s: Session, ctx: wire.EventContext, cmd: c.CancelOrder) -> Written:
    order, event = model.cancel_order(_found(await s.order(cmd.order_id), "order", cmd.order_id), cmd)
    return _record(s, ctx, event, s.update(order, cmd.expected_version))


Handler = Callable[[Session, wire.EventContext, Any], Awaitable[Written]]
HANDLERS: dict[type[c.Command], Handler] = {
    c.RegisterCustomer: register_customer,
    c.ReserveCredit: reserve_credit,
    c.ReleaseCredit: release_credit,
    c.AddStock: add_stock,
    c.ReserveStock: reserve_stock,
    c.ReleaseStock: release_stock,
    c.PlaceOrder: place_order,
    c.ConfirmOrder: confirm_order,
    c.ShipOrder: ship_order,
    c.CancelOrder: cancel_order,
}


def _found(aggregate: A | None, aggregate_type: str, aggregate_id: str) -> A:
    if aggregate is None:
        raise NotFoundError(aggregate_type, aggregate_id)
    return aggregate


def _record(s: Session, ctx: wire.EventContext, event: e.Event, written: Written) -> Written:
    event_id = uuid.uuid4()
    env = wire.envelope(event, ctx, written.aggregate_type, written.aggregate_id, written.version, event_id)
    s.record(
        event_id=event_id,
        event_type=env.event_type,
        payload=env.SerializeToString(),
        # The trace context rides with the event, so the relay's publish, minutes later if need
        # be, joins the trace of the command that caused it.
        headers=telemetry.event_headers(ctx.correlation_id, ctx.causation_id),
    )
    return written
