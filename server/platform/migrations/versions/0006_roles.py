"""One database role per process: orders_command, orders_query, orders_projector, orders_relay,
created when missing (they are cluster-wide) and granted what server/platform/privileges.py says.

Later migrations need no GRANT of their own: every `orders migrate` converges the grants to the
matrix after it runs (env.py).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from server.platform.migrations import roles

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    roles.create_roles(connection)
    roles.converge_grants(connection)


def downgrade() -> None:
    # The roles stay: other databases of the same server may use them. Their grants here go.
    roles.revoke_grants(op.get_bind())
