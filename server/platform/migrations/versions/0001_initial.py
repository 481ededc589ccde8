"""Write tables (customers, orders, order_lines, events, idempotency) and read tables
(order_summaries, applied_versions, projection_checkpoints).

Revision ID: 0001
Revises:
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created_at() -> sa.Column[Any]:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id", name="pk_customers"),
    )
    op.create_table(
        "orders",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("total", sa.Numeric(38, 9), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", name="pk_orders"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "customer_id"],
            ["customers.tenant_id", "customers.customer_id"],
            name="fk_orders_tenant_id_customers",
        ),
    )
    op.create_table(
        "order_lines",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("unit_price", sa.Numeric(38, 9), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", "line_no", name="pk_order_lines"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "order_id"],
            ["orders.tenant_id", "orders.order_id"],
            name="fk_order_lines_tenant_id_orders",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("aggregate_type", sa.String(32), nullable=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("aggregate_version", sa.BigInteger, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", postgresql.JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        _created_at(),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sa.UniqueConstraint(
            "tenant_id", "aggregate_type", "aggregate_id", "aggregate_version", name="uq_events_tenant_id"
        ),
    )
    # The relay's scan: only unpublished rows, in id order; stays small however long the log grows.
    op.create_index(
        "ix_events_unpublished", "events", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "idempotency",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.LargeBinary, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name="pk_idempotency"),
    )

    op.create_table(
        "order_summaries",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("total", sa.Numeric(38, 9), nullable=False),
        sa.Column("lines", postgresql.JSONB, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", name="pk_order_summaries"),
    )
    op.create_index("ix_order_summaries_customer_id", "order_summaries", ["customer_id"])
    op.create_table(
        "applied_versions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("aggregate_type", sa.String(32), nullable=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "aggregate_type", "aggregate_id", name="pk_applied_versions"),
    )
    op.create_table(
        "projection_checkpoints",
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", name="pk_projection_checkpoints"),
    )


def downgrade() -> None:
    for table in (
        "projection_checkpoints",
        "applied_versions",
        "order_summaries",
        "idempotency",
        "events",
        "order_lines",
        "orders",
        "customers",
    ):
        op.drop_table(table)
