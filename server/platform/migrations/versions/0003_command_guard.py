"""The guard that makes each command's write one atomic statement.

A command writes its idempotency claim, its state change and its event in one statement; this
function, called on the outcome, raises (and so undoes all of it) when the request id was taken
(SQLSTATE OR001) or the state change matched nothing (OR002: version moved on, or id taken).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION orders_command_guard(claimed boolean, changed boolean) RETURNS boolean
        LANGUAGE plpgsql AS $$
        BEGIN
          IF NOT claimed THEN
            RAISE EXCEPTION 'request id already used' USING ERRCODE = 'OR001';
          END IF;
          IF NOT changed THEN
            RAISE EXCEPTION 'aggregate changed or exists' USING ERRCODE = 'OR002';
          END IF;
          RETURN true;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION orders_command_guard(boolean, boolean)")
