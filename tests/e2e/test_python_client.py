"""The Python client (clients/python, the orders-client distribution) against the real servers:
every RPC, a command's request id, errors as typed exceptions with their details, RetryInfo under
overload, and a WatchOrders subscription that resumes across query-server restarts."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from orders.v1 import types_pb2
from orders_client import (
    DOMAIN,
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OrdersClient,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    VersionConflictError,
    money,
)
from server.config import libpq_url
from server.platform.process import free_port
from tests.e2e.client import commands, new_id, place_request, register
from tests.harness import ROOT, Stack, issuer, sample, scrape, serving, token, wait_until

pytestmark = pytest.mark.e2e

PLACED, CONFIRMED, SHIPPED, CANCELLED = (types_pb2.ORDER_STATE_PLACED, types_pb2.ORDER_STATE_CONFIRMED,
                                         types_pb2.ORDER_STATE_SHIPPED, types_pb2.ORDER_STATE_CANCELLED)


def line(product_id: str, quantity: int, price: str) -> types_pb2.OrderLine:
    return types_pb2.OrderLine(product_id=product_id, quantity=quantity, unit_price=money("EUR", price))


def client_of(stack: Stack, **options: object) -> OrdersClient:
    return OrdersClient(stack.command_addr, stack.query_addr, token=token(), **options)  # type: ignore[arg-type]


# --- every RPC --------------------------------------------------------------------------------


def test_credit_and_stock_commands_and_their_reads(stack: Stack) -> None:
    async def scenario() -> None:
        async with client_of(stack) as client:
            customer_id, product_id, order_id = new_id("c"), new_id("p"), new_id("o")
            registered = await client.register_customer(customer_id, "Ada", "ada@example.com", money("EUR", "100"))
            added = await client.add_stock(product_id, 0, 10)
            reserved = await client.reserve_credit(customer_id, registered.version, money("EUR", "30.50"), order_id)
            held = await client.reserve_stock(product_id, added.version, 4, order_id)

            customer = await client.get_customer(customer_id, reserved.consistency_token)
            product = await client.get_product(product_id, held.consistency_token)
            assert (customer.version, customer.credit_reserved, customer.credit_available) == (
                2, money("EUR", "30.50"), money("EUR", "69.50"))
            assert (product.version, product.on_hand, product.reserved, product.available) == (2, 10, 4, 6)

            released = await client.release_credit(customer_id, customer.version, money("EUR", "0.50"), order_id)
            given_back = await client.release_stock(product_id, product.version, 1, order_id)

            customer = await client.get_customer(customer_id, released.consistency_token)
            product = await client.get_product(product_id, given_back.consistency_token)
            assert (customer.version, customer.credit_reserved) == (3, money("EUR", "30"))
            assert (product.version, product.reserved, product.available) == (3, 3, 7)

    asyncio.run(scenario())


def test_an_order_through_its_lifecycle_and_every_order_read(stack: Stack) -> None:
    async def scenario() -> None:
        async with client_of(stack) as client:
            customer_id, kept, dropped = new_id("c"), new_id("o"), new_id("o")
            product_id = new_id("p")
            await client.register_customer(customer_id, "Ada", "ada@example.com")
            placed = await client.place_order(kept, customer_id, [line(product_id, 4, "2.50")])
            summary = await client.get_order_summary(kept, placed.consistency_token)
            assert (summary.order_id, summary.state, summary.total, summary.version) == (
                kept, PLACED, money("EUR", "10"), 1)

            confirmed = await client.confirm_order(kept, placed.version)
            shipped = await client.ship_order(kept, confirmed.version)
            other = await client.place_order(dropped, customer_id, [line(product_id, 1, "5")])
            cancelled = await client.cancel_order(dropped, other.version, types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST,
                                                  "changed their mind")
            assert (shipped.version, cancelled.version) == (3, 2)

            summary = await client.get_order_summary(dropped, cancelled.consistency_token)
            assert (summary.state, summary.cancellation.reason, summary.cancellation.note) == (
                CANCELLED, types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST, "changed their mind")
            page = await client.list_orders(customer_id, consistency_token=shipped.consistency_token)
            assert {(o.order_id, o.state) for o in page.orders} == {(kept, SHIPPED), (dropped, CANCELLED)}
            assert page.next_page_token == ""
            only_shipped = await client.list_orders(customer_id, SHIPPED)
            assert [o.order_id for o in only_shipped.orders] == [kept]
            walked = [o.order_id async for o in client.iter_orders(customer_id, page_size=1)]
            assert walked == sorted([kept, dropped])  # two pages of one, by order id

            dashboard = await client.get_customer_orders(customer_id, shipped.consistency_token)
            assert {(t.state, t.order_count, t.total.units) for t in dashboard.totals} == {
                (SHIPPED, 1, 10), (CANCELLED, 1, 5)}
            sales = await client.get_product_sales(product_id, cancelled.consistency_token)
            assert [(s.product_id, s.units_sold, s.revenue) for s in sales] == [(product_id, 4, money("EUR", "10"))]

    asyncio.run(scenario())


def test_a_command_repeated_with_its_request_id_has_one_effect_and_the_first_answer(stack: Stack) -> None:
    async def scenario() -> None:
        async with client_of(stack) as client:
            product_id = new_id("p")
            first = await client.add_stock(product_id, 0, 5, request_id="restock-1-" + product_id)
            again = await client.add_stock(product_id, 0, 5, request_id="restock-1-" + product_id)
            product = await client.get_product(product_id, again.consistency_token)
            assert again == first
            assert (product.on_hand, product.version) == (5, 1)

            with pytest.raises(InvalidArgumentError) as reused:
                await client.add_stock(product_id, 0, 6, request_id="restock-1-" + product_id)
            assert reused.value.reason == "REQUEST_ID_REUSED"

    asyncio.run(scenario())


# --- errors as typed exceptions -----------------------------------------------------------------


def test_errors_are_typed_with_their_details(stack: Stack) -> None:
    async def scenario() -> None:
        async with client_of(stack) as client:
            customer_id, order_id = new_id("c"), new_id("o")
            await client.register_customer(customer_id, "Ada", "ada@example.com")
            placed = await client.place_order(order_id, customer_id, [line("p-1", 1, "1")])

            with pytest.raises(InvalidArgumentError) as invalid:
                await client.place_order(new_id("o"), customer_id, [line("p-1", -1, "1")])
            assert invalid.value.field_violations.keys() == {"lines[0].quantity"}

            with pytest.raises(VersionConflictError) as stale:
                await client.confirm_order(order_id, placed.version + 1)
            assert (stale.value.reason, stale.value.domain) == ("VERSION_CONFLICT", DOMAIN)
            assert (stale.value.expected_version, stale.value.actual_version) == (2, 1)

            with pytest.raises(FailedPreconditionError) as illegal:
                await client.ship_order(order_id, placed.version)
            assert [kind for kind, _, _ in illegal.value.precondition_violations] == ["ORDER_STATE"]

            with pytest.raises(FailedPreconditionError) as no_customer:
                await client.place_order(new_id("o"), new_id("c"), [line("p-1", 1, "1")])
            assert [kind for kind, _, _ in no_customer.value.precondition_violations] == ["CUSTOMER_EXISTS"]

            with pytest.raises(AlreadyExistsError) as taken:
                await client.register_customer(customer_id, "Ada", "ada@example.com")
            assert taken.value.resource_info is not None

            with pytest.raises(NotFoundError):
                await client.get_order_summary(new_id("o"))

    asyncio.run(scenario())


def test_a_caller_without_a_token_or_without_the_scope_is_refused(stack: Stack) -> None:
    read_only = issuer().mint("default", ["orders.read"], subject="reader")

    async def scenario() -> None:
        async with OrdersClient(stack.command_addr, stack.query_addr) as anonymous:
            with pytest.raises(UnauthenticatedError) as missing:
                await anonymous.get_order_summary(new_id("o"))
            assert missing.value.reason == "TOKEN_MISSING"
        # The token may also come from a function, asked on every call.
        async with OrdersClient(stack.command_addr, stack.query_addr, token=lambda: read_only) as reader:
            with pytest.raises(PermissionDeniedError) as denied:
                await reader.add_stock(new_id("p"), 0, 1)
            assert (denied.value.reason, denied.value.metadata["required_scope"]) == ("SCOPE_MISSING", "orders.write")
            assert await reader.get_product_sales(new_id("p")) == []

    asyncio.run(scenario())


# --- RetryInfo under overload -------------------------------------------------------------------

LIMIT = 2
WAITING = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%%INSERT INTO orders%%'"


@pytest.fixture(scope="module")
def limited(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A command server alone with room for LIMIT calls in progress, and its metrics address."""
    metrics = f"127.0.0.1:{free_port()}"
    stack = Stack(database_url, "", tmp_path_factory.mktemp("limited-logs"))
    stack.start("command-server", ORDERS_MAX_CALLS_IN_PROGRESS=str(LIMIT), METRICS_ADDR=metrics)
    wait_until(lambda: stack.alive() and serving(stack.command_addr), what="command-server SERVING")
    yield stack, metrics
    stack.stop_all()


def test_an_overloaded_server_is_retried_after_its_retry_delay_within_the_deadline(
    limited: tuple[Stack, str], database_url: str
) -> None:
    stack, metrics = limited
    _, cmd = commands(stack.command_addr)
    customer_id = new_id("c")
    register(cmd, customer_id)

    def refusals() -> float:
        return sample(scrape(metrics), "grpc_server_handled_total", grpc_method="PlaceOrder", grpc_type="unary",
                      grpc_code="ResourceExhausted")

    async def scenario(blocker: psycopg.Connection[tuple[object, ...]], refused_before: float) -> tuple[int, float]:
        async with OrdersClient(stack.command_addr, stack.query_addr, token=token()) as client:
            # Held up for the whole of a short deadline: the overload is the error, with its details.
            with pytest.raises(ResourceExhaustedError) as overloaded:
                await client.place_order(new_id("o"), customer_id, [line("p-1", 1, "1")], timeout=1.0)
            assert overloaded.value.reason == "OVERLOADED"
            assert overloaded.value.retry_delay is not None and overloaded.value.retry_delay > 0
            tried = refusals() - refused_before
            # With room in the deadline, the call waits out the overload.
            call = asyncio.create_task(client.place_order(new_id("o"), customer_id, [line("p-1", 1, "1")],
                                                          timeout=30))
            async with asyncio.timeout(20):  # the call keeps being refused, and tried again
                while refusals() < refused_before + tried + 2:
                    await asyncio.sleep(0.05)
            assert not call.done()
            blocker.rollback()
            return (await call).version, tried

    with psycopg.connect(libpq_url(database_url)) as blocker, \
            psycopg.connect(libpq_url(database_url), autocommit=True) as observer:
        blocker.execute("SELECT 1 FROM customers WHERE customer_id = %s FOR UPDATE", (customer_id,))
        held = [cmd.PlaceOrder.future(place_request(new_id("o"), customer_id), timeout=60) for _ in range(LIMIT)]
        wait_until(lambda: observer.execute(WAITING).fetchone() == (LIMIT,), timeout=10,
                   what=f"{LIMIT} orders waiting for the customer's row")
        version, tried_within_one_second = asyncio.run(scenario(blocker, refusals()))

    assert version == 1
    assert tried_within_one_second >= 2, "the refused call was tried again after the server's delay"
    assert [call.result().version for call in held] == [1] * LIMIT


# --- WatchOrders resumes by itself ----------------------------------------------------------------


def test_a_subscription_resumes_across_query_server_restarts_with_no_update_missed_or_repeated(
    stack: Stack,
) -> None:
    async def scenario() -> tuple[dict[str, list[int]], int, int]:
        async with client_of(stack) as client:
            customer_id = new_id("c")
            await client.register_customer(customer_id, "Ada", "ada@example.com")
            seen: dict[str, list[int]] = defaultdict(list)
            changed = asyncio.Event()
            subscription = client.watch_orders(customer_id=customer_id)

            async def consume() -> None:
                async for update in subscription:
                    seen[update.summary.order_id].append(update.summary.version)
                    changed.set()

            async def until(done: Callable[[], bool], what: str) -> None:
                try:
                    async with asyncio.timeout(60):
                        while not done():
                            changed.clear()
                            await changed.wait()
                except TimeoutError:
                    raise AssertionError(f"timed out waiting for {what}; seen {dict(seen)}") from None

            def at(version: int, orders: list[str]) -> Callable[[], bool]:
                return lambda: all(seen[o] and seen[o][-1] == version for o in orders)

            consumer = asyncio.create_task(consume())
            orders = [new_id("o") for _ in range(3)]
            placed = [await client.place_order(o, customer_id, [line("p-1", 1, "1")]) for o in orders]
            await until(at(1, orders), "every order placed")

            # kill -9: the stream breaks with no goodbye; the orders change while no server is there.
            stack.kill("query-server")
            confirmed = [await client.confirm_order(o, p.version) for o, p in zip(orders, placed, strict=True)]
            stack.start("query-server")
            await until(at(2, orders), "every order confirmed, after the restart")
            for o, c in zip(orders, confirmed, strict=True):
                await client.ship_order(o, c.version)
            await until(at(3, orders), "every order shipped")

            # A graceful stop: the stream ends with SHUTTING_DOWN and its resume token.
            stack.kill("query-server", signal.SIGTERM)
            late = new_id("o")
            await client.place_order(late, customer_id, [line("p-1", 1, "1")])
            stack.start("query-server")
            await until(at(1, [late]), "the order placed while the server was stopped")
            resumes, token_after = subscription.resumes, subscription.resume_token
            await subscription.aclose()
            await asyncio.wait_for(consumer, 10)
            return dict(seen), resumes, len(token_after)

    seen, resumes, token_length = asyncio.run(scenario())
    wait_until(lambda: stack.alive() and serving(stack.query_addr), what="query-server SERVING again")

    assert resumes >= 2, "both stops broke the stream and the subscription resumed"
    assert token_length > 0
    assert sorted(seen.values()) == [[1], [1, 2, 3], [1, 2, 3], [1, 2, 3]], "every change once, in order"


# --- the distribution -----------------------------------------------------------------------------

DEPENDENCIES = {"grpcio", "protobuf", "googleapis-common-protos"}


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def _runtime_of(names: set[str], folder: Path) -> Path:
    """`folder` holding only the installed distributions `names` and what they need (no extras)."""
    folder.mkdir()
    todo, done = list(names), set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        dist = importlib.metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or ()}:
            source = Path(str(dist.locate_file(top)))
            if not (folder / top).exists() and source.exists():
                (folder / top).symlink_to(source)
        todo += [_requirement_name(r) for r in dist.requires or () if "extra ==" not in r]
    return folder


def test_the_distribution_builds_a_wheel_that_needs_only_grpc_and_protobuf_and_works_alone(
    stack: Stack, tmp_path: Path
) -> None:
    # A copy of the two folders the build reads, so nothing is written into the checkout.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "clients" / "python", source / "clients" / "python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    shutil.copytree(ROOT / "generated" / "orders", source / "generated" / "orders",
                    ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--disable-pip-version-check", "-w", str(tmp_path / "dist"),
                            str(source / "clients" / "python")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("orders_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        archive.extractall(tmp_path / "wheel")

    requires = {_requirement_name(line.split(":", 1)[1].strip())
                for line in metadata.splitlines() if line.startswith("Requires-Dist:")}
    assert requires == DEPENDENCIES
    assert {n.split("/")[0] for n in names if not n.startswith("orders_client-")} == {"orders", "orders_client"}
    assert {"orders/v1/query_service_pb2_grpc.py", "orders/v1/types_pb2.pyi", "orders/py.typed",
            "orders_client/py.typed"} <= set(names)

    # The wheel and its three dependencies alone (no site-packages, so neither the server nor the
    # stubs of this checkout): a call against the running stack.
    runtime = _runtime_of(DEPENDENCIES, tmp_path / "runtime")
    product_id = new_id("p")
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path[:0] = [{str(tmp_path / "wheel")!r}, {str(runtime)!r}]
        import orders.v1.types_pb2, orders_client
        from orders_client import OrdersClient, money

        async def main():
            async with OrdersClient({stack.command_addr!r}, {stack.query_addr!r}, token={token()!r}) as client:
                added = await client.add_stock({product_id!r}, 0, 3)
                product = await client.get_product({product_id!r}, added.consistency_token)
                print(product.available, orders_client.__file__, orders.v1.types_pb2.__file__)

        asyncio.run(main())
        print(sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("server", "projector", "sqlalchemy",
                                                                                 "nats", "psycopg")))
    """)
    ran = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    available, client_file, stubs_file, rest = ran.stdout.split(maxsplit=3)
    assert available == "3"
    assert client_file.startswith(str(tmp_path / "wheel")) and stubs_file.startswith(str(tmp_path / "wheel"))
    assert rest.strip() == "[]"
