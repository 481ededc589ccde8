"""A typed asyncio client for Orders: request ids, deadlines, safe retries, errors as exceptions."""

from clients.python.client import OrdersClient, OrdersError

__all__ = ["OrdersClient", "OrdersError"]
