"""One async function per command: load, decide (domain), stage the change and record its event
in the unit of work. The caller commits it, so the state change, its event and the idempotency
record are written together."""

from __future__ import annotations

import functools
from typing import TypeVar

from server.command.unit_of_work import UnitOfWork, Written
from server.domain import commands as c
from server.domain import model
from server.domain.errors import AlreadyExistsError, NotFoundError

A = TypeVar("A")


# RegisterCustomer and PlaceOrder are not read first: their write answers ALREADY_EXISTS itself,
# and an order's foreign key checks its customer. One round trip fewer for the busiest command.


async def register_customer(uow: UnitOfWork, cmd: c.RegisterCustomer) -> Written:
    customer, event = model.register_customer(cmd)
    uow.record(event)
    return uow.insert(customer)


async def forget_customer(uow: UnitOfWork, cmd: c.ForgetCustomer) -> Written:
    customer, event = model.forget_customer(_found(await uow.customer(cmd.customer_id), "customer", cmd.customer_id), cmd)
    if event is None:
        return uow.unchanged(customer)
    uow.record(event)
    return uow.update(customer, customer.version - 1)


async def reserve_credit(uow: UnitOfWork, cmd: c.ReserveCredit) -> Written:
    customer, event = model.reserve_credit(_found(await uow.customer(cmd.customer_id), "customer", cmd.customer_id), cmd)
    uow.record(event)
    return uow.update(customer, cmd.expected_version)


async def release_credit(uow: UnitOfWork, cmd: c.ReleaseCredit) -> Written:
    customer, event = model.release_credit(_found(await uow.customer(cmd.customer_id), "customer", cmd.customer_id), cmd)
    uow.record(event)
    return uow.update(customer, cmd.expected_version)


async def add_stock(uow: UnitOfWork, cmd: c.AddStock) -> Written:
    """expected_version 0 creates the product, and only then may it not exist yet."""
    current = await uow.product(cmd.product_id)
    if cmd.expected_version == 0 and current is not None:
        raise AlreadyExistsError("product", cmd.product_id)
    if cmd.expected_version > 0:
        _found(current, "product", cmd.product_id)
    product, event = model.add_stock(current, cmd)
    uow.record(event)
    return uow.insert(product) if current is None else uow.update(product, cmd.expected_version)


async def reserve_stock(uow: UnitOfWork, cmd: c.ReserveStock) -> Written:
    product, event = model.reserve_stock(_found(await uow.product(cmd.product_id), "product", cmd.product_id), cmd)
    uow.record(event)
    return uow.update(product, cmd.expected_version)


async def release_stock(uow: UnitOfWork, cmd: c.ReleaseStock) -> Written:
    product, event = model.release_stock(_found(await uow.product(cmd.product_id), "product", cmd.product_id), cmd)
    uow.record(event)
    return uow.update(product, cmd.expected_version)


async def place_order(uow: UnitOfWork, cmd: c.PlaceOrder) -> Written:
    order, event = model.place_order(cmd)
    uow.record(event)
    return uow.insert(order, missing_reference=functools.partial(model.unregistered_customer, cmd.customer_id))


async def confirm_order(uow: UnitOfWork, cmd: c.ConfirmOrder) -> Written:
    order, event = model.confirm_order(_found(await uow.order(cmd.order_id), "order", cmd.order_id), cmd)
    uow.record(event)
    return uow.update(order, cmd.expected_version)


async def ship_order(uow: UnitOfWork, cmd: c.ShipOrder) -> Written:
    order, event = model.ship_order(_found(await uow.order(cmd.order_id), "order", cmd.order_id), cmd)
    uow.record(event)
    return uow.update(order, cmd.expected_version)


async def cancel_order(uow: UnitOfWork, cmd: c.CancelOrder) -> Written:
    order, event = model.cancel_order(_found(await uow.order(cmd.order_id), "order", cmd.order_id), cmd)
    uow.record(event)
    return uow.update(order, cmd.expected_version)


def _found(aggregate: A | None, aggregate_type: str, aggregate_id: str) -> A:
    if aggregate is None:
        raise NotFoundError(aggregate_type, aggregate_id)
    return aggregate
