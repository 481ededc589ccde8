"""The saga's steps as CommandService calls, over gRPC like any other client: the request a step
sends (the same bytes every time it is sent), and what the answer means for the saga."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import context
from opentelemetry.trace import SpanKind, StatusCode

from orders.v1 import command_service_pb2 as pb
from orders.v1 import command_service_pb2_grpc as pb_grpc
from server import telemetry
from server.platform import serving, wire
from server.saga.model import Kind, Saga, Step

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Done:
    """The command took effect (now, or the first time this request id was sent)."""

    version: int


@dataclasses.dataclass(frozen=True)
class Refused:
    """The command took no effect and never will: `reason` says why (CREDIT_LIMIT, NOT_FOUND, ...)."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Conflict:
    """The aggregate was at another version: no effect; the step may be sent at `actual`."""

    actual: int


@dataclasses.dataclass(frozen=True)
class Unknown:
    """No answer that says what happened (unreachable, timed out, overloaded): send it again later."""

    code: str


Outcome = Done | Refused | Conflict | Unknown


def request_for(saga: Saga, step: Step) -> Message:
    """The request of `step`: built from the saga's stored state alone, so it is the same
    whenever the step is sent (the server answers a repeat with its first response)."""
    rid, expected = step.request_id, step.expected_version
    match step.kind:
        case Kind.RESERVE_CREDIT:
            return pb.ReserveCreditRequest(request_id=rid, expected_version=expected, customer_id=step.target,
                                           amount=wire.money_to_proto(saga.total), order_id=saga.order_id)
        case Kind.RELEASE_CREDIT:
            return pb.ReleaseCreditRequest(request_id=rid, expected_version=expected, customer_id=step.target,
                                           amount=wire.money_to_proto(saga.total), order_id=saga.order_id)
        case Kind.RESERVE_STOCK:
            return pb.ReserveStockRequest(request_id=rid, expected_version=expected, product_id=step.target,
                                          quantity=saga.lines[step.line].quantity, order_id=saga.order_id)
        case Kind.RELEASE_STOCK:
            return pb.ReleaseStockRequest(request_id=rid, expected_version=expected, product_id=step.target,
                                          quantity=saga.stock_reserved[step.line], order_id=saga.order_id)
        case Kind.CONFIRM_ORDER:
            return pb.ConfirmOrderRequest(request_id=rid, expected_version=expected, order_id=saga.order_id)
        case Kind.CANCEL_ORDER:
            return pb.CancelOrderRequest(request_id=rid, expected_version=expected, order_id=saga.order_id,
                                         reason=wire.REASON_NUMBERS[saga.cancellation], note=saga.note)
    raise AssertionError(step.kind)


class TokenFile:
    """The saga's service token, read from its file and read again when the file changes (so a
    rotated token is picked up without a restart)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple[float, str] | None = None

    def metadata(self) -> list[tuple[str, str]]:
        if self.path is None:
            return []
        mtime = self.path.stat().st_mtime
        if self._seen is None or self._seen[0] != mtime:
            self._seen = (mtime, self.path.read_text().strip())
        return [(serving.AUTHORIZATION_KEY, f"Bearer {self._seen[1]}")]


class Commands:
    """Sends steps to CommandService; every call is a span in the order's trace, with the order's
    correlation id and the step's cause (an event id) in metadata for the server to record."""

    def __init__(self, channel: grpc.aio.Channel, token: TokenFile) -> None:
        self._stub = pb_grpc.CommandServiceStub(channel)
        self._token = token

    async def send(self, saga: Saga, step: Step) -> Outcome:
        request = request_for(saga, step)
        parent = telemetry.event_context(dict(step.trace))
        attributes = {"orders.order_id": saga.order_id, "orders.saga.step": step.name,
                      "orders.request_id": step.request_id, "rpc.method": step.kind.method}
        with telemetry.tracer.start_as_current_span(f"saga {step.name}", context=parent, kind=SpanKind.INTERNAL,
                                                    attributes=attributes) as span, \
                telemetry.ids(saga.correlation_id, step.caused_by):
            headers: dict[str, str] = {}
            telemetry.inject_into(headers, context.get_current())
            try:
                token = self._token.metadata()
            except OSError as exc:
                log.error("the saga's token file cannot be read", extra={"error": repr(exc)})
                span.set_status(StatusCode.ERROR, "token file unreadable")
                return Unknown("TOKEN_FILE_UNREADABLE")
            metadata = [*headers.items(), (serving.TENANT_KEY, saga.tenant_id),
                        (serving.CORRELATION_KEY, saga.correlation_id), (serving.CAUSATION_KEY, step.caused_by),
                        *token]
            started = time.monotonic()
            try:
                response = await getattr(self._stub, step.kind.method)(request, metadata=metadata,
                                                                        timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as error:
                outcome = classify(error)
                span.set_attribute("orders.saga.outcome", type(outcome).__name__.lower())
                if isinstance(outcome, Unknown):
                    span.set_status(StatusCode.ERROR, outcome.code)
                return outcome
            finally:
                span.set_attribute("orders.saga.call_seconds", time.monotonic() - started)
            return Done(int(response.version))


def classify(error: grpc.aio.AioRpcError) -> Outcome:
    """What a refused call means for the saga."""
    code = error.code()
    status = rpc_status.from_call(error)
    if code == grpc.StatusCode.ABORTED and status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.reason == "VERSION_CONFLICT" and info.metadata.get("actual", "").isdigit():
                return Conflict(int(info.metadata["actual"]))
    if code == grpc.StatusCode.FAILED_PRECONDITION and status is not None:
        for detail in status.details:
            failure = error_details_pb2.PreconditionFailure()
            if detail.Unpack(failure) and failure.violations:
                return Refused(failure.violations[0].type)
        return Refused("FAILED_PRECONDITION")
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS):
        return Refused(code.name)
    return Unknown(code.name)


def channel(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, credentials)

