"""orders-client: a typed asyncio client for the Orders gRPC services.

`OrdersClient` covers every RPC of orders.v1.CommandService and QueryService; failures raise the
`OrdersError` subclass of their status, with the google.rpc details decoded. The messages are the
generated `orders.v1` modules this distribution ships (`from orders.v1 import types_pb2`)."""

from orders_client.channel import RetryPolicy, Tls
from orders_client.client import OrdersClient, new_request_id
from orders_client.errors import (
    DOMAIN,
    AbortedError,
    AlreadyExistsError,
    CallCancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OrdersError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    VersionConflictError,
)
from orders_client.money import money
from orders_client.watch import OrderSubscription, Reconnect

__all__ = [
    "DOMAIN", "AbortedError", "AlreadyExistsError", "CallCancelledError", "DataLossError", "DeadlineExceededError",
    "FailedPreconditionError", "InternalError", "InvalidArgumentError", "NotFoundError", "OrderSubscription",
    "OrdersClient", "OrdersError", "OutOfRangeError", "PermissionDeniedError", "Reconnect", "ResourceExhaustedError",
    "RetryPolicy", "Tls", "UnauthenticatedError", "UnavailableError", "UnimplementedError", "UnknownError",
    "VersionConflictError", "money", "new_request_id",
]
