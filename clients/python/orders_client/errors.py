"""Failed calls as exceptions: one class per gRPC status, each with the google.rpc details the
server sent (AIP-193) decoded from the `grpc-status-details-bin` trailer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

# The error domain of every ErrorInfo the Orders servers send.
DOMAIN = "orders.v1"
_DETAILS_KEY = "grpc-status-details-bin"
M = TypeVar("M", bound=Message)


class OrdersError(Exception):
    """A call that failed: its gRPC status code, message and `google.rpc.Status` details."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, code: grpc.StatusCode, message: str, status: status_pb2.Status | None = None,
                 trailing_metadata: Sequence[tuple[str, str | bytes]] = ()) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.trailing_metadata = tuple(trailing_metadata)

    def detail(self, kind: type[M]) -> M | None:
        """The first detail of type `kind` (e.g. `error_details_pb2.DebugInfo`), or None."""
        for packed in self.status.details if self.status else ():
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                return message
        return None

    @property
    def bad_request(self) -> error_details_pb2.BadRequest | None:
        return self.detail(error_details_pb2.BadRequest)

    @property
    def field_violations(self) -> dict[str, str]:
        """Each bad request field and what is wrong with it (INVALID_ARGUMENT)."""
        bad = self.bad_request
        return {v.field: v.description for v in bad.field_violations} if bad else {}

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        return self.detail(error_details_pb2.ErrorInfo)

    @property
    def reason(self) -> str | None:
        """The ErrorInfo reason, e.g. VERSION_CONFLICT, REQUEST_ID_REUSED, TOKEN_EXPIRED."""
        info = self.error_info
        return info.reason if info else None

    @property
    def domain(self) -> str | None:
        """The ErrorInfo domain: `orders.v1` for every error of the Orders servers."""
        info = self.error_info
        return info.domain if info else None

    @property
    def metadata(self) -> dict[str, str]:
        """The ErrorInfo metadata, e.g. {"expected": "1", "actual": "2"} for a version conflict."""
        info = self.error_info
        return dict(info.metadata) if info else {}

    @property
    def precondition_failure(self) -> error_details_pb2.PreconditionFailure | None:
        return self.detail(error_details_pb2.PreconditionFailure)

    @property
    def precondition_violations(self) -> list[tuple[str, str, str]]:
        """(type, subject, description) of each failed precondition, e.g. ("CREDIT_LIMIT", ...)."""
        failure = self.precondition_failure
        return [(v.type, v.subject, v.description) for v in failure.violations] if failure else []

    @property
    def resource_info(self) -> error_details_pb2.ResourceInfo | None:
        """Which resource was missing or taken (NOT_FOUND, ALREADY_EXISTS)."""
        return self.detail(error_details_pb2.ResourceInfo)

    @property
    def retry_info(self) -> error_details_pb2.RetryInfo | None:
        return self.detail(error_details_pb2.RetryInfo)

    @property
    def retry_delay(self) -> float | None:
        """Seconds the server asked the caller to wait before retrying, or None."""
        retry = self.retry_info
        return retry.retry_delay.ToNanoseconds() / 1e9 if retry else None


class InvalidArgumentError(OrdersError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(OrdersError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(OrdersError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(OrdersError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(OrdersError):
    code = grpc.StatusCode.ABORTED


class VersionConflictError(AbortedError):
    """A stale `expected_version`: read the aggregate again and redo the change."""

    @property
    def expected_version(self) -> int | None:
        value = self.metadata.get("expected")
        return int(value) if value is not None else None

    @property
    def actual_version(self) -> int | None:
        value = self.metadata.get("actual")
        return int(value) if value is not None else None


class ResourceExhaustedError(OrdersError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(OrdersError):
    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(OrdersError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(OrdersError):
    code = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceededError(OrdersError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CallCancelledError(OrdersError):
    """CANCELLED (named so as not to shadow asyncio.CancelledError)."""

    code = grpc.StatusCode.CANCELLED


class OutOfRangeError(OrdersError):
    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(OrdersError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(OrdersError):
    code = grpc.StatusCode.INTERNAL


class DataLossError(OrdersError):
    code = grpc.StatusCode.DATA_LOSS


class UnknownError(OrdersError):
    code = grpc.StatusCode.UNKNOWN


_BY_CODE: dict[grpc.StatusCode, type[OrdersError]] = {
    kind.code: kind
    for kind in (InvalidArgumentError, NotFoundError, AlreadyExistsError, FailedPreconditionError, AbortedError,
                 ResourceExhaustedError, UnavailableError, UnauthenticatedError, PermissionDeniedError,
                 DeadlineExceededError, CallCancelledError, OutOfRangeError, UnimplementedError, InternalError,
                 DataLossError, UnknownError)
}


def status_details(code: grpc.StatusCode, trailing_metadata: Sequence[tuple[str, Any]]) -> status_pb2.Status | None:
    """The `google.rpc.Status` in the trailers, if there is one that agrees with `code`."""
    for key, value in trailing_metadata:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                return None
            return status if status.code == code.value[0] else None
    return None


def error_from(code: grpc.StatusCode, message: str, trailing_metadata: Sequence[tuple[str, Any]] = ()) -> OrdersError:
    """The exception for a failed call's status and trailers."""
    trailers = tuple(trailing_metadata or ())
    status = status_details(code, trailers)
    kind = _BY_CODE.get(code, OrdersError)
    if kind is AbortedError and status is not None:
        info = next((d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)), None)
        if info is not None:
            unpacked = error_details_pb2.ErrorInfo()
            info.Unpack(unpacked)
            if unpacked.reason == "VERSION_CONFLICT":
                kind = VersionConflictError
    return kind(code, message, status, trailers)


def from_rpc_error(error: grpc.aio.AioRpcError) -> OrdersError:
    """The exception for a failed grpc.aio call."""
    return error_from(error.code(), error.details() or "", tuple(error.trailing_metadata() or ()))
