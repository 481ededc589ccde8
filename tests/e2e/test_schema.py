"""The typed tables in code and the schema the migrations build are the same schema."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine

import projector.models  # noqa: F401  (registers the read-model tables)
from projector import read_model
from server import db
from server.config import sqlalchemy_url


def _table(difference: Any) -> str | None:
    op = difference[0] if isinstance(difference, list) else difference
    if op[0].endswith("_table"):
        return str(op[1].name)
    if op[0].startswith(("modify_",)):
        return str(op[2])
    return str(getattr(getattr(op[1], "table", None), "name", None))


def drift(url: str, metadata: MetaData) -> list[Any]:
    """Alembic's own comparison, limited to this metadata's tables (the others belong elsewhere)."""
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            found = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    return [d for d in found if _table(d) in metadata.tables]


def test_the_migrated_schema_matches_the_write_side_tables(database_url: str) -> None:
    assert drift(database_url, db.metadata) == []


def test_the_migrated_schema_matches_the_read_side_tables(database_url: str) -> None:
    assert drift(database_url, read_model.metadata) == []
