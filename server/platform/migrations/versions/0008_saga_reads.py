"""The reads a saga needs: customer_credit and product_stock (GetCustomer, GetProduct), and why a
cancelled order was cancelled on order_summaries.

Orders cancelled before this revision keep an empty reason (their events hold it; the payload is
protobuf, out of SQL's reach): `orders rebuild order_summaries --swap` fills it in. The two new
read models start empty here and are filled by `orders rebuild customer_credit --swap` and
`orders rebuild product_stock --swap` on a database that already has customer and product events.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_credit",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("credit_limit", sa.Numeric(38, 9), nullable=False),
        sa.Column("credit_reserved", sa.Numeric(38, 9), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id", name="pk_customer_credit"),
    )
    op.create_table(
        "product_stock",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("on_hand", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "product_id", name="pk_product_stock"),
    )
    op.add_column("order_summaries",
                  sa.Column("cancellation_reason", sa.String(32), server_default="", nullable=False))
    op.add_column("order_summaries", sa.Column("cancellation_note", sa.Text, server_default="", nullable=False))


def downgrade() -> None:
    op.drop_column("order_summaries", "cancellation_note")
    op.drop_column("order_summaries", "cancellation_reason")
    op.drop_table("product_stock")
    op.drop_table("customer_credit")
