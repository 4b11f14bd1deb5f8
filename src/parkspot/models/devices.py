"""Devices of a lot (spot sensors, gates, counters) and the digests of their keys."""

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import UTCDateTime, utcnow


class DeviceKind(StrEnum):
    spot_sensor = "spot_sensor"
    gate = "gate"
    counter = "counter"


class Device(SQLModel, table=True):
    __tablename__ = "devices"

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("lots.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    name: str = Field(max_length=80)
    kind: str = Field(max_length=16)
    # SHA-256 of the key; the key itself is shown once and never stored. Keys are random
    # and long, so a fast digest looked up through the unique index is enough.
    key_digest: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Set once: the key stops working at once and the row stays for the list.
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
