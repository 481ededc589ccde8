"""What a handler may do within its command: read an aggregate, stage its change, record the event.
The PostgreSQL unit of work (store.Session) writes them together; tests use an in-memory one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from server.domain.errors import DomainError
from server.domain.events import Event
from server.domain.model import Customer, Order, Product

Aggregate = Customer | Product | Order


@dataclass(frozen=True)
class Written:
    """What a command changed: the aggregate and the version it is at now."""

    aggregate_type: str
    aggregate_id: str
    version: int


class UnitOfWork(Protocol):
    """One command's reads and its one change with its event; the caller commits."""

    async def customer(self, customer_id: str) -> Customer | None: ...

    async def product(self, product_id: str) -> Product | None: ...

    async def order(self, order_id: str) -> Order | None: ...

    def insert(self, aggregate: Aggregate, missing_reference: Callable[[], DomainError] | None = None) -> Written:
        """A new aggregate; the commit fails with ALREADY_EXISTS if its id is taken, and with the
        error `missing_reference` makes if a row it refers to does not exist."""
        ...

    def update(self, aggregate: Aggregate, expected: int) -> Written:
        """A changed aggregate, saved only if it is still at version `expected` when committed."""
        ...

    def unchanged(self, aggregate: Aggregate) -> Written:
        """No change and no event: the command's answer is the aggregate as it is (only its
        request id is recorded)."""
        ...

    def record(self, event: Event) -> None:
        """The event of the change, written with it (the outbox row)."""
        ...
