"""Customer credit, products and their stock.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("credit_currency", sa.String(3), nullable=False, server_default="XXX"))
    op.add_column("customers", sa.Column("credit_limit", sa.Numeric(38, 9), nullable=False, server_default="0"))
    op.add_column("customers", sa.Column("credit_reserved", sa.Numeric(38, 9), nullable=False, server_default="0"))
    op.add_column(
        "customers",
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    for column in ("credit_currency", "credit_limit", "credit_reserved"):
        op.alter_column("customers", column, server_default=None)
    op.create_table(
        "products",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("on_hand", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "product_id", name="pk_products"),
        sa.CheckConstraint("reserved >= 0 AND reserved <= on_hand", name="ck_products_stock"),
    )
    op.create_check_constraint(
        "ck_customers_credit", "customers", "credit_reserved >= 0 AND credit_reserved <= credit_limit"
    )


def downgrade() -> None:
    op.drop_constraint("ck_customers_credit", "customers")
    op.drop_table("products")
    for column in ("updated_at", "credit_reserved", "credit_limit", "credit_currency"):
        op.drop_column("customers", column)
