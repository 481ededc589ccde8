"""Indexes for the query side: ListOrders pages by order id within a tenant (optionally one
customer's), and WatchOrders catches up by stream sequence (all orders, or one customer's).

Revision ID: 0005
Revises: 0003
"""

from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_order_summaries_tenant_stream_seq", "order_summaries", ["tenant_id", "stream_seq"])
    op.create_index(
        "ix_order_summaries_tenant_customer_stream_seq", "order_summaries", ["tenant_id", "customer_id", "stream_seq"]
    )
    op.create_index(
        "ix_order_summaries_tenant_customer_order", "order_summaries", ["tenant_id", "customer_id", "order_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_order_summaries_tenant_customer_order", "order_summaries")
    op.drop_index("ix_order_summaries_tenant_customer_stream_seq", "order_summaries")
    op.drop_index("ix_order_summaries_tenant_stream_seq", "order_summaries")
