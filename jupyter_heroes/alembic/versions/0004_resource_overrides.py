"""resource overrides: per-submission walltime and memory per step on workflow instances

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 04:15:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource_overrides", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_instances", schema=None) as batch_op:
        batch_op.drop_column("resource_overrides")
