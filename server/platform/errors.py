"""One table from domain errors to gRPC status codes with google.rpc details (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain import errors

DOMAIN = "orders.v1"


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _info(reason: str, **metadata: str) -> any_pb2.Any:
    return _any(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))


def _resource(exc: errors.NotFoundError | errors.AlreadyExistsError) -> any_pb2.Any:
    return _any(error_details_pb2.ResourceInfo(resource_type=exc.aggregate_type, resource_name=exc.aggregate_id))


def to_status(exc: errors.DomainError) -> status_pb2.Status:
    """The rich status for a domain error; every DomainError subclass has a row here."""
    match exc:
        case errors.InvalidArgumentError():
            details = [
                _any(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                            for v in exc.violations
                        ]
                    )
                )
            ]
            return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc), details=details)
        case errors.RequestIdReusedError():
            details = [_info("REQUEST_ID_REUSED", request_id=exc.request_id)]
            return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc), details=details)
        case errors.VersionConflictError():
            details = [_info("VERSION_CONFLICT", expected=str(exc.expected), actual=str(exc.actual))]
            return status_pb2.Status(code=code_pb2.ABORTED, message=str(exc), details=details)
        case errors.NotFoundError():
            return status_pb2.Status(code=code_pb2.NOT_FOUND, message=str(exc), details=[_resource(exc)])
        case errors.AlreadyExistsError():
            return status_pb2.Status(code=code_pb2.ALREADY_EXISTS, message=str(exc), details=[_resource(exc)])
        case errors.PreconditionFailedError():
            violation = error_details_pb2.PreconditionFailure.Violation(
                type=exc.kind, subject=exc.subject, description=exc.description
            )
            details = [_any(error_details_pb2.PreconditionFailure(violations=[violation]))]
            return status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=str(exc), details=details)
    raise TypeError(f"no status for {type(exc).__name__}")  # pragma: no cover


def unavailable(message: str, reason: str, **metadata: str) -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[_info(reason, **metadata)])


def resource_exhausted(message: str, reason: str, **metadata: str) -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[_info(reason, **metadata)])


def overloaded(message: str, limit: int, retry_delay_seconds: float) -> status_pb2.Status:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromNanoseconds(int(retry_delay_seconds * 1e9))
    return status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message,
                             details=[_info("OVERLOADED", limit=str(limit)), _any(retry)])


def invalid(message: str, reason: str, **metadata: str) -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[_info(reason, **metadata)])


def internal(message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message=message)


async def abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    """Ends the call with `status`; abort() (not abort_with_status) keeps tracing's code right,
    and trailers set earlier (the correlation id) go out beside the status details."""
    st = rpc_status.to_status(status)
    await context.abort(st.code, st.details, (*(context.trailing_metadata() or ()), *st.trailing_metadata))
