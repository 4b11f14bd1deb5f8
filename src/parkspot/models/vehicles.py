"""Drivers' vehicles."""

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import UTCDateTime, utcnow


class VehicleKind(StrEnum):
    car = "car"
    ev = "ev"
    motorcycle = "motorcycle"
    van = "van"


class Vehicle(SQLModel, table=True):
    __tablename__ = "vehicles"
    __table_args__ = (sa.UniqueConstraint("owner_id", "plate", name="uq_vehicles_owner_id_plate"),)

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    # Normalised: upper case letters and digits only.
    plate: str = Field(max_length=15, index=True)
    kind: str = Field(default=VehicleKind.car, max_length=16)
    make: str | None = Field(default=None, max_length=60)
    color: str | None = Field(default=None, max_length=30)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
