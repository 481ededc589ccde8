"""One async function per command: load, decide (domain), save. The caller owns the transaction."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from server import db, wire
from server.domain import model
from server.domain.errors import AlreadyExistsError


async def register_customer(
    conn: AsyncConnection, ctx: wire.EventContext, cmd: model.RegisterCustomer
) -> model.Customer:
    customer, event = model.register_customer(cmd)
    if not await db.insert_customer(conn, ctx.tenant_id, customer):
        raise AlreadyExistsError("customer", cmd.customer_id)
    await _record(conn, ctx, event, "customer", customer.customer_id, customer.version)
    return customer


async def place_order(conn: AsyncConnection, ctx: wire.EventContext, cmd: model.PlaceOrder) -> model.Order:
    model.validate_place_order(cmd)
    customer = await db.load_customer(conn, ctx.tenant_id, cmd.customer_id)
    order, event = model.place_order(cmd, customer)
    if not await db.insert_order(conn, ctx.tenant_id, order):
        raise AlreadyExistsError("order", cmd.order_id)
    await _record(conn, ctx, event, "order", order.order_id, order.version)
    return order


async def _record(
    conn: AsyncConnection,
    ctx: wire.EventContext,
    event: model.Event,
    aggregate_type: str,
    aggregate_id: str,
    version: int,
) -> None:
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
