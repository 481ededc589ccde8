"""Alembic environment: runs migrations online, serialised by an advisory lock; at the newest
schema, brings the grants to the matrix (server/platform/privileges.py)."""

from __future__ import annotations

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from server.platform.migrations import roles

MIGRATION_LOCK_KEY = 0x6F72646572730000

url = context.config.get_main_option("sqlalchemy.url")
assert url is not None
engine = create_engine(url)
with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    # No statement of a migration waits long for a table lock (see upgrade()).
    lock_timeout_ms = int(context.config.attributes.get("lock_timeout_ms", 5000))
    connection.execute(text(f"SET lock_timeout = {lock_timeout_ms}"))
    connection.commit()
    try:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        heads = set(ScriptDirectory.from_config(context.config).get_heads())
        if set(context.get_context().get_current_heads()) == heads:
            # A table added by a later migration gets its grants from the matrix, in one transaction.
            roles.converge_grants(connection)
            connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
engine.dispose()
