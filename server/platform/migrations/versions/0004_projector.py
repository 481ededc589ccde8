"""Read models customer_orders and product_sales (each with its private index), dead letters,
rebuild bookkeeping, and the stream sequence of each published event.

Revision ID: 0004
Revises: 0003
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _money(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Numeric(38, 9), nullable=False)


def upgrade() -> None:
    op.add_column("events", sa.Column("stream_seq", sa.BigInteger, nullable=True))
    op.create_table(
        "customer_orders",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        *[c for s in ("placed", "confirmed", "shipped", "cancelled")
          for c in (sa.Column(f"{s}_count", sa.BigInteger, nullable=False), _money(f"{s}_value"))],
        sa.Column("last_order_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id", "currency_code", name="pk_customer_orders"),
    )
    op.create_table(
        "customer_order_states",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        _money("total"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", name="pk_customer_order_states"),
    )
    op.create_table(
        "product_sales",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("units_ordered", sa.BigInteger, nullable=False),
        _money("revenue_ordered"),
        sa.Column("units_cancelled", sa.BigInteger, nullable=False),
        _money("revenue_cancelled"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "product_id", "currency_code", name="pk_product_sales"),
    )
    op.create_table(
        "product_sales_orders",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("lines", postgresql.JSONB, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", name="pk_product_sales_orders"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("aggregate_type", sa.String(32), nullable=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("aggregate_version", sa.BigInteger, nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("event_type", sa.String(64), nullable=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", postgresql.JSONB, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), server_default=sa.text("'parked'"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint("stream_seq", name="uq_dead_letters_stream_seq"),
    )
    # The projector asks, per batch, which of its aggregates are parked: only parked rows matter.
    op.create_index("ix_dead_letters_parked", "dead_letters", ["aggregate_type", "aggregate_id"],
                    postgresql_where=sa.text("status = 'parked'"))
    op.create_table(
        "rebuilds",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("high_water_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_rebuilds"),
    )
    op.create_table(
        "rebuild_versions",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("aggregate_type", sa.String(32), nullable=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("model", "tenant_id", "aggregate_type", "aggregate_id", name="pk_rebuild_versions"),
    )
    # A rebuild's catch-up looks only at aggregates the projector touched since the rebuild began.
    op.create_index("ix_applied_versions_applied_at", "applied_versions", ["applied_at"])


def downgrade() -> None:
    op.drop_index("ix_applied_versions_applied_at", "applied_versions")
    for table in ("rebuild_versions", "rebuilds", "dead_letters", "product_sales_orders", "product_sales",
                  "customer_order_states", "customer_orders"):
        op.drop_table(table)
    op.drop_column("events", "stream_seq")
