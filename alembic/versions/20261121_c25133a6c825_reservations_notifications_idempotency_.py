"""reservations notifications idempotency keys

Revision ID: c25133a6c825
Revises: 5f8d509921d4
Create Date: 2026-11-21 05:59:08.314947
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import parkspot.db.types

revision: str = "c25133a6c825"
down_revision: str | None = "5f8d509921d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# On PostgreSQL the database itself refuses overlapping active reservations of one spot or
# one vehicle; on SQLite booking transactions are serialised and check inside (see
# parkspot.reservations.repository).
_ACTIVE = "status IN ('confirmed', 'checked_in')"
_EXCLUSIONS = {
    "ex_reservations_spot_id_window": "spot_id",
    "ex_reservations_vehicle_id_window": "vehicle_id",
}


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_idempotency_keys_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("content", sa.String(length=500), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("is_read", sa.Boolean(), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_user_id_id", ["user_id", "id"], unique=False)

    op.create_table(
        "reservations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=True),
        sa.Column("spot_id", sa.Integer(), nullable=True),
        sa.Column("plate", sa.String(length=15), nullable=False),
        sa.Column("spot_label", sa.String(length=16), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("starts_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("price_quote", parkspot.db.types.Money(precision=12, scale=4), nullable=False),
        sa.Column("final_price", parkspot.db.types.Money(precision=12, scale=4), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("checked_in_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("checked_out_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_reservations_window_positive")),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_reservations_lot_id_lots"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["spot_id"],
            ["spots.id"],
            name=op.f("fk_reservations_spot_id_spots"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_reservations_user_id_users"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.id"],
            name=op.f("fk_reservations_vehicle_id_vehicles"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reservations_lot_id_starts_at", ["lot_id", "starts_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_reservations_plate"), ["plate"], unique=False)
        batch_op.create_index(
            "ix_reservations_spot_id_starts_at", ["spot_id", "starts_at"], unique=False
        )
        batch_op.create_index(
            "ix_reservations_status_starts_at", ["status", "starts_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_reservations_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_reservations_vehicle_id"), ["vehicle_id"], unique=False
        )
    if postgresql:
        for name, column in _EXCLUSIONS.items():
            op.execute(
                f"ALTER TABLE reservations ADD CONSTRAINT {name} EXCLUDE USING gist "
                f"({column} WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) "
                f"WHERE ({_ACTIVE})"
            )


def downgrade() -> None:
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_vehicle_id"))
        batch_op.drop_index(batch_op.f("ix_reservations_user_id"))
        batch_op.drop_index("ix_reservations_status_starts_at")
        batch_op.drop_index("ix_reservations_spot_id_starts_at")
        batch_op.drop_index(batch_op.f("ix_reservations_plate"))
        batch_op.drop_index("ix_reservations_lot_id_starts_at")

    op.drop_table("reservations")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_user_id_id")

    op.drop_table("notifications")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))

    op.drop_table("idempotency_keys")
