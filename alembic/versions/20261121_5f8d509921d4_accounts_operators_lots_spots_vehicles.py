"""accounts operators lots spots vehicles

Revision ID: 5f8d509921d4
Revises:
Create Date: 2026-11-21 05:13:53.236007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import parkspot.db.types

revision: str = "5f8d509921d4"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("passkey_digest", sa.String(length=64), nullable=True),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("name", name=op.f("uq_operators_name")),
        sa.UniqueConstraint("passkey_digest", name=op.f("uq_operators_passkey_digest")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("full_name", sa.String(length=120), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_auth_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_auth_sessions")),
    )
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "lots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("hourly_rate", parkspot.db.types.Money(precision=12, scale=4), nullable=False),
        sa.Column("daily_max", parkspot.db.types.Money(precision=12, scale=4), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("visibility", sa.String(length=8), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_lots_operator_id_operators"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lots")),
    )
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index("ix_lots_latitude_longitude", ["latitude", "longitude"], unique=False)
        batch_op.create_index(batch_op.f("ix_lots_operator_id"), ["operator_id"], unique=False)

    op.create_table(
        "operator_members",
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_members_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_operator_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("operator_id", "user_id", name=op.f("pk_operator_members")),
    )
    with op.batch_alter_table("operator_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operator_members_user_id"), ["user_id"], unique=False)

    op.create_table(
        "vehicles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("plate", sa.String(length=15), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("make", sa.String(length=60), nullable=True),
        sa.Column("color", sa.String(length=30), nullable=True),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_vehicles_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vehicles")),
        sa.UniqueConstraint("owner_id", "plate", name="uq_vehicles_owner_id_plate"),
    )
    with op.batch_alter_table("vehicles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vehicles_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vehicles_plate"), ["plate"], unique=False)

    op.create_table(
        "spots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("is_out_of_service", sa.Boolean(), nullable=False),
        sa.Column("created_at", parkspot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.id"], name=op.f("fk_spots_lot_id_lots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spots")),
        sa.UniqueConstraint("lot_id", "label", name="uq_spots_lot_id_label"),
    )
    with op.batch_alter_table("spots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spots_lot_id"), ["lot_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spots_lot_id"))

    op.drop_table("spots")
    with op.batch_alter_table("vehicles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vehicles_plate"))
        batch_op.drop_index(batch_op.f("ix_vehicles_owner_id"))

    op.drop_table("vehicles")
    with op.batch_alter_table("operator_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_operator_members_user_id"))

    op.drop_table("operator_members")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lots_operator_id"))
        batch_op.drop_index("ix_lots_latitude_longitude")

    op.drop_table("lots")
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_sessions_user_id"))

    op.drop_table("auth_sessions")
    op.drop_table("users")
    op.drop_table("operators")
