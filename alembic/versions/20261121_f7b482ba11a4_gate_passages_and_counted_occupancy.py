"""gate passages and counted occupancy

Revision ID: f7b482ba11a4
Revises: 8972327ae599
Create Date: 2026-11-21 08:54:56.800296
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import parkspot.db.types

revision: str = "f7b482ba11a4"
down_revision: str | None = "8972327ae599"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gate_passages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("plate", sa.String(length=15), nullable=True),
        sa.Column("observed_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("reservation_id", sa.Integer(), nullable=True),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_gate_passages_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_gate_passages_lot_id_lots"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name=op.f("fk_gate_passages_reservation_id_reservations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_passages")),
    )
    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_gate_passages_lot_id_observed_at", ["lot_id", "observed_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_gate_passages_reservation_id"), ["reservation_id"], unique=False
        )

    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("counted_occupied", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("counted_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("unplanned_inside", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_column("unplanned_inside")
        batch_op.drop_column("counted_at")
        batch_op.drop_column("counted_occupied")

    with op.batch_alter_table("gate_passages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gate_passages_reservation_id"))
        batch_op.drop_index("ix_gate_passages_lot_id_observed_at")

    op.drop_table("gate_passages")
