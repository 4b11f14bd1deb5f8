"""Reservations and walk-in stays of a spot, with their prices."""

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import Money, UTCDateTime, utcnow


class ReservationStatus(StrEnum):
    confirmed = "confirmed"
    checked_in = "checked_in"
    completed = "completed"
    cancelled = "cancelled"
    no_show = "no_show"


# The statuses that hold a spot (and a vehicle) for the reservation's window.
ACTIVE_STATUSES = (ReservationStatus.confirmed, ReservationStatus.checked_in)


class ReservationKind(StrEnum):
    booking = "booking"
    ticket = "ticket"


class Reservation(SQLModel, table=True):
    """On PostgreSQL two exclusion constraints (made by the migration, not visible here) keep
    active reservations of one spot, and of one vehicle, from overlapping in time."""

    __tablename__ = "reservations"
    __table_args__ = (
        sa.CheckConstraint("ends_at > starts_at", name="window_positive"),
        sa.Index("ix_reservations_spot_id_starts_at", "spot_id", "starts_at"),
        sa.Index("ix_reservations_lot_id_starts_at", "lot_id", "starts_at"),
        sa.Index("ix_reservations_status_starts_at", "status", "starts_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("users.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    # Null once the vehicle or spot is deleted (only possible with no active reservation);
    # plate and spot_label keep what the history needs.
    vehicle_id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("vehicles.id", ondelete="SET NULL"), index=True
        ),
    )
    spot_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("spots.id", ondelete="SET NULL")),
    )
    plate: str = Field(max_length=15, index=True)
    spot_label: str = Field(max_length=16)
    lot_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("lots.id", ondelete="RESTRICT"), nullable=False
        )
    )
    kind: str = Field(default=ReservationKind.booking, max_length=16)
    status: str = Field(default=ReservationStatus.confirmed, max_length=16)
    starts_at: datetime = Field(sa_type=UTCDateTime)
    ends_at: datetime = Field(sa_type=UTCDateTime)
    price_quote: Decimal = Field(sa_type=Money)
    final_price: Decimal | None = Field(default=None, sa_type=Money)
    currency: str = Field(max_length=3)
    checked_in_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    checked_out_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
