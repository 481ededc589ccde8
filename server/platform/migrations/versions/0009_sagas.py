"""The fulfilment saga's state: one row per order it drives, and its consumer's checkpoint.

`wake_at` is the earlier of the saga's deadline and the time its pending command is sent again;
the saga processes wait for the next one through the partial index on it, never by scanning the
table. The rest of a saga (its order's lines, what it holds reserved, its pending command and
its steps) is one JSON document that only the saga reads and writes. The saga drives orders
placed after this migration (saga_checkpoints.drives_since).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from server.platform.migrations import roles

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The saga's group role, orders_saga, on a database whose roles migration 0006 made before
    # there was a saga (the grants follow after the migration, as always).
    roles.create_roles(op.get_bind())
    op.create_table(
        "sagas",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wake_at", sa.DateTime(timezone=True), sa.Computed("LEAST(deadline_at, retry_at)", persisted=True)),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", name="pk_sagas"),
    )
    op.create_index("ix_sagas_wake_at", "sagas", ["wake_at"], postgresql_where=sa.text("wake_at IS NOT NULL"))
    op.create_index("ix_sagas_state", "sagas", ["state", "updated_at"])
    op.create_table(
        "saga_checkpoints",
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("drives_since", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", name="pk_saga_checkpoints"),
    )
    # The saga drives the orders placed from now on: not those of the database's past (some
    # confirmed or cancelled by hand long ago), nor any placed before its first process started.
    op.execute("INSERT INTO saga_checkpoints (consumer, stream_seq) VALUES ('saga', 0)")


def downgrade() -> None:
    op.drop_table("saga_checkpoints")
    op.drop_index("ix_sagas_state", table_name="sagas")
    op.drop_index("ix_sagas_wake_at", table_name="sagas")
    op.drop_table("sagas")
