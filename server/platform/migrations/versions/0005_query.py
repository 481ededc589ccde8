"""The query side: a commit-ordered change sequence on order_summaries, and its indexes.

`stream_seq` is the JetStream sequence of a row's last change, but the projector does not apply
in stream order: after a crash, unacked messages are redelivered only after AckWait, behind newer
ones. A watcher resuming "after stream_seq N" would miss such a late change. So a trigger stamps
every insert and update with `change_seq` from a sequence; the projector commits its batches one
at a time, so change_seq order is commit order, and WatchOrders pages and resumes by it.
Also: ListOrders pages by order id within a customer.

Revision ID: 0005
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE order_summaries_change_seq AS bigint")
    op.add_column(
        "order_summaries",
        sa.Column("change_seq", sa.BigInteger(), server_default=sa.text("nextval('order_summaries_change_seq')"),
                  nullable=False),
    )
    op.execute(
        """
        CREATE FUNCTION order_summaries_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          NEW.change_seq := nextval('order_summaries_change_seq');
          RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """CREATE TRIGGER order_summaries_stamp_change BEFORE INSERT OR UPDATE ON order_summaries
           FOR EACH ROW EXECUTE FUNCTION order_summaries_stamp_change()"""
    )
    op.create_index("ix_order_summaries_tenant_change_seq", "order_summaries", ["tenant_id", "change_seq"])
    op.create_index(
        "ix_order_summaries_tenant_customer_change_seq", "order_summaries", ["tenant_id", "customer_id", "change_seq"]
    )
    op.create_index(
        "ix_order_summaries_tenant_customer_order", "order_summaries", ["tenant_id", "customer_id", "order_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_order_summaries_tenant_customer_order", "order_summaries")
    op.drop_index("ix_order_summaries_tenant_customer_change_seq", "order_summaries")
    op.drop_index("ix_order_summaries_tenant_change_seq", "order_summaries")
    op.execute("DROP TRIGGER order_summaries_stamp_change ON order_summaries")
    op.execute("DROP FUNCTION order_summaries_stamp_change()")
    op.drop_column("order_summaries", "change_seq")
    op.execute("DROP SEQUENCE order_summaries_change_seq")
