"""devices and spot occupancy

Revision ID: 8972327ae599
Revises: 3941404deda9
Create Date: 2026-11-21 08:35:30.537883
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import parkspot.db.types

revision: str = "8972327ae599"
down_revision: str | None = "3941404deda9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_devices_lot_id_lots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("key_digest", name=op.f("uq_devices_key_digest")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_lot_id"), ["lot_id"], unique=False)

    with op.batch_alter_table("spots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sensor_occupied", sa.Boolean(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "sensor_observed_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("spots", schema=None) as batch_op:
        batch_op.drop_column("sensor_observed_at")
        batch_op.drop_column("sensor_occupied")

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_lot_id"))

    op.drop_table("devices")
