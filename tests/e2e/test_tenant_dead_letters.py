"""Tenants at the projector: an event of no valid tenant becomes a dead letter and never a row,
and a dead letter parks its own tenant's aggregate only, even where two tenants' ids collide."""

from __future__ import annotations

import psycopg
import pytest

from orders.v1 import command_service_pb2 as pb
from orders.v1 import query_service_pb2 as query_pb
from orders.v1 import types_pb2
from server.platform import messaging
from tests.e2e.client import as_tenant, commands, new_id, place_for_a_new_customer, queries
from tests.e2e.streams import envelope, garbage, publish
from tests.harness import Stack, scalar, wait_until

pytestmark = pytest.mark.e2e



def subject(tenant_id: str, order_id: str) -> str:
    return messaging.subject_for(tenant_id, "order", order_id, 16)



def letters(db: psycopg.Connection, order_id: str) -> list[tuple[str, str, str]]:
    """(tenant, reason, status) of the order's dead letters, oldest first."""
    return [(r[0], r[1], r[2]) for r in db.execute(
        "SELECT tenant_id, reason, status FROM dead_letters WHERE aggregate_id = %s ORDER BY id", (order_id,))]


def test_events_of_an_empty_or_malformed_tenant_are_dead_letters_and_never_rows(
        stack: Stack, db: psycopg.Connection) -> None:
    empty, dotted = new_id("o-empty"), new_id("o-dotted")
    # Valid envelopes of a known type; subjects of the layout that names no tenant, so only the
    # envelope's own tenant can be judged.
    publish(stack.nats_url, [
        (f"{messaging.SUBJECT_PREFIX}.order.0.{empty}", envelope(empty, 1, tenant_id="").SerializeToString()),
        (f"{messaging.SUBJECT_PREFIX}.order.0.{dotted}", envelope(dotted, 1, tenant_id="../x").SerializeToString()),
    ])

    wait_until(lambda: scalar(db, "SELECT count(*) FROM dead_letters WHERE aggregate_id IN (%s, %s)", empty, dotted) == 2,
               timeout=30, what="two dead letters")
    rows = db.execute("SELECT tenant_id, reason, error FROM dead_letters WHERE aggregate_id IN (%s, %s) ORDER BY tenant_id",
                      (empty, dotted)).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("", "tenant_invalid"), ("../x", "tenant_invalid")]
    assert all("1-64 ASCII letters" in r[2] for r in rows)
    for table, column in (("order_summaries", "order_id"), ("customer_order_states", "order_id"),
                          ("product_sales_orders", "order_id"), ("applied_versions", "aggregate_id")):
        assert scalar(db, f"SELECT count(*) FROM {table} WHERE {column} IN (%s, %s)", empty, dotted) == 0, table
    for table in ("customer_orders", "product_sales"):
        assert scalar(db, f"SELECT count(*) FROM {table} WHERE tenant_id IN ('', '../x')") == 0, table


def test_garbage_on_one_tenants_order_parks_that_order_and_not_another_tenants_with_the_same_id(
        stack: Stack, db: psycopg.Connection) -> None:
    tenant_a, tenant_b = new_id("ta"), new_id("tb")
    order_id = new_id("o")
    publish(stack.nats_url, [(subject(tenant_a, order_id), garbage())])
    wait_until(lambda: letters(db, order_id) == [(tenant_a, "undecodable", "parked")], timeout=30,
               what="the garbage parked as tenant A's")

    # Tenant B's order with the same id is placed and confirmed, and its read model follows.
    placed_b = place_for_a_new_customer(stack.command_addr, tenant_b, order_id)
    _, cmd = commands(stack.command_addr)
    confirmed = cmd.ConfirmOrder(pb.ConfirmOrderRequest(request_id=new_id("r"), order_id=order_id, expected_version=1),
                                 metadata=as_tenant(tenant_b), timeout=10)
    _, query = queries(stack.query_addr)
    summary = query.GetOrderSummary(query_pb.GetOrderSummaryRequest(
        order_id=order_id, consistency_token=confirmed.consistency_token), metadata=as_tenant(tenant_b), timeout=20).summary
    assert (summary.version, summary.state) == (2, types_pb2.ORDER_STATE_CONFIRMED)
    assert placed_b.version == 1

    # Tenant A's own order of that id parks behind A's garbage.
    place_for_a_new_customer(stack.command_addr, tenant_a, order_id)
    wait_until(lambda: letters(db, order_id) == [(tenant_a, "undecodable", "parked"), (tenant_a, "parked_behind", "parked")],
               timeout=30, what="A's order parked behind A's garbage")
    assert scalar(db, "SELECT count(*) FROM order_summaries WHERE tenant_id = %s", tenant_a) == 0
    assert scalar(db, "SELECT version FROM order_summaries WHERE tenant_id = %s AND order_id = %s", tenant_b, order_id) == 2


def test_replay_and_discard_touch_only_their_own_tenants_aggregate(stack: Stack, db: psycopg.Connection) -> None:
    tenant_a, tenant_b = new_id("ta"), new_id("tb")
    order_id = new_id("o")
    publish(stack.nats_url, [(subject(tenant_a, order_id), garbage()), (subject(tenant_b, order_id), garbage())])
    wait_until(lambda: len(letters(db, order_id)) == 2, timeout=30, what="both tenants' garbage parked")
    place_for_a_new_customer(stack.command_addr, tenant_a, order_id)
    place_for_a_new_customer(stack.command_addr, tenant_b, order_id)
    wait_until(lambda: len(letters(db, order_id)) == 4, timeout=30, what="both tenants' orders parked behind it")

    def letter(tenant_id: str, reason: str) -> str:
        return str(scalar(db, "SELECT id FROM dead_letters WHERE tenant_id = %s AND aggregate_id = %s AND reason = %s",
                          tenant_id, order_id, reason))

    discarded = stack.cli("dlq", "discard", letter(tenant_a, "undecodable"), timeout=60)
    assert discarded.returncode == 0 and f"tenant {tenant_a}" in discarded.stdout, discarded.stdout + discarded.stderr
    replayed = stack.cli("dlq", "replay", letter(tenant_a, "parked_behind"), timeout=60)
    assert replayed.returncode == 0 and "replayed" in replayed.stdout, replayed.stdout + replayed.stderr

    assert scalar(db, "SELECT version FROM order_summaries WHERE tenant_id = %s AND order_id = %s", tenant_a, order_id) == 1
    assert scalar(db, "SELECT count(*) FROM order_summaries WHERE tenant_id = %s", tenant_b) == 0
    assert letters(db, order_id) == [(tenant_a, "undecodable", "discarded"), (tenant_b, "undecodable", "parked"),
                                     (tenant_a, "parked_behind", "replayed"), (tenant_b, "parked_behind", "parked")]
