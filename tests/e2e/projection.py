"""Helpers for the projector's e2e tests: command traffic, caught-up checks, and the read models
recomputed from the write tables to compare against."""

from __future__ import annotations

import random
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg

from orders.v1 import command_service_pb2 as pb
from orders.v1 import types_pb2
from tests.e2e.client import commands, eur, new_id, place_request, register, rid

Db = psycopg.Connection[Any]


class Traffic:
    """Orders through the command server from a few threads: each order is placed, then with
    some probability confirmed, shipped or cancelled. Some orders also reserve credit and stock,
    released again when they are cancelled, as a saga would. Counts every command that succeeded."""

    def __init__(self, command_addr: str, customers: int = 5, seed: int = 7) -> None:
        self.channel, self.cmd = commands(command_addr)
        self.customers = [new_id("c") for _ in range(customers)]
        for customer_id in self.customers[1:]:
            self.cmd.RegisterCustomer(pb.RegisterCustomerRequest(
                request_id=rid(), customer_id=customer_id, display_name="Ada", email="ada@example.com",
                credit_limit=eur(1_000_000)), timeout=10)
        register(self.cmd, self.customers[0])  # one with no credit at all
        self.events = customers
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        # Each customer's and product's version, and a lock per aggregate so one thread at a time
        # writes it (the expected version is then known, never a conflict).
        self.versions: dict[str, int] = {c: 1 for c in self.customers}
        self.products = new_id("p")  # this traffic's own products: their versions start at 0
        self.aggregate_locks: dict[str, threading.Lock] = {}

    def _locked(self, aggregate_id: str) -> threading.Lock:
        with self.lock:
            return self.aggregate_locks.setdefault(aggregate_id, threading.Lock())

    def _credit(self, customer_id: str, order_id: str, units: int, release: bool) -> int:
        with self._locked(customer_id):
            version = self.versions[customer_id]
            request = (pb.ReleaseCreditRequest if release else pb.ReserveCreditRequest)(
                request_id=rid(), customer_id=customer_id, expected_version=version, amount=eur(units),
                order_id=order_id)
            (self.cmd.ReleaseCredit if release else self.cmd.ReserveCredit)(request, timeout=30)
            self.versions[customer_id] = version + 1
        return 1

    def _stock(self, product_id: str, order_id: str, quantity: int, release: bool) -> int:
        with self._locked(product_id):
            version, done = self.versions.get(product_id, 0), 0
            if not release:  # stock first, then the reservation
                self.cmd.AddStock(pb.AddStockRequest(request_id=rid(), product_id=product_id,
                                                     expected_version=version, quantity=quantity + 1), timeout=30)
                version, done = version + 1, 1
            request = (pb.ReleaseStockRequest if release else pb.ReserveStockRequest)(
                request_id=rid(), product_id=product_id, expected_version=version, quantity=quantity,
                order_id=order_id)
            (self.cmd.ReleaseStock if release else self.cmd.ReserveStock)(request, timeout=30)
            self.versions[product_id] = version + 1
        return done + 1

    def _one_order(self, i: int) -> int:
        order_id = new_id("o")
        lines = [types_pb2.OrderLine(product_id=f"{self.products}-{(i + k) % 7}", quantity=1 + (i + k) % 3, unit_price=eur(2 + k, 500_000_000))
                 for k in range(1 + i % 3)]
        customer_id = self.customers[i % len(self.customers)]
        self.cmd.PlaceOrder(place_request(order_id, customer_id, *lines), timeout=30)
        done, roll = 1, (i * 7919) % 10
        reserves = i % 2 == 1 and customer_id != self.customers[0]
        if reserves:
            done += self._credit(customer_id, order_id, 1 + i % 5, release=False)
            done += self._stock(lines[0].product_id, order_id, lines[0].quantity, release=False)
        if roll < 6:
            self.cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=rid(), order_id=order_id, expected_version=1), timeout=30)
            done += 1
            if roll < 3:
                self.cmd.ShipOrder(pb.ShipOrderRequest(request_id=rid(), order_id=order_id, expected_version=2), timeout=30)
                done += 1
            elif roll < 5:
                self.cmd.CancelOrder(pb.CancelOrderRequest(
                    request_id=rid(), order_id=order_id, expected_version=2,
                    reason=types_pb2.CANCELLATION_REASON_CUSTOMER_REQUEST), timeout=30)
                done += 1
        elif roll < 8:
            self.cmd.CancelOrder(pb.CancelOrderRequest(
                request_id=rid(), order_id=order_id, expected_version=1,
                reason=types_pb2.CANCELLATION_REASON_OTHER, note=f"roll {roll}"), timeout=30)
            done += 1
            if reserves:
                done += self._credit(customer_id, order_id, 1 + i % 5, release=True)
                done += self._stock(lines[0].product_id, order_id, lines[0].quantity, release=True)
        with self.lock:
            self.events += done
        return done

    def run(self, events: int, workers: int = 6) -> None:
        """Issues orders until at least `events` events were written (or stop is set)."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: list[Future[int]] = []
            i = 0
            while (self.events < events or pending) and not self.stop.is_set():
                if self.events < events and len(pending) < workers * 2:
                    pending.append(pool.submit(self._one_order, i))
                    i += 1
                else:
                    pending.pop(0).result()
            for f in pending:
                f.result()

    def close(self) -> None:
        self.channel.close()


def lagging_aggregates(db: Db) -> int:
    """Aggregates whose applied version is not the newest version in the events table."""
    row = db.execute(
        """SELECT count(*) FROM (SELECT tenant_id, aggregate_type, aggregate_id, max(aggregate_version) AS v
                                 FROM events GROUP BY 1, 2, 3) e
           LEFT JOIN applied_versions a USING (tenant_id, aggregate_type, aggregate_id)
           WHERE a.version IS DISTINCT FROM e.v"""
    ).fetchone()
    assert row is not None
    return int(row[0])


def read_model_differences(db: Db) -> dict[str, list[Any]]:
    """Every read-model row that disagrees with the same figure computed from the write tables."""
    checks = {
        "order_summaries": """
            (SELECT tenant_id, order_id, customer_id, state, currency_code, total, version FROM orders
             EXCEPT SELECT tenant_id, order_id, customer_id, state, currency_code, total, version FROM order_summaries)
            UNION ALL
            (SELECT tenant_id, order_id, customer_id, state, currency_code, total, version FROM order_summaries
             EXCEPT SELECT tenant_id, order_id, customer_id, state, currency_code, total, version FROM orders)""",
        "order_summaries.lines": """
            SELECT s.order_id FROM order_summaries s
            WHERE (SELECT coalesce(sum(quantity), 0) FROM order_lines l WHERE l.tenant_id = s.tenant_id AND l.order_id = s.order_id)
               <> (SELECT coalesce(sum((x->>'quantity')::bigint), 0) FROM jsonb_array_elements(s.lines) x)""",
        "customer_orders": """
            WITH w AS (
              SELECT tenant_id, customer_id, currency_code,
                     count(*) FILTER (WHERE state = 'PLACED') AS placed_count,
                     coalesce(sum(total) FILTER (WHERE state = 'PLACED'), 0) AS placed_value,
                     count(*) FILTER (WHERE state = 'CONFIRMED') AS confirmed_count,
                     coalesce(sum(total) FILTER (WHERE state = 'CONFIRMED'), 0) AS confirmed_value,
                     count(*) FILTER (WHERE state = 'SHIPPED') AS shipped_count,
                     coalesce(sum(total) FILTER (WHERE state = 'SHIPPED'), 0) AS shipped_value,
                     count(*) FILTER (WHERE state = 'CANCELLED') AS cancelled_count,
                     coalesce(sum(total) FILTER (WHERE state = 'CANCELLED'), 0) AS cancelled_value
              FROM orders GROUP BY 1, 2, 3),
            r AS (SELECT tenant_id, customer_id, currency_code, placed_count, placed_value, confirmed_count,
                         confirmed_value, shipped_count, shipped_value, cancelled_count, cancelled_value
                  FROM customer_orders)
            (SELECT 'write', * FROM (SELECT * FROM w EXCEPT SELECT * FROM r) x)
            UNION ALL (SELECT 'read', * FROM (SELECT * FROM r EXCEPT SELECT * FROM w) y)""",
        "product_sales": """
            WITH w AS (
              SELECT l.tenant_id, l.product_id, l.currency_code, sum(l.quantity) AS units_ordered,
                     sum(l.quantity * l.unit_price) AS revenue_ordered,
                     coalesce(sum(l.quantity) FILTER (WHERE o.state = 'CANCELLED'), 0) AS units_cancelled,
                     coalesce(sum(l.quantity * l.unit_price) FILTER (WHERE o.state = 'CANCELLED'), 0) AS revenue_cancelled
              FROM order_lines l JOIN orders o USING (tenant_id, order_id) GROUP BY 1, 2, 3),
            r AS (SELECT tenant_id, product_id, currency_code, units_ordered, revenue_ordered, units_cancelled,
                         revenue_cancelled FROM product_sales)
            (SELECT 'write', * FROM (SELECT * FROM w EXCEPT SELECT * FROM r) x)
            UNION ALL (SELECT 'read', * FROM (SELECT * FROM r EXCEPT SELECT * FROM w) y)""",
        "customer_credit": """
            WITH w AS (SELECT tenant_id, customer_id, credit_currency, credit_limit, credit_reserved, version FROM customers),
            r AS (SELECT tenant_id, customer_id, currency_code, credit_limit, credit_reserved, version FROM customer_credit)
            (SELECT 'write', * FROM (SELECT * FROM w EXCEPT SELECT * FROM r) x)
            UNION ALL (SELECT 'read', * FROM (SELECT * FROM r EXCEPT SELECT * FROM w) y)""",
        "product_stock": """
            WITH w AS (SELECT tenant_id, product_id, on_hand, reserved, version FROM products),
            r AS (SELECT tenant_id, product_id, on_hand, reserved, version FROM product_stock)
            (SELECT 'write', * FROM (SELECT * FROM w EXCEPT SELECT * FROM r) x)
            UNION ALL (SELECT 'read', * FROM (SELECT * FROM r EXCEPT SELECT * FROM w) y)""",
    }
    return {name: rows for name, sql in checks.items() if (rows := db.execute(sql).fetchall())}
