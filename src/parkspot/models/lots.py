"""Parking lots and their spots."""

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import Money, UTCDateTime, utcnow


class Visibility(StrEnum):
    public = "public"
    members = "members"


class SpotKind(StrEnum):
    standard = "standard"
    ev = "ev"
    accessible = "accessible"
    motorcycle = "motorcycle"
    compact = "compact"


class Lot(SQLModel, table=True):
    __tablename__ = "lots"
    __table_args__ = (sa.Index("ix_lots_latitude_longitude", "latitude", "longitude"),)

    id: int | None = Field(default=None, primary_key=True)
    operator_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("operators.id", ondelete="RESTRICT"),
            nullable=False,
            index=True,
        )
    )
    name: str = Field(max_length=120)
    address: str = Field(max_length=255)
    latitude: float
    longitude: float
    timezone: str = Field(default="UTC", max_length=64)
    hourly_rate: Decimal = Field(sa_type=Money)
    daily_max: Decimal | None = Field(default=None, sa_type=Money)
    currency: str = Field(default="EUR", max_length=3)
    visibility: str = Field(default=Visibility.public, max_length=8)
    # False: closed (still listed, not bookable). Deleting sets deleted_at instead, keeping
    # the row for the history of its stays.
    is_active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The lot's counted occupancy (counter devices, or a manager's correction), as of
    # ``counted_at`` (the ``observed_at`` of the last count applied); None: never counted.
    # Written under a row lock: concurrent counters must not lose each other's moves.
    counted_occupied: int | None = Field(default=None)
    counted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Cars let in by a gate with no reservation to match, less unmatched exits (never
    # below 0); they occupy spots of a lot whose occupancy comes from reservations.
    unplanned_inside: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # How far the counters' last move went past 0 or the capacity before it was clamped
    # (0: the count was possible); an alert stays open while it is not 0.
    count_excess: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Spot(SQLModel, table=True):
    __tablename__ = "spots"
    __table_args__ = (sa.UniqueConstraint("lot_id", "label", name="uq_spots_lot_id_label"),)

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("lots.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    label: str = Field(max_length=16)
    level: str | None = Field(default=None, max_length=16)
    kind: str = Field(default=SpotKind.standard, max_length=16)
    is_out_of_service: bool = Field(default=False)
    # The spot's sensor: occupied or not as of ``sensor_observed_at``; None with no
    # sensor report yet.
    sensor_occupied: bool | None = Field(default=None)
    sensor_observed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The plate the sensor read on the car it reports, when it reads plates.
    sensor_plate: str | None = Field(default=None, max_length=15)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
