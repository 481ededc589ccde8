"""The error table: every row, from the exception a call raises to the code and the google.rpc
details its caller reads; and the interceptor that applies it to every call, logging once."""

from __future__ import annotations

import ast
import asyncio
import logging
import re
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from psycopg_pool import PoolTimeout

from server.domain import errors as domain
from server.domain.errors import FieldViolation
from server.platform import auth, errors, serving

BadRequest = error_details_pb2.BadRequest
ErrorInfo = error_details_pb2.ErrorInfo
PreconditionFailure = error_details_pb2.PreconditionFailure
ResourceInfo = error_details_pb2.ResourceInfo

ROWS: list[tuple[Exception, int, list[type[Message]], str]] = [
    (domain.InvalidArgumentError([FieldViolation("page_token", "is forged")]), code_pb2.INVALID_ARGUMENT, [BadRequest], ""),
    (domain.InvalidCommandError([FieldViolation("order_id", "must be set")]), code_pb2.INVALID_ARGUMENT, [BadRequest], ""),
    (domain.RequestIdReusedError("r-1"), code_pb2.INVALID_ARGUMENT, [ErrorInfo], "REQUEST_ID_REUSED"),
    (domain.VersionConflictError("order", "o-1", 1, 2), code_pb2.ABORTED, [ErrorInfo], "VERSION_CONFLICT"),
    (domain.NotFoundError("order", "o-1"), code_pb2.NOT_FOUND, [ResourceInfo], ""),
    (domain.AlreadyExistsError("order", "o-1"), code_pb2.ALREADY_EXISTS, [ResourceInfo], ""),
    (domain.PreconditionFailedError("ORDER_STATE", "orders/o-1", "no"), code_pb2.FAILED_PRECONDITION,
     [PreconditionFailure], ""),
    (errors.DeadlineExceededError("too little time"), code_pb2.DEADLINE_EXCEEDED, [ErrorInfo], "DEADLINE_EXCEEDED"),
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), code_pb2.DEADLINE_EXCEEDED,
     [ErrorInfo], "DEADLINE_EXCEEDED"),
    (psycopg.OperationalError("connection refused"), code_pb2.UNAVAILABLE, [ErrorInfo], "DATABASE_UNAVAILABLE"),
    (PoolTimeout("couldn't get a connection after 1.00 sec"), code_pb2.UNAVAILABLE, [ErrorInfo], "DATABASE_UNAVAILABLE"),
    (psycopg.errors.SerializationFailure("canceling statement due to conflict with recovery"), code_pb2.UNAVAILABLE,
     [ErrorInfo], "REPLICA_CONFLICT"),
    (psycopg.errors.SerializationFailure("could not serialize access"), code_pb2.UNAVAILABLE, [ErrorInfo],
     "DATABASE_UNAVAILABLE"),
    (psycopg.errors.UniqueViolation("duplicate key"), code_pb2.INTERNAL, [], ""),
    (domain.DomainError("a rule with no row"), code_pb2.INTERNAL, [], ""),
    (RuntimeError("boom"), code_pb2.INTERNAL, [], ""),
]


def details_of(status: status_pb2.Status) -> list[Message]:
    found: list[Message] = []
    for packed in status.details:
        for kind in (BadRequest, ErrorInfo, PreconditionFailure, ResourceInfo):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found.append(message)
    return found


@pytest.mark.parametrize(("raised", "code", "detail_types", "reason"), ROWS, ids=[type(r[0]).__name__ for r in ROWS])
def test_each_exception_gets_its_code_and_details(
    raised: Exception, code: int, detail_types: list[type[Message]], reason: str
) -> None:
    status = errors.status_of(raised)

    assert code_pb2.Code.Name(status.code) == code_pb2.Code.Name(code)
    details = details_of(status)
    assert [type(d) for d in details] == detail_types
    infos = [d for d in details if isinstance(d, ErrorInfo)]
    assert [(i.reason, i.domain) for i in infos] == ([(reason, "orders.v1")] if reason else [])


def test_a_bad_request_names_every_bad_field() -> None:
    raised = domain.InvalidArgumentError([FieldViolation("page_size", "must not be negative"),
                                          FieldViolation("state", "is not an OrderState value")])

    [bad_request] = details_of(errors.status_of(raised))

    assert isinstance(bad_request, BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["page_size", "state"]


def test_a_version_conflict_says_which_version_was_expected_and_which_is_current() -> None:
    [info] = details_of(errors.status_of(domain.VersionConflictError("order", "o-1", 1, 3)))

    assert isinstance(info, ErrorInfo)
    assert dict(info.metadata) == {"expected": "1", "actual": "3"}


def test_metadata_given_with_the_exception_joins_its_error_info() -> None:
    [info] = details_of(errors.status_of(psycopg.OperationalError("gone"), resume_token="t-1"))

    assert isinstance(info, ErrorInfo)
    assert dict(info.metadata) == {"resume_token": "t-1"}


# AIP-193: a reason is UPPER_SNAKE_CASE, at most 63 characters, unique within its domain.
REASON_FORM = re.compile(r"[A-Z][A-Z0-9_]+[A-Z0-9]")
SERVER = Path(__file__).resolve().parents[2] / "server"
# The calls that take a reason as their first argument, and the one that takes it second.
REASON_FIRST = {"_info", "UnauthenticatedError", "PermissionDeniedError"}
REASON_SECOND = {"unavailable", "resource_exhausted", "invalid"}


def reasons_in_server_code() -> set[str]:
    """Every reason the server code names; a variable passing one on (exc.reason) is not one."""
    found: set[object] = set()
    for path in SERVER.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # A reason is a literal, or a module constant (WATCH_LIMIT = "WATCH_LIMIT").
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}

        def value(arg: ast.expr) -> object:
            return arg.value if isinstance(arg, ast.Constant) else constants.get(getattr(arg, "id", ""), arg)

        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                at = 0 if name in REASON_FIRST else 1 if name in REASON_SECOND else None
                if at is not None and len(node.args) > at:
                    found.add(value(node.args[at]))
            # PyJWT's refusals are a table of (exception, reason, message).
            if isinstance(node, ast.Tuple) and len(node.elts) == 3 and str(value(node.elts[1])).startswith("TOKEN_"):
                found.add(value(node.elts[1]))
    return {r for r in found if isinstance(r, str)}


def test_every_error_reason_in_the_server_has_the_form_aip_193_asks_for() -> None:
    reasons = reasons_in_server_code()

    assert {"VERSION_CONFLICT", "OVERLOADED", "WATCH_LIMIT", "TOKEN_EXPIRED", "SCOPE_MISSING"} <= reasons
    assert sorted(r for r in reasons if not (REASON_FORM.fullmatch(r) and len(r) <= 63)) == []


@pytest.mark.parametrize("status", [
    errors.unavailable("stopping", "SHUTTING_DOWN", resume_token="t-1"),
    errors.resource_exhausted("too many streams", "WATCH_LIMIT", limit="per_tenant"),
    errors.overloaded("busy", limit=8, retry_delay_seconds=0.5),
    errors.invalid("not protobuf", "UNDECODABLE_REQUEST"),
    errors.status_of(auth.UnauthenticatedError("TOKEN_MISSING", "no token")),
    errors.status_of(auth.PermissionDeniedError("SCOPE_MISSING", "no scope", required_scope="orders.write")),
], ids=["unavailable", "resource_exhausted", "overloaded", "invalid", "unauthenticated", "permission_denied"])
def test_every_error_info_names_the_orders_domain(status: status_pb2.Status) -> None:
    infos = [d for d in details_of(status) if isinstance(d, ErrorInfo)]

    assert [i.domain for i in infos] == [errors.DOMAIN] == ["orders.v1"]


@pytest.mark.parametrize("raised", [RuntimeError("/srv/orders/secret.py line 3"),
                                    psycopg.errors.UndefinedColumn("column \"secret\" does not exist"),
                                    psycopg.OperationalError("password authentication failed for user \"x\""),
                                    psycopg.errors.QueryCanceled("canceling statement: SELECT secret")])
def test_a_status_message_never_repeats_what_an_unexpected_or_database_error_said(raised: Exception) -> None:
    status = errors.status_of(raised)

    assert str(raised) not in status.message
    assert "secret" not in status.message and "password" not in status.message


# --- applied to every call by the server skeleton ---------------------------------------------


class Aborted(Exception):
    pass


class FakeContext:
    """Records how the call was ended."""

    def __init__(self) -> None:
        self.ended: tuple[grpc.StatusCode, str] | None = None

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str, metadata: object = ()) -> None:
        self.ended = (code, details)
        raise Aborted


def call_failing_with(raised: Exception) -> FakeContext:
    async def method(request: object, context: object) -> object:
        raise raised

    handler = serving.ErrorMapping().wrap("/orders.v1.CommandService/PlaceOrder", grpc.unary_unary_rpc_method_handler(method))
    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(handler.unary_unary(object(), context))
    return context


def test_an_unexpected_exception_ends_the_call_internal_and_is_logged_once_with_its_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = call_failing_with(KeyError("/srv/secret"))

    assert context.ended is not None
    assert context.ended[0] == grpc.StatusCode.INTERNAL and "secret" not in context.ended[1]
    [record] = [r for r in caplog.records if r.name == serving.__name__]
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_a_domain_error_ends_the_call_with_its_row_and_is_logged_without_a_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    context = call_failing_with(domain.NotFoundError("order", "o-1"))

    assert context.ended is not None and context.ended[0] == grpc.StatusCode.NOT_FOUND
    [record] = [r for r in caplog.records if r.name == serving.__name__]
    assert record.levelno == logging.INFO and record.exc_info is None


@pytest.mark.parametrize("raised", [grpc.aio.UsageError("Abort already called!"), grpc.aio.InternalError("batch failed")])
def test_grpcs_own_errors_pass_through_unmapped_and_unlogged(raised: Exception, caplog: pytest.LogCaptureFixture) -> None:
    """A method whose abort failed because its client has gone raises gRPC's own error: gRPC
    knows the call is over and drops it; mapping it would abort a second time and log an error."""
    caplog.set_level(logging.INFO)

    async def method(request: object, context: object) -> object:
        raise raised

    handler = serving.ErrorMapping().wrap("/orders.v1.QueryService/WatchOrders", grpc.unary_unary_rpc_method_handler(method))
    context = FakeContext()
    with pytest.raises(type(raised)):
        asyncio.run(handler.unary_unary(object(), context))

    assert context.ended is None
    assert [r for r in caplog.records if r.name == serving.__name__] == []
