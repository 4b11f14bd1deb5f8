"""availability outbox and lot records

Revision ID: 3941404deda9
Revises: c25133a6c825
Create Date: 2026-11-21 07:45:54.455850
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import parkspot.db.types

revision: str = "3941404deda9"
down_revision: str | None = "c25133a6c825"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "availability_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_availability_changes")),
    )
    with op.batch_alter_table("availability_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_availability_changes_lot_id"), ["lot_id"], unique=False
        )

    op.create_table(
        "lot_availability",
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=True),
        sa.Column("next_boundary_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["lot_id"],
            ["lots.id"],
            name=op.f("fk_lot_availability_lot_id_lots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("lot_id", name=op.f("pk_lot_availability")),
    )
    with op.batch_alter_table("lot_availability", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lot_availability_next_boundary_at"), ["next_boundary_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("lot_availability", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lot_availability_next_boundary_at"))

    op.drop_table("lot_availability")
    with op.batch_alter_table("availability_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_availability_changes_lot_id"))

    op.drop_table("availability_changes")
