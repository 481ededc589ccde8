"""Dead letters are parked per tenant: the index the projector's "is this aggregate parked?"
lookup uses leads with tenant_id, as the lookup now does (two tenants' o-1 are two aggregates).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_dead_letters_parked", "dead_letters")
    op.create_index("ix_dead_letters_parked", "dead_letters", ["tenant_id", "aggregate_type", "aggregate_id"],
                    postgresql_where=sa.text("status = 'parked'"))


def downgrade() -> None:
    op.drop_index("ix_dead_letters_parked", "dead_letters")
    op.create_index("ix_dead_letters_parked", "dead_letters", ["aggregate_type", "aggregate_id"],
                    postgresql_where=sa.text("status = 'parked'"))
