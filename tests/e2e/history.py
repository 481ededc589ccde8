"""One fixed history of commands (customers, stock, orders placed, confirmed, shipped and cancelled,
credit and stock reserved and released), written through the command server, and the file format
of a recorded `events` table: length-delimited Envelopes, as protobuf's writeDelimitedTo writes them.

`python -m tests.e2e.history OUT` writes the history as this checkout's command server records it
(with embedded PostgreSQL and NATS) and saves its events to OUT, in id order. That is how
tests/fixtures/events-v1.binpb was made, by the code before OrderPlaced's schema version 2.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from orders.v1 import command_service_pb2 as pb
from orders.v1 import events_pb2, types_pb2
from tests.e2e.client import commands

FIXTURE_V1 = Path(__file__).resolve().parents[1] / "fixtures" / "events-v1.binpb"
FIXTURE_TENANT = "legacy"  # the tenant the recorded history belongs to


def eur(units: int, nanos: int = 0) -> types_pb2.Money:
    return types_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


def usd(units: int, nanos: int = 0) -> types_pb2.Money:
    return types_pb2.Money(currency_code="USD", units=units, nanos=nanos)


def line(product_id: str, quantity: int, unit_price: types_pb2.Money) -> types_pb2.OrderLine:
    return types_pb2.OrderLine(product_id=product_id, quantity=quantity, unit_price=unit_price)


def write_history(command_addr: str, tenant_id: str) -> int:
    """Writes the history as `tenant_id` (ids and request ids are fixed, so two tenants hold the
    same one); returns how many events it made. Versions are known, so no call conflicts."""
    channel, cmd = commands(command_addr)
    meta = (("x-tenant-id", tenant_id),)
    step = iter(range(1, 1000))

    def rid() -> str:
        return f"history-{next(step)}"

    with channel:
        for customer_id, limit in (("c-ada", eur(500)), ("c-bob", eur(100)), ("c-cy", usd(1000))):
            cmd.RegisterCustomer(pb.RegisterCustomerRequest(
                request_id=rid(), customer_id=customer_id, display_name="History", email="history@example.com",
                credit_limit=limit), metadata=meta, timeout=10)
        for product_id, quantity in (("p-tea", 50), ("p-cup", 20), ("p-pot", 5)):
            cmd.AddStock(pb.AddStockRequest(request_id=rid(), product_id=product_id, expected_version=0,
                                            quantity=quantity), metadata=meta, timeout=10)

        # o-1: reserved, confirmed and shipped.
        cmd.PlaceOrder(pb.PlaceOrderRequest(request_id=rid(), order_id="o-1", customer_id="c-ada", lines=[
            line("p-tea", 3, eur(4, 200_000_000)), line("p-pot", 1, eur(39, 990_000_000))]), metadata=meta, timeout=10)
        cmd.ReserveCredit(pb.ReserveCreditRequest(request_id=rid(), customer_id="c-ada", expected_version=1,
                                                  amount=eur(52, 590_000_000), order_id="o-1"), metadata=meta, timeout=10)
        cmd.ReserveStock(pb.ReserveStockRequest(request_id=rid(), product_id="p-tea", expected_version=1, quantity=3,
                                                order_id="o-1"), metadata=meta, timeout=10)
        cmd.ReserveStock(pb.ReserveStockRequest(request_id=rid(), product_id="p-pot", expected_version=1, quantity=1,
                                                order_id="o-1"), metadata=meta, timeout=10)
        cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id="o-1", expected_version=1),
                         metadata=meta, timeout=10)
        cmd.ShipOrder(pb.ShipOrderRequest(request_id=rid(), order_id="o-1", expected_version=2), metadata=meta, timeout=10)

        # o-2: cancelled by the customer while placed.
        cmd.PlaceOrder(pb.PlaceOrderRequest(request_id=rid(), order_id="o-2", customer_id="c-bob", lines=[
            line("p-cup", 2, eur(12, 500_000_000))]), metadata=meta, timeout=10)
        cmd.CancelOrder(pb.CancelOrderRequest(request_id=rid(), order_id="o-2", expected_version=1,
                                              reason=types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST,
                                              note="changed my mind"), metadata=meta, timeout=10)

        # o-3: confirmed, then cancelled for want of stock; what it held is released.
        cmd.PlaceOrder(pb.PlaceOrderRequest(request_id=rid(), order_id="o-3", customer_id="c-ada", lines=[
            line("p-cup", 1, eur(12, 500_000_000)), line("p-tea", 2, eur(4, 200_000_000))]), metadata=meta, timeout=10)
        cmd.ReserveCredit(pb.ReserveCreditRequest(request_id=rid(), customer_id="c-ada", expected_version=2,
                                                  amount=eur(20, 900_000_000), order_id="o-3"), metadata=meta, timeout=10)
        cmd.ReserveStock(pb.ReserveStockRequest(request_id=rid(), product_id="p-cup", expected_version=1, quantity=1,
                                                order_id="o-3"), metadata=meta, timeout=10)
        cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id="o-3", expected_version=1),
                         metadata=meta, timeout=10)
        cmd.CancelOrder(pb.CancelOrderRequest(request_id=rid(), order_id="o-3", expected_version=2,
                                              reason=types_pb2.CANCELLATION_REASON_OUT_OF_STOCK,
                                              note="the tea ran out"), metadata=meta, timeout=10)
        cmd.ReleaseStock(pb.ReleaseStockRequest(request_id=rid(), product_id="p-cup", expected_version=2, quantity=1,
                                                order_id="o-3"), metadata=meta, timeout=10)
        cmd.ReleaseCredit(pb.ReleaseCreditRequest(request_id=rid(), customer_id="c-ada", expected_version=3,
                                                  amount=eur(20, 900_000_000), order_id="o-3"), metadata=meta, timeout=10)

        # o-4: left placed, in another currency, with amounts that carry nanos into units.
        cmd.PlaceOrder(pb.PlaceOrderRequest(request_id=rid(), order_id="o-4", customer_id="c-cy", lines=[
            line("p-tea", 7, usd(3, 333_333_333)), line("p-cup", 1_000_000, usd(0, 1))]), metadata=meta, timeout=10)

        # o-5: left placed; more pots arrive.
        cmd.PlaceOrder(pb.PlaceOrderRequest(request_id=rid(), order_id="o-5", customer_id="c-bob", lines=[
            line("p-pot", 1, eur(39, 990_000_000))]), metadata=meta, timeout=10)
        cmd.AddStock(pb.AddStockRequest(request_id=rid(), product_id="p-pot", expected_version=2, quantity=10),
                     metadata=meta, timeout=10)
    return next(step) - 1


# --- the recorded file -----------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def dump(payloads: list[bytes]) -> bytes:
    """Serialised Envelopes, each after its length as a varint (protobuf's delimited form)."""
    return b"".join(_varint(len(p)) + p for p in payloads)


def load(data: bytes) -> Iterator[bytes]:
    """The serialised Envelopes of a `dump`, as they were written."""
    at = 0
    while at < len(data):
        size = shift = 0
        while True:
            byte = data[at]
            at += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        yield data[at:at + size]
        at += size


def envelopes(path: Path = FIXTURE_V1) -> list[events_pb2.Envelope]:
    """The recorded events as they are stored, not upcast."""
    return [events_pb2.Envelope.FromString(p) for p in load(path.read_bytes())]


def record(out: Path) -> None:
    """Writes the history with this checkout's command server and saves its events to `out`."""
    from server.config import libpq_url
    from server.devstack.embedded import EmbeddedNats, EmbeddedPostgres
    from server.platform.migrations import upgrade
    from tests.harness import Stack, serving, wait_until

    with tempfile.TemporaryDirectory(prefix="orders-history-") as tmp:
        root = Path(tmp)
        postgres, nats = EmbeddedPostgres(root / "pg"), EmbeddedNats(root / "nats")
        postgres.start()
        nats.start()
        stack = None
        try:
            url = postgres.admin_url.rsplit("/", 1)[0] + "/history"
            with psycopg.connect(postgres.admin_url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE history")
            upgrade(url)
            (root / "logs").mkdir()
            stack = Stack(url, nats.url, root / "logs")
            stack.start("command-server")
            wait_until(lambda: stack is not None and stack.alive() and serving(stack.command_addr),
                       what="command-server SERVING")
            written = write_history(stack.command_addr, FIXTURE_TENANT)
            with psycopg.connect(libpq_url(url)) as db:
                payloads = [bytes(r[0]) for r in db.execute("SELECT payload FROM events ORDER BY id")]
            assert len(payloads) == written, (len(payloads), written)
            out.write_bytes(dump(payloads))
            print(f"{len(payloads)} events written to {out}")
        finally:
            if stack is not None:
                stack.stop_all()
            nats.stop()
            postgres.stop()


if __name__ == "__main__":
    record(Path(sys.argv[1]))
