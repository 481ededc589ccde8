"""Events: what happened, in the past tense. One per state change, recorded with it."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.commands import CancellationReason, OrderLine
from server.domain.money import Money


@dataclass(frozen=True)
class CustomerRegistered:
    customer_id: str
    display_name: str
    email: str
    credit_limit: Money


@dataclass(frozen=True)
class CustomerForgotten:
    """The customer's personal data was erased; carries none of it."""

    customer_id: str


@dataclass(frozen=True)
class CreditReserved:
    customer_id: str
    order_id: str
    amount: Money


@dataclass(frozen=True)
class CreditReleased:
    customer_id: str
    order_id: str
    amount: Money


@dataclass(frozen=True)
class StockAdded:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class StockReserved:
    product_id: str
    order_id: str
    quantity: int


@dataclass(frozen=True)
class StockReleased:
    product_id: str
    order_id: str
    quantity: int


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer_id: str
    lines: tuple[OrderLine, ...]
    total: Money


@dataclass(frozen=True)
class OrderConfirmed:
    order_id: str


@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    reason: CancellationReason
    note: str


@dataclass(frozen=True)
class OrderShipped:
    order_id: str


Event = (
    CustomerRegistered
    | CustomerForgotten
    | CreditReserved
    | CreditReleased
    | StockAdded
    | StockReserved
    | StockReleased
    | OrderPlaced
    | OrderConfirmed
    | OrderCancelled
    | OrderShipped
)
