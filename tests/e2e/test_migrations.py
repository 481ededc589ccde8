"""Migrations never hold a table up for long: a schema change that waits behind a long
transaction gives up after its lock timeout, rolls back whole and tries again, while the
table's other users carry on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config

from server.config import libpq_url, sqlalchemy_url
from server.platform import migrations
from server.platform.migrations import MigrationBlockedError, upgrade

pytestmark = pytest.mark.e2e


def at_revision(url: str) -> str:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert row is not None
    return str(row[0])


def downgrade(url: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    command.downgrade(cfg, revision)


def test_a_migration_behind_a_long_transaction_gives_up_and_leaves_the_table_to_its_users(
    database_url: str,
) -> None:
    head = at_revision(database_url)
    downgrade(database_url, "0009")  # the next migration adds a column to customers
    url = libpq_url(database_url)
    with psycopg.connect(url) as long_one:
        long_one.execute("SELECT count(*) FROM customers")  # a transaction left open: ACCESS SHARE
        outcome: list[BaseException | None] = []

        def migrate() -> None:
            try:
                upgrade(database_url, lock_timeout=0.5, attempts=2)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001  (what the migration ended with is the finding)
                outcome.append(exc)

        migrator = threading.Thread(target=migrate)
        migrator.start()
        # Meanwhile the table's readers carry on: queued behind the waiting ALTER for at most
        # its lock timeout, not for as long as the long transaction lasts.
        reads = 0
        while migrator.is_alive():
            with psycopg.connect(url, autocommit=True) as reader:
                reader.execute("SET statement_timeout = 2000")  # a read held for good fails the test
                reader.execute("SELECT count(*) FROM customers")
            reads += 1
            time.sleep(0.1)
        migrator.join()
        assert reads > 0
        assert isinstance(outcome[0], MigrationBlockedError), outcome
        assert "orders migrate" in str(outcome[0])
        assert at_revision(database_url) == "0009"  # rolled back whole
        long_one.rollback()

    upgrade(database_url, lock_timeout=0.5, attempts=2)  # the long transaction over, it goes through
    assert at_revision(database_url) == head
