"""The typed tables in code and the schema the migrations build are the same schema."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import ops
from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, Table, UniqueConstraint, create_engine

import projector.views  # noqa: F401  (registers the read-model tables)
from projector import tables
from server.config import sqlalchemy_url
from server.platform import schema as db
from server.saga import tables as saga_tables


def _table(difference: Any) -> str | None:
    """The table one of alembic's diffs is about. Shapes (alembic.operations.ops, to_diff_tuple):
    (add|remove)_table[_comment]: (kind, Table, ...); (add|remove)_column: (kind, schema, table,
    Column); modify_*: a list of (kind, schema, table, column, ...); indexes and constraints:
    (kind, Index | Constraint)."""
    op = difference[0] if isinstance(difference, list) else difference
    kind = op[0]
    if kind.endswith(("_table", "_table_comment")):
        return str(op[1].name)
    if kind.endswith("_column") or kind.startswith("modify_"):
        return str(op[2])
    table = getattr(op[1], "table", None)
    return str(table.name) if table is not None else None


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
    assert drift(database_url, tables.metadata) == []


def test_the_migrated_schema_matches_the_sagas_tables(database_url: str) -> None:
    assert drift(database_url, saga_tables.metadata) == []


def test_table_names_the_table_of_every_kind_of_diff() -> None:
    """Plain function test, no database: each diff shape alembic produces names its table."""
    metadata = MetaData()
    table = Table("t", metadata, Column("id", Integer, primary_key=True), Column("x", Integer))
    diffs = [
        ops.CreateTableOp.from_table(table).to_diff_tuple(),
        ops.DropTableOp.from_table(table).to_diff_tuple(),
        ops.AddColumnOp("t", Column("y", Integer)).to_diff_tuple(),
        ops.DropColumnOp("t", "x", _reverse=ops.AddColumnOp("t", Column("x", Integer))).to_diff_tuple(),
        ops.AlterColumnOp("t", "x", existing_type=Integer(), modify_nullable=False).to_diff_tuple(),
        ops.AlterColumnOp("t", "x", existing_type=Integer(), modify_type=BigInteger()).to_diff_tuple(),
        ops.AlterColumnOp("t", "x", existing_type=Integer(), modify_server_default="0").to_diff_tuple(),
        ops.CreateIndexOp.from_index(Index("ix_t_x", table.c.x)).to_diff_tuple(),
        ops.DropIndexOp.from_index(Index("ix_t_x2", table.c.x)).to_diff_tuple(),
        ("add_constraint", UniqueConstraint(table.c.x)),
    ]
    assert [d[0][0] if isinstance(d, list) else d[0] for d in diffs] == [
        "add_table", "remove_table", "add_column", "remove_column", "modify_nullable", "modify_type",
        "modify_default", "add_index", "remove_index", "add_constraint"]
    assert [_table(d) for d in diffs] == ["t"] * len(diffs)


def test_added_and_removed_columns_are_reported_as_drift(database_url: str) -> None:
    """A column in code but not in the migrations, or the other way round, is drift: not filtered out."""
    metadata = MetaData()
    for name, table in db.metadata.tables.items():
        if name == "customers":  # the code forgets a column the migrations made
            Table(name, metadata, *(c._copy() for c in table.columns if c.name != "email"))
            continue
        copy = table.to_metadata(metadata)
        if name == "events":  # the code has a column no migration made
            copy.append_column(Column("not_migrated", Integer))
    found = sorted((d[0], d[2], d[3].name) for d in drift(database_url, metadata))
    assert found == [("add_column", "events", "not_migrated"), ("remove_column", "customers", "email")]
