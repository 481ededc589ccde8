"""One database role per process: the grants are the matrix, a role cannot write where it has no
business, a migrating user who may not create the roles is told what to create, and the embedded
server asks everyone for a password."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from server.config import libpq_url
from server.devstack.embedded import EmbeddedPostgres, database_logins
from server.platform import privileges
from server.platform.migrations import upgrade
from server.platform.migrations.roles import MissingRolesError
from tests.e2e.grants import grant_problems
from tests.harness import ROOT

pytestmark = pytest.mark.e2e

WRITE_TABLES = ("customers", "products", "orders", "order_lines", "idempotency", "events")
READ_MODELS = ("order_summaries", "customer_orders", "customer_order_states", "product_sales", "product_sales_orders",
               "customer_credit", "product_stock")
BOOKKEEPING = ("applied_versions", "projection_checkpoints", "dead_letters", "rebuilds", "rebuild_versions")


@pytest.fixture(scope="module")
def logins(database_url: str) -> dict[str, str]:
    """Each process's own login, as the harness gives it to the roles it starts."""
    owner = urlsplit(database_url)
    return database_logins(libpq_url(database_url), owner.password or owner.netloc, tuple(privileges.ROLE_OF_PROCESS))


def writes(db: psycopg.Connection[Any], table: str) -> list[str]:
    """An INSERT, an UPDATE and a DELETE of `table`, each valid SQL whatever its columns."""
    row = db.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                     " AND table_name = %s ORDER BY ordinal_position LIMIT 1", (table,)).fetchone()
    assert row is not None, table
    return [f"INSERT INTO {table} DEFAULT VALUES", f"UPDATE {table} SET {row[0]} = {row[0]}", f"DELETE FROM {table}"]


def refused(url: str, statements: list[str]) -> list[str]:
    """The statements the login may not run: each tried in a transaction that is rolled back."""
    denied = []
    with psycopg.connect(url) as conn:
        for statement in statements:
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                denied.append(statement)
            except psycopg.Error:
                pass  # allowed, then refused by a constraint: not a privilege error
            conn.rollback()
    return denied


def test_the_database_grants_are_exactly_the_matrix(db: psycopg.Connection[Any]) -> None:
    assert grant_problems(db) == []


def test_a_table_the_matrix_does_not_name_or_a_stray_grant_is_reported(db: psycopg.Connection[Any]) -> None:
    with db.transaction(force_rollback=True):
        db.execute("CREATE TABLE unplanned (id bigint)")
        db.execute(f"GRANT DELETE ON TABLE orders TO {privileges.QUERY}")

        problems = grant_problems(db)

    assert "unplanned: not in the grant matrix (server/platform/privileges.py)" in problems
    assert f"orders: {privileges.QUERY} has DELETE" in problems


def test_the_query_server_role_can_write_nothing(db: psycopg.Connection[Any], logins: dict[str, str]) -> None:
    for table in (*READ_MODELS, *BOOKKEEPING, *WRITE_TABLES):
        statements = writes(db, table)
        assert refused(logins["query-server"], statements) == statements, table


def test_the_projector_role_cannot_touch_the_write_side(db: psycopg.Connection[Any], logins: dict[str, str]) -> None:
    for table in WRITE_TABLES:
        statements = [*writes(db, table), f"SELECT * FROM {table}"]
        assert refused(logins["projector"], statements) == statements, table


def test_the_command_server_role_cannot_touch_the_read_models(db: psycopg.Connection[Any], logins: dict[str, str]) -> None:
    for table in (*READ_MODELS, *BOOKKEEPING):
        statements = [*writes(db, table), f"SELECT * FROM {table}"]
        assert refused(logins["command-server"], statements) == statements, table


def test_the_relay_role_cannot_delete_events_nor_touch_anything_else(
    db: psycopg.Connection[Any], logins: dict[str, str]
) -> None:
    assert refused(logins["relay"], ["DELETE FROM events", "INSERT INTO events DEFAULT VALUES"]) == [
        "DELETE FROM events", "INSERT INTO events DEFAULT VALUES"]
    for table in (*READ_MODELS, *BOOKKEEPING, "orders", "idempotency"):
        statements = [*writes(db, table), f"SELECT * FROM {table}"]
        assert refused(logins["relay"], statements) == statements, table


def test_each_role_may_do_what_its_process_needs(db: psycopg.Connection[Any], logins: dict[str, str]) -> None:
    # The controls: the same helper finds no refusal where the matrix grants.
    assert refused(logins["query-server"], ["SELECT * FROM order_summaries", "SELECT * FROM applied_versions"]) == []
    assert refused(logins["relay"], ["SELECT * FROM events", "UPDATE events SET published_at = published_at"]) == []
    assert refused(logins["projector"], writes(db, "order_summaries")[:2]) == []


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_migrating_user_who_may_not_create_the_roles_is_told_what_to_create(own_postgres: EmbeddedPostgres) -> None:
    with psycopg.connect(own_postgres.admin_url, autocommit=True) as admin:
        admin.execute("CREATE ROLE migrator LOGIN PASSWORD 'migrator-password' CREATEDB")
        admin.execute("CREATE DATABASE owned OWNER migrator")  # its public schema is the owner's too
    url = f"postgresql://migrator:migrator-password@127.0.0.1:{own_postgres.port}/owned"

    with pytest.raises(MissingRolesError) as raised:
        upgrade(url)
    migrate = subprocess.run([sys.executable, "-m", "server", "migrate"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "DATABASE_URL": url})

    assert "CREATE ROLE orders_command NOLOGIN; CREATE ROLE orders_query NOLOGIN;" in str(raised.value)
    assert migrate.returncode == 2 and "CREATE ROLE orders_relay NOLOGIN" in migrate.stderr, migrate.stderr
    assert "Traceback" not in migrate.stderr
    # Once an administrator has created them, the same user migrates.
    with psycopg.connect(own_postgres.admin_url, autocommit=True) as admin:
        for role in privileges.ROLES:
            admin.execute(f"CREATE ROLE {role} NOLOGIN")
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as owned:
        assert grant_problems(owned) == []


def test_the_embedded_server_wants_the_password_kept_for_it(own_postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    kept = tmp_path / "postgres.password"
    without = f"postgresql://postgres@127.0.0.1:{own_postgres.port}/postgres"
    wrong = f"postgresql://postgres:wrong@127.0.0.1:{own_postgres.port}/postgres"

    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert kept.read_text().strip() == own_postgres.password
    for url in (without, wrong):
        with pytest.raises(psycopg.OperationalError, match="no password supplied|password authentication failed"):
            psycopg.connect(url, connect_timeout=5)
    psycopg.connect(own_postgres.admin_url, connect_timeout=5).close()


def test_a_data_folder_made_with_trust_is_switched_to_passwords(tmp_path: Path) -> None:
    # Given a data folder as an older version left it: trust for every connection, no password kept.
    old = EmbeddedPostgres(tmp_path)
    old.start()
    old.stop()
    hba = old.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    (tmp_path / "postgres.password").unlink()

    server = EmbeddedPostgres(tmp_path)
    server.start()
    try:
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres", connect_timeout=5)
        with psycopg.connect(server.url, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    finally:
        server.stop()
