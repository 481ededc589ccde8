"""Bad input never hurts the service: generated requests and raw bytes sent to every method get
clean errors with details, write nothing, and leave the servers SERVING."""

from __future__ import annotations

import grpc
import psycopg
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orders.v1 import command_service_pb2, query_service_pb2
from tests.e2e.client import channel
from tests.harness import Stack, serving

pytestmark = pytest.mark.e2e

SERVICES = [command_service_pb2.DESCRIPTOR.services_by_name["CommandService"],
            query_service_pb2.DESCRIPTOR.services_by_name["QueryService"]]
METHODS = [(service, method) for service in SERVICES for method in service.methods]
# Codes a caller can act on; a generated request may by chance be valid and meet a domain rule.
CLEAN = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCALARS = {
    FieldDescriptor.TYPE_STRING: st.one_of(
        st.text(max_size=80), st.just(""), st.text(alphabet="abc-_.:09", min_size=1, max_size=70), st.just("x" * 300_000)
    ),
    FieldDescriptor.TYPE_INT64: st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 3)),
    FieldDescriptor.TYPE_INT32: st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-3, 3)),
    FieldDescriptor.TYPE_ENUM: st.integers(-5, 10),
}


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, object]]:
    """Any message of this type: every field absent, extreme, malformed or plausible."""
    fields: dict[str, st.SearchStrategy[object]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            if depth > 2 or field.message_type.full_name.startswith("google."):
                continue
            value: st.SearchStrategy[object] = messages(field.message_type, depth + 1)
        else:
            value = SCALARS[field.type]
        fields[field.name] = st.lists(value, max_size=4) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=fields)


def build(cls: type[Message], values: dict[str, object]) -> Message:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = field.message_type._concrete_class  # type: ignore[union-attr]
            if isinstance(value, list):
                getattr(message, name).extend(build(sub, v) for v in value)
            else:
                getattr(message, name).CopyFrom(build(sub, value))  # type: ignore[arg-type]
        elif isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


requests = st.sampled_from(METHODS).flatmap(
    lambda sm: messages(sm[1].input_type).map(lambda v, sm=sm: (sm, build(sm[1].input_type._concrete_class, v)))  # type: ignore[misc]
)


def writes(db: psycopg.Connection) -> tuple[int, int]:
    row = db.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM idempotency)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def call(stack: Stack, service: object, method: object, payload: bytes) -> grpc.RpcError | None:
    addr = stack.command_addr if service is SERVICES[0] else stack.query_addr
    with channel(addr, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]) as fuzzed:
        path = f"/{service.full_name}/{method.name}"  # type: ignore[attr-defined]
        try:
            if method.server_streaming:  # type: ignore[attr-defined]
                # A valid watch streams for ever; its first message (a heartbeat at the latest) shows it is fine.
                stream = fuzzed.unary_stream(path)(payload, timeout=10, metadata=(("x-tenant-id", "fuzz"),))
                next(stream)
                stream.cancel()
            else:
                fuzzed.unary_unary(path)(payload, timeout=10, metadata=(("x-tenant-id", "fuzz"),))
        except grpc.RpcError as error:
            return error
    return None


def assert_clean(error: grpc.RpcError) -> None:
    assert error.code() in CLEAN, (error.code(), error.details())
    assert "Traceback" not in (error.details() or "")
    assert rpc_status.from_call(error) is not None, f"{error.code()} without google.rpc details"


def check_outcome(service: object, error: grpc.RpcError | None, before: tuple[int, int], after: tuple[int, int]) -> None:
    """A failure is clean and writes nothing; a success was a valid call: a query writes nothing,
    a command at most its one event and its one idempotency record (none if it was a replay)."""
    if error is not None:
        assert_clean(error)
        assert after == before
        return
    most = 1 if service is SERVICES[0] else 0
    assert all(0 <= a - b <= most for a, b in zip(after, before)), (before, after)


def assert_still_serving(stack: Stack) -> None:
    assert serving(stack.command_addr) and serving(stack.query_addr)
    assert "Traceback" not in stack.log("command-server") + stack.log("query-server")


def test_generated_requests_get_clean_errors_and_failures_write_nothing(
    stack: Stack, db: psycopg.Connection
) -> None:
    errors: list[grpc.StatusCode] = []

    @SETTINGS
    @given(requests)
    def barrage(case: tuple[tuple[object, object], Message]) -> None:
        (service, method), request = case
        before = writes(db)

        error = call(stack, service, method, request.SerializeToString())

        check_outcome(service, error, before, writes(db))
        if error is not None:
            errors.append(error.code())

    barrage()
    assert grpc.StatusCode.INVALID_ARGUMENT in errors  # the barrage did reach the validation
    assert_still_serving(stack)


def test_random_bytes_get_clean_errors_and_write_nothing(
    stack: Stack, db: psycopg.Connection
) -> None:
    errors: list[grpc.StatusCode] = []

    @SETTINGS
    @given(st.sampled_from(METHODS), st.binary(max_size=2048))
    def barrage(method: tuple[object, object], payload: bytes) -> None:
        before = writes(db)

        error = call(stack, method[0], method[1], payload)

        check_outcome(method[0], error, before, writes(db))
        if error is not None:
            errors.append(error.code())

    barrage()
    assert grpc.StatusCode.INVALID_ARGUMENT in errors  # the barrage did reach the validation
    assert_still_serving(stack)
