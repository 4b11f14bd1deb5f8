"""Alerts raised for a lot's managers while something there looks wrong, cleared when it
ends; cleared alerts stay as the lot's history."""

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import UTCDateTime


class AlertKind(StrEnum):
    # A spot's sensor sees a car and no reservation or stay holds the spot.
    unexpected_occupancy = "unexpected_occupancy"
    # A held spot's sensor reads a plate other than the reservation's.
    wrong_vehicle = "wrong_vehicle"
    # A reservation expired unused; its window is still running.
    no_show = "no_show"
    # An active device has not reported for the silence threshold.
    device_silent = "device_silent"
    # The lot's counters moved its count outside 0 and its capacity.
    impossible_count = "impossible_count"


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"
    __table_args__ = (
        # One open alert per condition: ``subject`` names what it is about ("spot:12").
        sa.Index(
            "uq_alerts_open_condition",
            "lot_id",
            "kind",
            "subject",
            unique=True,
            postgresql_where=sa.text("cleared_at IS NULL"),
            sqlite_where=sa.text("cleared_at IS NULL"),
        ),
        sa.Index("ix_alerts_lot_id_raised_at", "lot_id", "raised_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("lots.id", ondelete="CASCADE"), nullable=False
        )
    )
    kind: str = Field(max_length=24)
    subject: str = Field(max_length=32)
    message: str = Field(max_length=300)
    # What the alert is about, by id and as it read when raised (spot label, plates,
    # device name): kept as history, so no foreign keys.
    spot_id: int | None = Field(default=None)
    device_id: int | None = Field(default=None)
    reservation_id: int | None = Field(default=None)
    details: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False)
    )
    raised_at: datetime = Field(sa_type=UTCDateTime)
    cleared_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
