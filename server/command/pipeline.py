"""The command pipeline: one typed route per RPC (request -> command -> handler -> response), and
the run that takes a request down its route in one PostgreSQL unit of work."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry import trace

from orders.v1 import command_service_pb2 as pb
from server import telemetry
from server.command import handlers, store
from server.command.group_commit import GroupCommit
from server.command.unit_of_work import UnitOfWork, Written
from server.domain import commands as c
from server.domain.errors import InvalidCommandError, RequestIdReusedError, VersionConflictError
from server.platform import errors, serving, tokens, wire

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_SECONDS = 10.0
MIN_USEFUL_SECONDS = 0.005
UNCONDITIONAL_ATTEMPTS = 10

Req = TypeVar("Req", bound=Message)
Cmd = TypeVar("Cmd", bound=c.Command)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class Route(Generic[Req, Cmd, Resp]):
    """One RPC: its method name (kept with the request id, so a replay must name the same one),
    its request's command, the command's handler, and its response from what the handler wrote
    and the consistency token a query can wait on."""

    method: str
    to_command: Callable[[Req], Cmd]
    handle: Callable[[UnitOfWork, Cmd], Awaitable[Written]]
    response: type[Resp]
    reply: Callable[[Written, str], Resp]
    # A command that names no expected_version (ForgetCustomer): a version conflict means the
    # aggregate moved between its read and its write, so it is read and decided again.
    unconditional: bool = False


REGISTER_CUSTOMER = Route(
    "RegisterCustomer", wire.to_register_customer, handlers.register_customer, pb.RegisterCustomerResponse,
    lambda w, token: pb.RegisterCustomerResponse(customer_id=w.aggregate_id, version=w.version, consistency_token=token))
FORGET_CUSTOMER = Route(
    "ForgetCustomer", wire.to_forget_customer, handlers.forget_customer, pb.ForgetCustomerResponse,
    lambda w, token: pb.ForgetCustomerResponse(customer_id=w.aggregate_id, version=w.version, consistency_token=token),
    unconditional=True)
RESERVE_CREDIT = Route(
    "ReserveCredit", wire.to_reserve_credit, handlers.reserve_credit, pb.ReserveCreditResponse,
    lambda w, token: pb.ReserveCreditResponse(customer_id=w.aggregate_id, version=w.version, consistency_token=token))
RELEASE_CREDIT = Route(
    "ReleaseCredit", wire.to_release_credit, handlers.release_credit, pb.ReleaseCreditResponse,
    lambda w, token: pb.ReleaseCreditResponse(customer_id=w.aggregate_id, version=w.version, consistency_token=token))
ADD_STOCK = Route(
    "AddStock", wire.to_add_stock, handlers.add_stock, pb.AddStockResponse,
    lambda w, token: pb.AddStockResponse(product_id=w.aggregate_id, version=w.version, consistency_token=token))
RESERVE_STOCK = Route(
    "ReserveStock", wire.to_reserve_stock, handlers.reserve_stock, pb.ReserveStockResponse,
    lambda w, token: pb.ReserveStockResponse(product_id=w.aggregate_id, version=w.version, consistency_token=token))
RELEASE_STOCK = Route(
    "ReleaseStock", wire.to_release_stock, handlers.release_stock, pb.ReleaseStockResponse,
    lambda w, token: pb.ReleaseStockResponse(product_id=w.aggregate_id, version=w.version, consistency_token=token))
PLACE_ORDER = Route(
    "PlaceOrder", wire.to_place_order, handlers.place_order, pb.PlaceOrderResponse,
    lambda w, token: pb.PlaceOrderResponse(order_id=w.aggregate_id, version=w.version, consistency_token=token))
CONFIRM_ORDER = Route(
    "ConfirmOrder", wire.to_confirm_order, handlers.confirm_order, pb.ConfirmOrderResponse,
    lambda w, token: pb.ConfirmOrderResponse(order_id=w.aggregate_id, version=w.version, consistency_token=token))
SHIP_ORDER = Route(
    "ShipOrder", wire.to_ship_order, handlers.ship_order, pb.ShipOrderResponse,
    lambda w, token: pb.ShipOrderResponse(order_id=w.aggregate_id, version=w.version, consistency_token=token))
CANCEL_ORDER = Route(
    "CancelOrder", wire.to_cancel_order, handlers.cancel_order, pb.CancelOrderResponse,
    lambda w, token: pb.CancelOrderResponse(order_id=w.aggregate_id, version=w.version, consistency_token=token))

ROUTES: tuple[Route[Any, Any, Any], ...] = (
    REGISTER_CUSTOMER, FORGET_CUSTOMER, RESERVE_CREDIT, RELEASE_CREDIT, ADD_STOCK, RESERVE_STOCK, RELEASE_STOCK,
    PLACE_ORDER, CONFIRM_ORDER, SHIP_ORDER, CANCEL_ORDER,
)


class Pipeline:
    """Runs one command: check it, read the aggregate (and any earlier use of the request id),
    decide, then write the claim with its response, the change and the event in one statement,
    in a group with the writes of commands that arrive with it (group_commit). A request id used
    before answers with the first response; what it raises, the serving layer's error table
    answers."""

    def __init__(self, group: GroupCommit, token_key: bytes, kek: bytes) -> None:
        self._group = group
        self._kek = kek  # wraps each new customer's data key (platform.personal)
        self._token_key = token_key  # signs consistency tokens, for the query servers to verify

    async def run(self, route: Route[Req, Cmd, Resp], request: Req, context: grpc.aio.ServicerContext) -> Resp:
        request_id: str = request.request_id  # type: ignore[attr-defined]  # every command request has one
        cmd = route.to_command(request)
        tenant_id = serving.tenant_of(context)
        violations = wire.request_id_violations(request_id) + cmd.violations()
        if violations:
            raise InvalidCommandError(violations)
        ctx = wire.EventContext(tenant_id, telemetry.correlation_id() or str(uuid.uuid4()),
                                causation_id=telemetry.causation_id() or request_id, actor=serving.actor_of(context),
                                request_id=request_id)
        digest = wire.request_hash(route.method, request)
        budget = _budget(context)
        db = self._group.command()
        try:
            for attempt in range(1, UNCONDITIONAL_ATTEMPTS + 1):
                session = store.Session(db, ctx, request_id, route.method, digest, timeout_ms=budget * 1000, kek=self._kek)
                try:
                    response = await _apply(route, session, cmd, self._token_key)
                    break
                except VersionConflictError:
                    if not route.unconditional or attempt == UNCONDITIONAL_ATTEMPTS:
                        raise
        except store.Replayed as replay:
            prior = replay.prior
            # A forgotten customer's registration keeps its response but no hash of the
            # personal fields it was made from: a replay of it still answers.
            same = prior is not None and prior.method == route.method and prior.request_hash in (
                digest, store.FORGOTTEN_HASH)
            if prior is None or not same or prior.response is None:
                raise RequestIdReusedError(request_id) from None
            return route.response.FromString(prior.response)
        finally:
            db.close()
        return response


def _budget(context: grpc.aio.ServicerContext) -> float:
    """Seconds left for the command: the caller's deadline, else the default."""
    remaining = context.time_remaining()
    budget = DEFAULT_DEADLINE_SECONDS if remaining is None else float(remaining)
    if budget < MIN_USEFUL_SECONDS:
        raise errors.DeadlineExceededError("too little time left to run the command")
    return budget


async def _apply(route: Route[Any, Cmd, Resp], session: store.Session, cmd: Cmd, token_key: bytes) -> Resp:
    written = await route.handle(session, cmd)
    write = tokens.ConsistencyToken(written.aggregate_type, written.aggregate_id, written.version)
    response = route.reply(written, tokens.sign_consistency(token_key, session.ctx.tenant_id, write))
    await session.commit(response.SerializeToString())
    # On the call's own server span: a span of its own per command cost more than it told (the
    # database spans below it already time the work).
    trace.get_current_span().set_attributes({
        "orders.aggregate_type": written.aggregate_type,
        "orders.aggregate_id": written.aggregate_id,
        "orders.aggregate_version": written.version,
    })
    if log.isEnabledFor(logging.DEBUG):
        log.debug("command applied", extra={
            "method": route.method, "aggregate_type": written.aggregate_type,
            "aggregate_id": written.aggregate_id, "aggregate_version": written.version})
    return response
