"""One async function per command: load, decide (domain), save. The caller owns the transaction,
so the state change, its event and the idempotency record commit together."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from server import db, wire
from server.domain import commands as c
from server.domain import events as e
from server.domain import model
from server.domain.errors import AlreadyExistsError, NotFoundError

A = TypeVar("A")


@dataclass(frozen=True)
class Written:
    """What a command changed: the aggregate and the version it is at now."""

    aggregate_type: str
    aggregate_id: str
    version: int


async def register_customer(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.RegisterCustomer) -> Written:
    customer, event = model.register_customer(cmd)
    if not await db.insert_customer(conn, ctx.tenant_id, customer):
        raise AlreadyExistsError("customer", cmd.customer_id)
    return await _record(conn, ctx, event, "customer", customer.customer_id, customer.version)


async def reserve_credit(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.ReserveCredit) -> Written:
    customer = _found(await db.load_customer(conn, ctx.tenant_id, cmd.customer_id), "customer", cmd.customer_id)
    changed, event = model.reserve_credit(customer, cmd)
    await db.save_customer(conn, ctx.tenant_id, changed, cmd.expected_version)
    return await _record(conn, ctx, event, "customer", changed.customer_id, changed.version)


async def release_credit(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.ReleaseCredit) -> Written:
    customer = _found(await db.load_customer(conn, ctx.tenant_id, cmd.customer_id), "customer", cmd.customer_id)
    changed, event = model.release_credit(customer, cmd)
    await db.save_customer(conn, ctx.tenant_id, changed, cmd.expected_version)
    return await _record(conn, ctx, event, "customer", changed.customer_id, changed.version)


async def add_stock(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.AddStock) -> Written:
    product = await db.load_product(conn, ctx.tenant_id, cmd.product_id)
    if cmd.expected_version == 0 and product is not None:
        raise AlreadyExistsError("product", cmd.product_id)
    if cmd.expected_version > 0:
        _found(product, "product", cmd.product_id)
    changed, event = model.add_stock(product, cmd)
    if product is None:
        if not await db.insert_product(conn, ctx.tenant_id, changed):
            raise AlreadyExistsError("product", cmd.product_id)
    else:
        await db.save_product(conn, ctx.tenant_id, changed, cmd.expected_version)
    return await _record(conn, ctx, event, "product", changed.product_id, changed.version)


async def reserve_stock(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.ReserveStock) -> Written:
    product = _found(await db.load_product(conn, ctx.tenant_id, cmd.product_id), "product", cmd.product_id)
    changed, event = model.reserve_stock(product, cmd)
    await db.save_product(conn, ctx.tenant_id, changed, cmd.expected_version)
    return await _record(conn, ctx, event, "product", changed.product_id, changed.version)


async def release_stock(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.ReleaseStock) -> Written:
    product = _found(await db.load_product(conn, ctx.tenant_id, cmd.product_id), "product", cmd.product_id)
    changed, event = model.release_stock(product, cmd)
    await db.save_product(conn, ctx.tenant_id, changed, cmd.expected_version)
    return await _record(conn, ctx, event, "product", changed.product_id, changed.version)


async def place_order(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.PlaceOrder) -> Written:
    customer = await db.load_customer(conn, ctx.tenant_id, cmd.customer_id)
    order, event = model.place_order(cmd, customer)
    if not await db.insert_order(conn, ctx.tenant_id, order):
        raise AlreadyExistsError("order", cmd.order_id)
    return await _record(conn, ctx, event, "order", order.order_id, order.version)


async def confirm_order(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.ConfirmOrder) -> Written:
    order = _found(await db.load_order(conn, ctx.tenant_id, cmd.order_id), "order", cmd.order_id)
    changed, event = model.confirm_order(order, cmd)
    await db.save_order(conn, ctx.tenant_id, changed, cmd.expected_version)
    return await _record(conn, ctx, event, "order", changed.order_id, changed.version)


async def ship_order(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.ShipOrder) -> Written:
    order = _found(await db.load_order(conn, ctx.tenant_id, cmd.order_id), "order", cmd.order_id)
    changed, event = model.ship_order(order, cmd)
    await db.save_order(conn, ctx.tenant_id, changed, cmd.expected_version)
    return await _record(conn, ctx, event, "order", changed.order_id, changed.version)


async def cancel_order(conn: AsyncConnection, ctx: wire.EventContext, cmd: c.CancelOrder) -> Written:
    order = _found(await db.load_order(conn, ctx.tenant_id, cmd.order_id), "order", cmd.order_id)
    changed, event = model.cancel_order(order, cmd)
    await db.save_order(conn, ctx.tenant_id, changed, cmd.expected_version)
    return await _record(conn, ctx, event, "order", changed.order_id, changed.version)


Handler = Callable[[AsyncConnection, wire.EventContext, Any], Awaitable[Written]]
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


async def _record(
    conn: AsyncConnection,
    ctx: wire.EventContext,
    event: e.Event,
    aggregate_type: str,
    aggregate_id: str,
    version: int,
) -> Written:
    env = wire.envelope(event, ctx, aggregate_type, aggregate_id, version)
    await db.append_event(
        conn,
        event_id=uuid.UUID(env.event_id),
        tenant_id=ctx.tenant_id,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        event_type=env.event_type,
        payload=env.SerializeToString(),
        headers={"correlation_id": ctx.correlation_id, "causation_id": ctx.causation_id},
    )
    return Written(aggregate_type, aggregate_id, version)
