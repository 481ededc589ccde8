"""Events written by the code before OrderPlaced's schema version 2 (tests/fixtures/events-v1.binpb,
tenant `legacy`) and the same history written by today's command server (tenant `current`) give
the same read models: through the relay, the stream and the projector, and rebuilt from the
`events` table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import DateTime, Table

from orders.v1 import events_pb2
from projector.views import MODELS
from projector.views.base import shadow_name
from server.config import libpq_url
from server.platform.schema import NOTIFY_CHANNEL
from tests.e2e.history import FIXTURE_TENANT, FIXTURE_V1, load, write_history
from tests.e2e.projection import lagging_aggregates
from tests.harness import Stack, serving, wait_until

pytestmark = pytest.mark.e2e

CURRENT = "current"
# Differ between two writings of one history by nature: when, and where in the stream and table.
UNCOMPARED = {"tenant_id", "stream_seq", "change_seq"}


def compared_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.name not in UNCOMPARED and not isinstance(c.type, DateTime)]


def read_models(db: psycopg.Connection[Any], tenant_id: str, *, shadow: bool = False) -> dict[str, list[Any]]:
    """Every read-model table's rows of one tenant (live or shadow), without times and positions."""
    snapshot = {}
    for model in MODELS:
        for table in model.tables:
            columns = compared_columns(table)
            name = shadow_name(table.name) if shadow else table.name
            snapshot[table.name] = db.execute(
                f"SELECT {', '.join(columns)} FROM {name} WHERE tenant_id = %s"
                f" ORDER BY {', '.join(str(n + 1) for n in range(len(columns)))}", (tenant_id,)).fetchall()
    return snapshot


def insert_old_events(db: psycopg.Connection[Any]) -> int:
    """The recorded events as the old command side left them in the `events` table: unpublished
    rows whose payload is the serialised Envelope, bytes untouched."""
    payloads = list(load(FIXTURE_V1.read_bytes()))
    with db.transaction():
        for payload in payloads:
            env = events_pb2.Envelope.FromString(payload)
            db.execute(
                """INSERT INTO events (event_id, tenant_id, aggregate_type, aggregate_id, aggregate_version, event_type,
                                       payload, headers)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                (env.event_id, env.tenant_id, env.aggregate_type, env.aggregate_id, env.aggregate_version,
                 env.event_type, payload, Jsonb({})))
        db.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return len(payloads)


def test_old_events_in_the_stream_and_the_events_table_build_the_read_models_new_ones_do(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack(database_url, nats_url, tmp_path)
    for role in ("command-server", "relay", "projector"):
        stack.start(role)
    wait_until(lambda: stack.alive() and serving(stack.command_addr), what="command-server SERVING")
    db = psycopg.connect(libpq_url(database_url), autocommit=True)
    try:
        # Given the old history in the events table (the relay publishes it, as it did then) and
        # the same history written now
        old = insert_old_events(db)
        new = write_history(stack.command_addr, CURRENT)
        assert old == new

        def applied() -> bool:
            rows: dict[str, int] = dict(db.execute("SELECT tenant_id, count(*) FROM applied_versions GROUP BY 1").fetchall())
            return lagging_aggregates(db) == 0 and rows.get(FIXTURE_TENANT) == rows.get(CURRENT) == 11

        wait_until(applied, timeout=60, what="both histories applied")
        versions = db.execute(
            """SELECT tenant_id, event_type, payload FROM events WHERE event_type = 'OrderPlaced' ORDER BY id""").fetchall()
        written = {(t, events_pb2.Envelope.FromString(p).schema_version) for t, _, p in versions}
        assert written == {(FIXTURE_TENANT, 1), (CURRENT, 2)}
        assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)

        # Then the projector built the same read models from the old stream as from the new one
        live = read_models(db, CURRENT)
        assert read_models(db, FIXTURE_TENANT) == live
        assert all(live.values()), {name: len(rows) for name, rows in live.items()}
        # (revenue comes from each line's amount: version 1 events have it only once upcast)
        sales = db.execute("""SELECT revenue_ordered, revenue_cancelled FROM product_sales
                              WHERE tenant_id = %s AND product_id = 'p-tea' AND currency_code = 'EUR'""",
                           (FIXTURE_TENANT,)).fetchone()
        assert sales is not None and [str(v) for v in sales] == ["21.000000000", "8.400000000"]

        # And each read model rebuilt from the events table, old rows and new, is the same again
        for model in MODELS:
            built = stack.cli("rebuild", model.name)
            assert built.returncode == 0, built.stderr
            parity = stack.cli("parity", model.name)
            assert parity.returncode == 0 and "equal" in parity.stdout, parity.stdout
        assert read_models(db, FIXTURE_TENANT, shadow=True) == live
        assert read_models(db, CURRENT, shadow=True) == live
    finally:
        db.close()
        stack.stop_all()
