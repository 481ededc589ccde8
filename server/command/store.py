"""The command side's storage: one or two statements per command.

Most commands first read their aggregate together with any earlier use of the request id (and
set the statement timeout from the caller's deadline); RegisterCustomer and PlaceOrder do not
read. Then one atomic statement writes everything the command changes: the idempotency claim,
the version-guarded state change, the event (the outbox row), all or nothing.

The write answers rather than raises for what a caller can cause: it claims the request id only
when the aggregate is at the expected version (locked meanwhile), or, for a new aggregate, when
its id is free and what it refers to exists; it changes the aggregate only when it claimed. Its
one row says what happened, so commands written together in one transaction (group_commit)
each get their own answer, and a refused command leaves no trace. Only a race it cannot see
coming (a request id or an aggregate id taken by a transaction that commits meanwhile) leaves a
claim without its change or the reverse; `orders_command_guard` then undoes the statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import psycopg
from opentelemetry.trace import SpanKind, StatusCode
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from orders.v1 import events_pb2
from server import telemetry
from server.command.unit_of_work import Aggregate, Written
from server.domain.commands import OrderLine
from server.domain.errors import AlreadyExistsError, DomainError, NotFoundError, VersionConflictError
from server.domain.events import CustomerForgotten, Event
from server.domain.model import Customer, Order, OrderState, Product
from server.platform import personal, timeouts, wire
from server.platform.schema import NOTIFY_CHANNEL, from_decimal, to_decimal
from server.telemetry import tracer
from server.telemetry.logs import CAUSATION_ID, CORRELATION_ID

Connection = psycopg.AsyncConnection[TupleRow]

_PRIOR = "i.method, i.request_hash, i.response"
_FROM = """FROM (SELECT 1) AS one
LEFT JOIN idempotency i ON i.tenant_id = %(tenant_id)s AND i.request_id = %(request_id)s"""
_TIMEOUT = "set_config('statement_timeout', %(timeout_ms)s, false)"

READ = {
    "customer": f"""SELECT {_TIMEOUT}, {_PRIOR},
        a.customer_id, a.display_name, a.email, a.credit_currency, a.credit_limit, a.credit_reserved, a.version,
        a.forgotten_at IS NOT NULL
        {_FROM}
        LEFT JOIN customers a ON a.tenant_id = %(tenant_id)s AND a.customer_id = %(aggregate_id)s""",
    "product": f"""SELECT {_TIMEOUT}, {_PRIOR}, a.product_id, a.on_hand, a.reserved, a.version
        {_FROM}
        LEFT JOIN products a ON a.tenant_id = %(tenant_id)s AND a.product_id = %(aggregate_id)s""",
    "order": f"""SELECT {_TIMEOUT}, {_PRIOR},
        a.order_id, a.customer_id, a.currency_code, a.total, a.state, a.version,
        (SELECT json_agg(json_build_array(l.product_id, l.quantity, l.currency_code, l.unit_price::text)
                         ORDER BY l.line_no)
           FROM order_lines l WHERE l.tenant_id = a.tenant_id AND l.order_id = a.order_id)
        {_FROM}
        LEFT JOIN orders a ON a.tenant_id = %(tenant_id)s AND a.order_id = %(aggregate_id)s""",
}
PRIOR_REQUEST = (
    "SELECT method, request_hash, response FROM idempotency WHERE tenant_id = %(tenant_id)s AND request_id = %(request_id)s"
)
# Each change runs only when its command claimed the request id (the `claim` CTE), so a refused
# command writes nothing; an insert's ON CONFLICT and an update's version check are the last
# line against a race the claim could not see.
_CLAIMED = "EXISTS (SELECT FROM claim)"
_CHANGES = {
    ("customer", "insert"): """INSERT INTO customers
        (tenant_id, customer_id, display_name, email, credit_currency, credit_limit, credit_reserved, version)
        SELECT %(tenant_id)s, %(aggregate_id)s, %(display_name)s, %(email)s, %(credit_currency)s,
               %(credit_limit)s, %(credit_reserved)s, %(version)s FROM claim
        ON CONFLICT DO NOTHING""",
    ("customer", "forget"): f"""UPDATE customers
        SET display_name = '', email = '', forgotten_at = now(), version = %(version)s, updated_at = now()
        WHERE tenant_id = %(tenant_id)s AND customer_id = %(aggregate_id)s AND version = %(expected)s AND {_CLAIMED}""",
    ("customer", "update"): f"""UPDATE customers
        SET credit_reserved = %(credit_reserved)s, version = %(version)s, updated_at = now()
        WHERE tenant_id = %(tenant_id)s AND customer_id = %(aggregate_id)s AND version = %(expected)s AND {_CLAIMED}""",
    ("product", "insert"): """INSERT INTO products (tenant_id, product_id, on_hand, reserved, version)
        SELECT %(tenant_id)s, %(aggregate_id)s, %(on_hand)s, %(reserved)s, %(version)s FROM claim
        ON CONFLICT DO NOTHING""",
    ("product", "update"): f"""UPDATE products
        SET on_hand = %(on_hand)s, reserved = %(reserved)s, version = %(version)s, updated_at = now()
        WHERE tenant_id = %(tenant_id)s AND product_id = %(aggregate_id)s AND version = %(expected)s AND {_CLAIMED}""",
    ("order", "insert"): """INSERT INTO orders (tenant_id, order_id, customer_id, state, currency_code, total, version)
        SELECT %(tenant_id)s, %(aggregate_id)s, %(customer_id)s, %(state)s, %(currency_code)s, %(total)s, %(version)s
        FROM claim
        ON CONFLICT DO NOTHING""",
    ("order", "update"): f"""UPDATE orders SET state = %(state)s, version = %(version)s, updated_at = now()
        WHERE tenant_id = %(tenant_id)s AND order_id = %(aggregate_id)s AND version = %(expected)s AND {_CLAIMED}""",
}
# What a new aggregate refers to, locked against deletion as its foreign key would: read first,
# so that a missing one is an answer rather than a foreign-key error.
_REFERENCE = {
    "order": "SELECT FROM customers WHERE tenant_id = %(tenant_id)s AND customer_id = %(customer_id)s FOR KEY SHARE",
}

# An order's lines travel as one text parameter, "product,quantity,unit price" joined by ";"
# (`_lines_text`; product ids hold neither character): one value to bind where three arrays cost
# the command server more than the rest of the statement's parameters together.
_ORDER_LINES = """,
lines AS (
    INSERT INTO order_lines (tenant_id, order_id, line_no, product_id, quantity, currency_code, unit_price)
    SELECT %(tenant_id)s, %(aggregate_id)s, l.no - 1, f[1], f[2]::bigint, %(currency_code)s, f[3]::numeric
    FROM change, unnest(string_to_array(%(lines)s, ';')) WITH ORDINALITY AS l(line, no),
         string_to_array(l.line, ',') AS f)"""
# A new customer's data key, wrapped, with the request that registered them: what ForgetCustomer
# deletes, and the idempotency record whose hash of the personal fields it scrubs.
_CUSTOMER_KEY = """,
keyed AS (
    INSERT INTO customer_keys (tenant_id, customer_id, wrapped_key, request_id)
    SELECT %(tenant_id)s, %(aggregate_id)s, %(wrapped_key)s, %(request_id)s FROM change)"""
# Forgetting: the key goes, and the registration's request hash (computed over the name and email)
# becomes FORGOTTEN_HASH; its response, which holds no personal data, still answers a replay.
_SHRED = """,
shredded AS (
    DELETE FROM customer_keys k WHERE k.tenant_id = %(tenant_id)s AND k.customer_id = %(aggregate_id)s
        AND EXISTS (SELECT FROM change)
    RETURNING k.request_id),
scrubbed AS (
    UPDATE idempotency i SET request_hash = %(forgotten_hash)s
    FROM shredded s WHERE i.tenant_id = %(tenant_id)s AND i.request_id = s.request_id
        AND i.method = 'RegisterCustomer')"""
_EXTRA = {("order", "insert"): _ORDER_LINES, ("customer", "insert"): _CUSTOMER_KEY, ("customer", "forget"): _SHRED}
# The request hash of a registration whose customer was forgotten: no sha256 digest is one byte.
FORGOTTEN_HASH = b"\0"

_PRIOR_CTE = """prior AS (
    SELECT method, request_hash, response FROM idempotency
    WHERE tenant_id = %(tenant_id)s AND request_id = %(request_id)s)"""
_CLAIM_VALUES = "%(tenant_id)s, %(request_id)s, %(method)s, %(request_hash)s, %(response)s"
# The statement's one row: (changed, the aggregate's version as found (None: no such aggregate),
# the prior request's method, hash and response (None: none seen), whether what a new aggregate
# refers to exists); then the guard, which raises only when claim and change disagree.
_OUTCOME = """SELECT EXISTS (SELECT FROM change), (SELECT version FROM target), p.method, p.request_hash, p.response,
    {referenced},
    CASE WHEN EXISTS (SELECT FROM claim) <> EXISTS (SELECT FROM change)
         THEN orders_command_guard(EXISTS (SELECT FROM claim), EXISTS (SELECT FROM change)) END
FROM (SELECT 1) AS one LEFT JOIN prior p ON true"""
_OUTCOME_SOURCE = "\nFROM (SELECT 1) AS one"


def _write_sql(aggregate_type: str, kind: str) -> str:
    """The claim, the change and the event of one command, as one statement answering with _OUTCOME.

    An update locks its row first (FOR NO KEY UPDATE: an order's foreign key to its customer
    still shares it) and claims only at the expected version; an insert claims only when the id
    is free and what it refers to exists. The event is inserted from `change`, after the row is
    locked: within one aggregate, event ids are handed out in commit order, which the relay's id
    order relies on."""
    table, where = f"{aggregate_type}s", f"tenant_id = %(tenant_id)s AND {aggregate_type}_id = %(aggregate_id)s"
    reference = _REFERENCE.get(aggregate_type) if kind == "insert" else None
    if kind == "insert":
        target = f"SELECT version FROM {table} WHERE {where}"
        may_claim = "NOT EXISTS (SELECT FROM target)"
    else:
        target = f"SELECT version FROM {table} WHERE {where} FOR NO KEY UPDATE"
        may_claim = "EXISTS (SELECT FROM target WHERE version = %(expected)s)"
    ctes = [_PRIOR_CTE, f"target AS ({target})"]
    if reference is not None:
        ctes.append(f"reference AS ({reference})")
        may_claim += " AND EXISTS (SELECT FROM reference)"
    ctes.append(f"""claim AS (
    INSERT INTO idempotency (tenant_id, request_id, method, request_hash, response)
    SELECT {_CLAIM_VALUES} WHERE NOT EXISTS (SELECT FROM prior) AND {may_claim}
    ON CONFLICT DO NOTHING RETURNING 1)""")
    ctes.append(f"change AS ({_CHANGES[(aggregate_type, kind)]} RETURNING 1){_EXTRA.get((aggregate_type, kind), '')}")
    ctes.append("""event AS (
    INSERT INTO events (event_id, tenant_id, aggregate_type, aggregate_id, aggregate_version, event_type, payload, headers)
    SELECT %(event_id)s, %(tenant_id)s, %(aggregate_type)s, %(aggregate_id)s, %(version)s, %(event_type)s,
           %(payload)s, %(headers)s
    FROM change)""")
    referenced = "true" if reference is None else "EXISTS (SELECT FROM reference)"
    return "WITH " + ",\n".join(ctes) + "\n" + _OUTCOME.format(referenced=referenced)


WRITE = {key: _write_sql(*key) for key in _CHANGES}
# A command that changes nothing (forgetting a forgotten customer): the claim alone.
CLAIM_ONLY = f"""WITH {_PRIOR_CTE},
claim AS (
    INSERT INTO idempotency (tenant_id, request_id, method, request_hash, response)
    SELECT {_CLAIM_VALUES} WHERE NOT EXISTS (SELECT FROM prior)
    ON CONFLICT DO NOTHING RETURNING 1),
change AS (SELECT FROM claim),
target AS (SELECT NULL::bigint AS version)
{_OUTCOME.format(referenced="true")}"""


def _notifying(statement: str) -> str:
    """`statement` that also wakes the relay (NOTIFY, delivered when it commits): what a write
    carries when the command server's notifier says one is due (group_commit.Notifier)."""
    ctes, source = statement.removeprefix("WITH ").rsplit(_OUTCOME_SOURCE, 1)
    return (f"WITH notified AS (SELECT pg_notify('{NOTIFY_CHANNEL}', '')),\n{ctes}, (SELECT true FROM notified)"
            f"{_OUTCOME_SOURCE}{source}")


NOTIFYING = {statement: _notifying(statement) for statement in (*WRITE.values(), CLAIM_ONLY)}


@dataclass(frozen=True)
class Prior:
    """An earlier request with the same id: what it was and what it answered."""

    method: str
    request_hash: bytes
    response: bytes | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Prior:
        """From (method, request_hash, response) as the database returns them."""
        method, request_hash, response = row
        return cls(method, bytes(request_hash), None if response is None else bytes(response))


class Replayed(Exception):
    """The request id was used before; `prior` says how (None: it could not be read back)."""

    def __init__(self, prior: Prior | None) -> None:
        super().__init__("request id already used")
        self.prior = prior


class Database(Protocol):
    """Where a Session's statements run: one connection (`OnConnection`), or the command server's
    pool for reads and group commit for writes (`group_commit.GroupCommit`)."""

    async def read(self, statement: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a read. A statement whose params hold `timeout_ms` sets the statement
        timeout itself (READ), and the connection remembers it."""
        ...

    async def write(self, statement: str, params: dict[str, Any], timeout_ms: str) -> tuple[Any, ...]:
        """The one row of a write statement, run under statement timeout `timeout_ms`."""
        ...


class OnConnection:
    """A Session's statements one after the other on one connection (operator commands, tests)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def read(self, statement: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        return await read_on(self.conn, statement, params)

    async def write(self, statement: str, params: dict[str, Any], timeout_ms: str) -> tuple[Any, ...]:
        return await write_on(self.conn, statement, params, timeout_ms)


async def read_on(conn: Connection, statement: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    sets_timeout = "timeout_ms" in params
    if sets_timeout:
        timeouts.known.pop(conn, None)  # a failed statement leaves the setting unknown
    row = await (await conn.execute(statement, params)).fetchone()
    if sets_timeout:
        timeouts.known[conn] = params["timeout_ms"]
    return row


async def write_on(conn: Connection, statement: str, params: dict[str, Any], timeout_ms: str) -> tuple[Any, ...]:
    if timeouts.known.get(conn) != timeout_ms:  # a command that did not read, or read elsewhere
        await timeouts.set_timeout(conn, timeout_ms)
    row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None  # a write statement always answers with its one row
    return row


class Session:
    """One command's unit of work on PostgreSQL: reads that also detect a replayed request id,
    then one pending change and its event, written by `commit` in one atomic statement with the
    event serialised as its Envelope (the outbox row)."""

    def __init__(self, db: Database, ctx: wire.EventContext, request_id: str, method: str, request_hash: bytes,
                 timeout_ms: float, kek: bytes) -> None:
        self.db = db
        self.kek = kek
        self.ctx = ctx
        self.base = dict(tenant_id=ctx.tenant_id, request_id=request_id, method=method, request_hash=request_hash)
        self.timeout_ms = str(timeouts.timeout_step(timeout_ms))
        self._change: tuple[str, str, dict[str, Any]] | None = None
        self._event: Event | None = None
        self._missing_reference: Callable[[], DomainError] | None = None

    async def _read(self, aggregate_type: str, aggregate_id: str) -> tuple[Any, ...]:
        # No span of its own: a primary-key read, timed by the call's server span; the write,
        # where a command spends its database time, has one. The read sets the statement timeout
        # within its own statement.
        row = await self.db.read(READ[aggregate_type], dict(self.base, aggregate_id=aggregate_id, timeout_ms=self.timeout_ms))
        assert row is not None  # the query always returns its one row
        if row[1] is not None:
            raise Replayed(Prior.from_row(row[1:4]))
        return row[4:]

    async def customer(self, customer_id: str) -> Customer | None:
        row = await self._read("customer", customer_id)
        if row[0] is None:
            return None
        customer_id, name, email, currency, limit, reserved, version, forgotten = row
        return Customer(customer_id, name, email, from_decimal(currency, limit), from_decimal(currency, reserved), version,
                        forgotten)

    async def product(self, product_id: str) -> Product | None:
        row = await self._read("product", product_id)
        return None if row[0] is None else Product(*row)

    async def order(self, order_id: str) -> Order | None:
        row = await self._read("order", order_id)
        if row[0] is None:
            return None
        order_id, customer_id, currency, total, state, version, lines = row
        return Order(
            order_id=order_id,
            customer_id=customer_id,
            lines=tuple(OrderLine(p, q, from_decimal(c, Decimal(price))) for p, q, c, price in lines or ()),
            total=from_decimal(currency, total),
            state=OrderState(state),
            version=version,
        )

    def insert(self, aggregate: Aggregate, missing_reference: Callable[[], DomainError] | None = None) -> Written:
        """A new aggregate; the write fails with ALREADY_EXISTS if its id is taken, and with the
        error `missing_reference` makes if a row it refers to (a foreign key) does not exist."""
        self._missing_reference = missing_reference
        return self._stage("insert", *_values(aggregate))

    def update(self, aggregate: Aggregate, expected: int) -> Written:
        """A changed aggregate, saved only if it is still at `expected` when written."""
        aggregate_type, values = _values(aggregate)
        return self._stage("update", aggregate_type, dict(values, expected=expected))

    def unchanged(self, aggregate: Aggregate) -> Written:
        """Nothing to write but the claim: the aggregate as it is."""
        aggregate_type, values = _values(aggregate)
        return self._stage("unchanged", aggregate_type, values)

    def _stage(self, kind: str, aggregate_type: str, values: dict[str, Any]) -> Written:
        self._change = (aggregate_type, kind, values)
        return Written(aggregate_type, values["aggregate_id"], values["version"])

    def record(self, event: Event) -> None:
        self._event = event

    async def commit(self, response: bytes) -> None:
        """Writes the claim with `response`, the change and the event, all or nothing; raises
        what the statement's answer means when it wrote nothing."""
        assert self._change is not None, "a command changes one aggregate"
        aggregate_type, kind, values = self._change
        if kind == "unchanged":
            await self._write(CLAIM_ONLY, {**self.base, "response": response}, aggregate_type, kind, values)
            return
        assert self._event is not None, "a change records its event"
        if isinstance(self._event, CustomerForgotten):
            kind = "forget"
        event_id = uuid.uuid4()
        env = wire.envelope(self._event, self.ctx, aggregate_type, values["aggregate_id"], values["version"], event_id)
        if env.HasField("customer_registered"):
            values = dict(values, wrapped_key=self._seal_personal(env))
        # The trace context rides with the event, so the relay's publish, minutes later if need
        # be, joins the trace of the command that caused it.
        headers = telemetry.event_headers(self.ctx.correlation_id, self.ctx.causation_id)
        params = {**self.base, **values, "event_id": event_id, "event_type": env.event_type,
                  "payload": env.SerializeToString(), "headers": Jsonb(headers), "response": response,
                  "aggregate_type": aggregate_type, "forgotten_hash": FORGOTTEN_HASH}
        # Nothing runs inside this span that could be its child, so it is never made current:
        # a span costs the command server less that way. It carries the ids of the event it
        # writes (this process has no baggage processor to copy them: see setup_tracing).
        span = tracer.start_span(
            f"outbox write {aggregate_type}", kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "orders.event_type": env.event_type,
                        CORRELATION_ID: headers[CORRELATION_ID], CAUSATION_ID: headers[CAUSATION_ID]},
        )
        try:
            await self._write(WRITE[(aggregate_type, kind)], params, aggregate_type, kind, values)
        except Exception as exc:
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            span.end()

    async def _write(self, statement: str, params: dict[str, Any], aggregate_type: str, kind: str,
                     values: dict[str, Any]) -> None:
        try:
            row = await self.db.write(statement, params, self.timeout_ms)
        except psycopg.Error as exc:
            # The guard: a request id or an aggregate id taken by a transaction that committed
            # while this statement ran.
            if exc.sqlstate == "OR001":
                raise Replayed(await self._prior()) from None
            if exc.sqlstate == "OR002" and kind == "insert":
                raise AlreadyExistsError(aggregate_type, values["aggregate_id"]) from None
            raise
        changed, actual, method, request_hash, prior_response, referenced = row[:6]
        if changed:
            return
        if method is not None:
            raise Replayed(Prior.from_row((method, request_hash, prior_response)))
        # Refused. An identical request may have taken the claim meanwhile (its change is why
        # this one found another version): it answers first.
        prior = await self._prior()
        if prior is not None or kind == "unchanged":
            raise Replayed(prior)
        if kind == "insert" and actual is not None:
            raise AlreadyExistsError(aggregate_type, values["aggregate_id"])
        if not referenced and self._missing_reference is not None:
            raise self._missing_reference()
        if kind != "insert" and actual is None:
            raise NotFoundError(aggregate_type, values["aggregate_id"])
        if kind != "insert" and actual != values["expected"]:
            raise VersionConflictError(aggregate_type, values["aggregate_id"], values["expected"], int(actual))
        raise Replayed(None)  # the claim was taken, yet cannot be read back

    async def _prior(self) -> Prior | None:
        row = await self.db.read(PRIOR_REQUEST, {"tenant_id": self.base["tenant_id"], "request_id": self.base["request_id"]})
        return None if row is None else Prior.from_row(row)


    def _seal_personal(self, env: events_pb2.Envelope) -> bytes:
        """Seals the registration's personal fields with a new data key (leaving none in clear in
        the event) and returns the key wrapped by the KEK, for the customer_keys row."""
        registered = env.customer_registered
        key = personal.new_data_key(self.kek, env.tenant_id, registered.customer_id)
        registered.sealed_personal_data = personal.seal_personal(
            key.key, env.tenant_id, registered.customer_id, registered.display_name, registered.email)
        registered.ClearField("display_name")
        registered.ClearField("email")
        return key.wrapped


def _values(aggregate: Aggregate) -> tuple[str, dict[str, Any]]:
    """The aggregate's type, and its columns as the write statements name them."""
    match aggregate:
        case Customer():
            return "customer", dict(
                aggregate_id=aggregate.customer_id,
                display_name=aggregate.display_name,
                email=aggregate.email,
                credit_currency=aggregate.credit_limit.currency_code,
                credit_limit=to_decimal(aggregate.credit_limit),
                credit_reserved=to_decimal(aggregate.credit_reserved),
                version=aggregate.version,
            )
        case Product():
            return "product", dict(
                aggregate_id=aggregate.product_id, on_hand=aggregate.on_hand, reserved=aggregate.reserved, version=aggregate.version
            )
        case Order():
            return "order", dict(
                aggregate_id=aggregate.order_id,
                customer_id=aggregate.customer_id,
                state=aggregate.state.value,
                currency_code=aggregate.total.currency_code,
                total=to_decimal(aggregate.total),
                version=aggregate.version,
                lines=_lines_text(aggregate.lines),
            )


def _lines_text(lines: tuple[OrderLine, ...]) -> str:
    """The lines as _ORDER_LINES reads them; unit prices are positive (PlaceOrder's checks)."""
    return ";".join(f"{line.product_id},{line.quantity},{line.unit_price.units}.{line.unit_price.nanos:09d}"
                    for line in lines)
