"""One table from what a call raises (domain errors, database failures, deadlines) to gRPC status
codes with google.rpc details (AIP-193)."""

from __future__ import annotations

import grpc
import psycopg
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain import errors
from server.platform import auth

DOMAIN = "orders.v1"


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _info(reason: str, **metadata: str) -> any_pb2.Any:
    return _any(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))


def _resource(exc: errors.NotFoundError | errors.AlreadyExistsError) -> any_pb2.Any:
    return _any(error_details_pb2.ResourceInfo(resource_type=exc.aggregate_type, resource_name=exc.aggregate_id))


class DeadlineExceededError(Exception):
    """The call's deadline leaves too little time to do its work."""


# The status of every failure but a domain rule's: a deadline that ran out, a database that did
# not answer, anything unexpected (whose message must tell the caller nothing of our code).
_CANCELLED_SQL = "the call did not finish within its deadline"
_NO_DATABASE = ("the database is unavailable; retry the call (a command with the same request_id, "
                "a WatchOrders stream with its last resume_token)")
_REPLICA_CONFLICT = ("the read replica cancelled this read to replay the primary's changes under it; "
                     "retry the call (a WatchOrders stream with its last resume_token)")
_INTERNAL = "internal error; the server logged it under this call's correlation id"


def status_of(exc: Exception, **metadata: str) -> status_pb2.Status:
    """The one table from what a call raised to the status its caller sees; `metadata` (e.g. a
    stream's resume token) joins the ErrorInfo of rows that have one. Not in the table: INTERNAL."""
    match exc:
        case errors.InvalidArgumentError():
            return _bad_request(exc)
        case errors.RequestIdReusedError():
            return _status(code_pb2.INVALID_ARGUMENT, str(exc), _info("REQUEST_ID_REUSED", request_id=exc.request_id,
                                                                       **metadata))
        case errors.VersionConflictError():
            info = _info("VERSION_CONFLICT", expected=str(exc.expected), actual=str(exc.actual), **metadata)
            return _status(code_pb2.ABORTED, str(exc), info)
        case errors.NotFoundError():
            return _status(code_pb2.NOT_FOUND, str(exc), _resource(exc))
        case errors.AlreadyExistsError():
            return _status(code_pb2.ALREADY_EXISTS, str(exc), _resource(exc))
        case errors.PreconditionFailedError():
            return _precondition_failed(exc)
        case auth.UnauthenticatedError():
            return _status(code_pb2.UNAUTHENTICATED, str(exc), _info(exc.reason, **metadata))
        case auth.PermissionDeniedError():
            return _status(code_pb2.PERMISSION_DENIED, str(exc), _info(exc.reason, **exc.metadata, **metadata))
        case DeadlineExceededError():
            return _status(code_pb2.DEADLINE_EXCEEDED, str(exc), _info("DEADLINE_EXCEEDED", **metadata))
        # Before OperationalError, its base: a statement cancelled by the timeout the deadline set.
        case psycopg.errors.QueryCanceled():
            return _status(code_pb2.DEADLINE_EXCEEDED, _CANCELLED_SQL, _info("DEADLINE_EXCEEDED", **metadata))
        # A hot standby cancels a read that holds up its replay (SQLSTATE 40001, or 57P04 for a
        # dropped database): the data is there, the read only has to run again.
        case psycopg.errors.SerializationFailure() | psycopg.errors.DatabaseDropped() \
                if "conflict with recovery" in str(exc):
            return _status(code_pb2.UNAVAILABLE, _REPLICA_CONFLICT, _info("REPLICA_CONFLICT", **metadata))
        # PoolTimeout is an OperationalError too: no connection before the deadline, often because
        # the database is down; either way the caller retries the same call.
        case psycopg.OperationalError():
            return _status(code_pb2.UNAVAILABLE, _NO_DATABASE, _info("DATABASE_UNAVAILABLE", **metadata))
    return internal(_INTERNAL)


def _status(code: int, message: str, *details: any_pb2.Any) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message, details=details)


def _bad_request(exc: errors.InvalidArgumentError) -> status_pb2.Status:
    violations = [error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                  for v in exc.violations]
    return _status(code_pb2.INVALID_ARGUMENT, str(exc), _any(error_details_pb2.BadRequest(field_violations=violations)))


def _precondition_failed(exc: errors.PreconditionFailedError) -> status_pb2.Status:
    violation = error_details_pb2.PreconditionFailure.Violation(type=exc.kind, subject=exc.subject,
                                                                description=exc.description)
    return _status(code_pb2.FAILED_PRECONDITION, str(exc), _any(error_details_pb2.PreconditionFailure(violations=[violation])))


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
