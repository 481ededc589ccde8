"""Operator commands against services that are down, silent or misconfigured: a non-zero exit within
the bound with one line naming the service and its address, never a hang nor a traceback; and
--json output a script can read, against a live stack."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from projector.ops.commands import STATUS_KEYS
from server.platform.process import free_port
from tests.harness import ROOT, Stack

BOUND_SECONDS = 5.0  # the promise: an operator command answers within this, whatever the services do
PASSWORD = "s3cret-pw"
OURS = ("DATABASE_URL", "NATS_URL", "COMMAND_ADDR", "QUERY_ADDR", "METRICS_ADDR", "LOG_LEVEL", "ORDERS_")


def orders(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`orders <args>` with only `env` of our variables; a hang fails the test at the timeout."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**base, **env}, timeout=2 * BOUND_SECONDS)
    return result, time.monotonic() - started


def assert_refused(result: subprocess.CompletedProcess[str], elapsed: float, *expected: str) -> None:
    """Exit 2 within the bound, stderr saying `expected`, no traceback, no password."""
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    assert elapsed < BOUND_SECONDS, f"took {elapsed:.1f}s: {said}"
    assert "Traceback" not in said and PASSWORD not in said, said
    for text in expected:
        assert text in result.stderr, said


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word: a hung or black-holed service."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def nothing_at(port: int) -> tuple[str, str]:
    return f"postgresql://orders:{PASSWORD}@127.0.0.1:{port}/orders", f"nats://127.0.0.1:{port}"


@pytest.mark.parametrize("command", [("status",), ("projector", "pause"), ("projector", "resume")])
def test_a_nats_command_with_nothing_listening_says_nats_is_unreachable(command: tuple[str, ...]) -> None:
    port = free_port()
    database_url, nats_url = nothing_at(port)

    result, elapsed = orders(*command, DATABASE_URL=database_url, NATS_URL=nats_url)

    assert_refused(result, elapsed, f"cannot reach NATS at nats://127.0.0.1:{port}", "check NATS_URL")


@pytest.mark.parametrize("command", [
    ("outbox", "status"), ("outbox", "republish", "--since", "2026-01-01T00:00:00Z"), ("dlq", "list"),
    ("dlq", "show", "1"), ("dlq", "replay", "--all"), ("dlq", "discard", "1"), ("rebuild", "order_summaries"),
    ("parity", "order_summaries"), ("swap", "order_summaries"), ("migrate",),
])
def test_a_database_command_with_nothing_listening_says_postgresql_is_unreachable(command: tuple[str, ...]) -> None:
    port = free_port()
    database_url, _ = nothing_at(port)

    result, elapsed = orders(*command, DATABASE_URL=database_url)

    assert_refused(result, elapsed, f"cannot reach PostgreSQL at postgresql://127.0.0.1:{port}/orders",
                   "check DATABASE_URL")


def test_status_with_postgresql_down_names_postgresql(stack: Stack) -> None:
    port = free_port()
    database_url, _ = nothing_at(port)

    result, elapsed = orders("status", DATABASE_URL=database_url, NATS_URL=stack.nats_url)

    assert_refused(result, elapsed, f"cannot reach PostgreSQL at postgresql://127.0.0.1:{port}/orders")


@pytest.mark.parametrize("command", [("status",), ("outbox", "status"), ("dlq", "list")])
def test_a_service_that_never_answers_is_given_up_on_within_the_bound(command: tuple[str, ...],
                                                                       silent_port: int) -> None:
    database_url, nats_url = nothing_at(silent_port)

    result, elapsed = orders(*command, DATABASE_URL=database_url, NATS_URL=nats_url)

    assert_refused(result, elapsed, "no answer within 2s")


def test_a_missing_url_says_which_variable_to_set() -> None:
    without_database, elapsed = orders("status")
    assert_refused(without_database, elapsed, "DATABASE_URL is not set", "postgresql://")

    database_url, _ = nothing_at(free_port())
    without_nats, elapsed = orders("projector", "pause", DATABASE_URL=database_url)
    assert_refused(without_nats, elapsed, "NATS_URL is not set", "nats://")


@pytest.mark.parametrize("command", [
    ("status",), ("outbox", "status"), ("dlq", "list"), ("migrate",), ("up",),
    ("command-server",), ("query-server",), ("relay",), ("projector",),
])
def test_malformed_variables_are_each_named_by_every_command(command: tuple[str, ...]) -> None:
    result, elapsed = orders(*command, ORDERS_PARTITIONS="abc", ORDERS_GRACE_SECONDS="-1", COMMAND_ADDR="nohost",
                             DATABASE_URL=f"mysql://orders:{PASSWORD}@db:3306/orders")

    assert_refused(result, elapsed, "ORDERS_PARTITIONS='abc': not a whole number",
                   "ORDERS_GRACE_SECONDS='-1': negative", "COMMAND_ADDR='nohost': no port",
                   "DATABASE_URL='mysql://db:3306/orders': scheme 'mysql'")
    assert len(result.stderr.splitlines()) == 4


def test_a_database_without_the_schema_says_to_migrate(postgres_admin_url: str) -> None:
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS orders_unmigrated")
        admin.execute("CREATE DATABASE orders_unmigrated")
    database_url = postgres_admin_url.rsplit("/", 1)[0] + "/orders_unmigrated"

    result, elapsed = orders("outbox", "status", DATABASE_URL=database_url)

    assert_refused(result, elapsed, "lacks the orders schema", "run `orders migrate`")


def json_of(stack: Stack, *args: str) -> dict[str, Any]:
    result = stack.cli(*args, "--json", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_status_json_carries_every_figure_as_numbers(stack: Stack) -> None:
    figures = json_of(stack, "status")

    assert set(figures) == set(STATUS_KEYS)
    assert all(isinstance(figures[k], int) for k in ("stream_last_seq", "checkpoint", "dead_letters"))
    human = stack.cli("status", timeout=60).stdout
    assert f"checkpoint: {figures['checkpoint']}" in human and "{" not in human


def test_outbox_status_json_names_the_active_relay_with_an_iso_time(stack: Stack) -> None:
    figures = json_of(stack, "outbox", "status")

    assert set(figures) == {"unpublished_events", "oldest_unpublished_seconds", "active_relay", "stream"}
    stream = figures["stream"]
    assert (stream["name"], stream["exists"], stream["replicas"], stream["differences"]) == ("ORDERS_EVENTS", True, 1, [])
    assert isinstance(figures["unpublished_events"], int) and isinstance(figures["oldest_unpublished_seconds"], float)
    relay = figures["active_relay"]
    assert isinstance(relay, dict) and set(relay) == {"name", "client_addr", "backend_pid", "since"}
    assert relay["name"].startswith("orders-relay") and isinstance(relay["backend_pid"], int)
    assert dt.datetime.fromisoformat(relay["since"]).tzinfo is not None


def test_dlq_list_json_lists_parked_letters_with_iso_times(stack: Stack, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO dead_letters (stream_seq, subject, tenant_id, aggregate_type, aggregate_id, payload, headers,"
        " reason, error) VALUES (%s, 'orders.events.order.0.o-json', 'default', 'order', 'o-json', '', '{}',"
        " 'undecodable', 'not an envelope')", (2**40,),
    )

    listing = json_of(stack, "dlq", "list")

    assert listing["parked"] == 1
    [letter] = listing["dead_letters"]
    assert letter["aggregate_id"] == "o-json" and letter["reason"] == "undecodable" and letter["resolved_at"] is None
    assert isinstance(letter["id"], int) and dt.datetime.fromisoformat(letter["created_at"]).tzinfo is not None
