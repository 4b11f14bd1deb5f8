"""alerts and sensor plates

Revision ID: ef63e7420491
Revises: f7b482ba11a4
Create Date: 2026-11-21 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import parkspot.db.types

revision: str = "ef63e7420491"
down_revision: str | None = "f7b482ba11a4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("subject", sa.String(length=32), nullable=False),
        sa.Column("message", sa.String(length=300), nullable=False),
        sa.Column("spot_id", sa.Integer(), nullable=True),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("reservation_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("raised_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_alerts_lot_id_lots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_lot_id_raised_at", ["lot_id", "raised_at"], unique=False)
        batch_op.create_index(
            "uq_alerts_open_condition",
            ["lot_id", "kind", "subject"],
            unique=True,
            postgresql_where=sa.text("cleared_at IS NULL"),
            sqlite_where=sa.text("cleared_at IS NULL"),
        )

    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("count_excess", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("spots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sensor_plate", sa.String(length=15), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("spots", schema=None) as batch_op:
        batch_op.drop_column("sensor_plate")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_column("count_excess")

    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_alerts_open_condition",
            postgresql_where=sa.text("cleared_at IS NULL"),
            sqlite_where=sa.text("cleared_at IS NULL"),
        )
        batch_op.drop_index("ix_alerts_lot_id_raised_at")

    op.drop_table("alerts")
