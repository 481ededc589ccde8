"""Crypto-shredding of customers' personal data: each customer's data key, wrapped by the KEK, in
`customer_keys` (deleted when the customer is forgotten, with the request id that registered them,
whose idempotency hash is scrubbed then), and `customers.forgotten_at`.

Customers registered before this revision have no key: their events carry the personal fields in
clear (CustomerRegistered schema version 1) and forgetting them scrubs the write model only
(docs/privacy.md).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_keys",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id", name="pk_customer_keys"),
    )
    op.add_column("customers", sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("customers", "forgotten_at")
    op.drop_table("customer_keys")
