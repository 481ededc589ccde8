"""Aggregates and the rules that guard them. Each decision takes the current state and a
command and returns the new state with the one event that records the change, or raises."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from server.domain import commands as c
from server.domain import events as e
from server.domain.errors import PreconditionFailedError, VersionConflictError
from server.domain.money import Money


class OrderState(Enum):
    PLACED = "PLACED"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


# The lifecycle: PLACED -> CONFIRMED -> SHIPPED; PLACED or CONFIRMED -> CANCELLED.
TRANSITIONS: dict[type[c.Command], tuple[frozenset[OrderState], OrderState]] = {
    c.ConfirmOrder: (frozenset({OrderState.PLACED}), OrderState.CONFIRMED),
    c.ShipOrder: (frozenset({OrderState.CONFIRMED}), OrderState.SHIPPED),
    c.CancelOrder: (frozenset({OrderState.PLACED, OrderState.CONFIRMED}), OrderState.CANCELLED),
}


@dataclass(frozen=True)
class Customer:
    customer_id: str
    display_name: str
    email: str
    credit_limit: Money
    credit_reserved: Money
    version: int
    forgotten: bool = False  # the personal fields are erased (display_name and email are empty)


@dataclass(frozen=True)
class Product:
    product_id: str
    on_hand: int
    reserved: int
    version: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    lines: tuple[c.OrderLine, ...]
    total: Money
    state: OrderState
    version: int


def check_version(aggregate_type: str, aggregate_id: str, actual: int, expected: int) -> None:
    if actual != expected:
        raise VersionConflictError(aggregate_type, aggregate_id, expected, actual)


# --- customers --------------------------------------------------------------------------------


def register_customer(cmd: c.RegisterCustomer) -> tuple[Customer, e.CustomerRegistered]:
    customer = Customer(
        cmd.customer_id, cmd.display_name, cmd.email, cmd.credit_limit, Money.zero(cmd.credit_limit.currency_code), 1
    )
    return customer, e.CustomerRegistered(cmd.customer_id, cmd.display_name, cmd.email, cmd.credit_limit)


def forget_customer(customer: Customer, cmd: c.ForgetCustomer) -> tuple[Customer, e.CustomerForgotten | None]:
    """The customer with the personal fields erased and the event that says so; a customer
    forgotten before is returned as it is, with no event (forgetting is idempotent)."""
    if customer.forgotten:
        return customer, None
    changed = replace(customer, display_name="", email="", forgotten=True, version=customer.version + 1)
    return changed, e.CustomerForgotten(customer.customer_id)


def reserve_credit(customer: Customer, cmd: c.ReserveCredit) -> tuple[Customer, e.CreditReserved]:
    check_version("customer", customer.customer_id, customer.version, cmd.expected_version)
    _same_currency(customer, cmd.amount)
    reserved = customer.credit_reserved + cmd.amount
    if reserved.total_nanos > customer.credit_limit.total_nanos:
        raise PreconditionFailedError(
            "CREDIT_LIMIT", f"customers/{customer.customer_id}", "the reservation would exceed the credit limit"
        )
    changed = replace(customer, credit_reserved=reserved, version=customer.version + 1)
    return changed, e.CreditReserved(customer.customer_id, cmd.order_id, cmd.amount)


def release_credit(customer: Customer, cmd: c.ReleaseCredit) -> tuple[Customer, e.CreditReleased]:
    check_version("customer", customer.customer_id, customer.version, cmd.expected_version)
    _same_currency(customer, cmd.amount)
    if cmd.amount.total_nanos > customer.credit_reserved.total_nanos:
        raise PreconditionFailedError(
            "CREDIT_RESERVED", f"customers/{customer.customer_id}", "cannot release more credit than is reserved"
        )
    changed = replace(customer, credit_reserved=customer.credit_reserved - cmd.amount, version=customer.version + 1)
    return changed, e.CreditReleased(customer.customer_id, cmd.order_id, cmd.amount)


def _same_currency(customer: Customer, amount: Money) -> None:
    if amount.currency_code != customer.credit_limit.currency_code:
        raise PreconditionFailedError(
            "CREDIT_CURRENCY",
            f"customers/{customer.customer_id}",
            f"the customer's credit is in {customer.credit_limit.currency_code}",
        )


# --- products ---------------------------------------------------------------------------------


def add_stock(product: Product | None, cmd: c.AddStock) -> tuple[Product, e.StockAdded]:
    """Adds units; with expected_version 0 the product is new (the handler checks it is)."""
    current = product or Product(cmd.product_id, 0, 0, 0)
    check_version("product", cmd.product_id, current.version, cmd.expected_version)
    changed = replace(current, on_hand=current.on_hand + cmd.quantity, version=current.version + 1)
    return changed, e.StockAdded(cmd.product_id, cmd.quantity)


def reserve_stock(product: Product, cmd: c.ReserveStock) -> tuple[Product, e.StockReserved]:
    check_version("product", product.product_id, product.version, cmd.expected_version)
    if cmd.quantity > product.available:
        raise PreconditionFailedError(
            "STOCK_AVAILABLE", f"products/{product.product_id}", f"only {product.available} units are available"
        )
    changed = replace(product, reserved=product.reserved + cmd.quantity, version=product.version + 1)
    return changed, e.StockReserved(product.product_id, cmd.order_id, cmd.quantity)


def release_stock(product: Product, cmd: c.ReleaseStock) -> tuple[Product, e.StockReleased]:
    check_version("product", product.product_id, product.version, cmd.expected_version)
    if cmd.quantity > product.reserved:
        raise PreconditionFailedError(
            "STOCK_RESERVED", f"products/{product.product_id}", f"only {product.reserved} units are reserved"
        )
    changed = replace(product, reserved=product.reserved - cmd.quantity, version=product.version + 1)
    return changed, e.StockReleased(product.product_id, cmd.order_id, cmd.quantity)


# --- orders -----------------------------------------------------------------------------------


def place_order(cmd: c.PlaceOrder) -> tuple[Order, e.OrderPlaced]:
    """A new order at version 1 with its exact total. Its customer must be registered: a rule
    across aggregates, which the store checks as it writes (a foreign key), answering
    `unregistered_customer` when it fails."""
    total = cmd.total
    order = Order(cmd.order_id, cmd.customer_id, cmd.lines, total, OrderState.PLACED, version=1)
    return order, e.OrderPlaced(cmd.order_id, cmd.customer_id, cmd.lines, total)


def unregistered_customer(customer_id: str) -> PreconditionFailedError:
    return PreconditionFailedError("CUSTOMER_EXISTS", f"customers/{customer_id}", "the customer must be registered first")


def _transition(order: Order, cmd: c.ConfirmOrder | c.CancelOrder) -> Order:
    check_version("order", order.order_id, order.version, cmd.expected_version)
    allowed_from, to = TRANSITIONS[type(cmd)]
    if order.state not in allowed_from:
        raise PreconditionFailedError(
            "ORDER_STATE",
            f"orders/{order.order_id}",
            f"cannot move an order from {order.state.value} to {to.value}",
        )
    return replace(order, state=to, version=order.version + 1)


def confirm_order(order: Order, cmd: c.ConfirmOrder) -> tuple[Order, e.OrderConfirmed]:
    return _transition(order, cmd), e.OrderConfirmed(order.order_id)


def ship_order(order: Order, cmd: c.ShipOrder) -> tuple[Order, e.OrderShipped]:
    return _transition(order, cmd), e.OrderShipped(order.order_id)


def cancel_order(order: Order, cmd: c.CancelOrder) -> tuple[Order, e.OrderCancelled]:
    assert cmd.reason is not None  # a command without one has violations and never gets here
    return _transition(order, cmd), e.OrderCancelled(order.order_id, cmd.reason, cmd.note)
