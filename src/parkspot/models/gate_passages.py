"""Every vehicle passage reported by a lot's gates, and what it was matched to."""

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import UTCDateTime, utcnow


class GateDirection(StrEnum):
    entry = "entry"
    exit = "exit"


class PassageResult(StrEnum):
    checked_in = "checked_in"
    checked_out = "checked_out"
    # An entry matching no reservation: an unplanned stay.
    unplanned = "unplanned"
    unmatched_exit = "unmatched_exit"


class GatePassage(SQLModel, table=True):
    __tablename__ = "gate_passages"
    __table_args__ = (sa.Index("ix_gate_passages_lot_id_observed_at", "lot_id", "observed_at"),)

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("lots.id", ondelete="CASCADE"), nullable=False
        )
    )
    device_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False
        )
    )
    direction: str = Field(max_length=8)
    # Normalised like vehicle plates; None when the reader saw none.
    plate: str | None = Field(default=None, max_length=15)
    observed_at: datetime = Field(sa_type=UTCDateTime)
    result: str = Field(max_length=16)
    reservation_id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("reservations.id", ondelete="SET NULL"), index=True
        ),
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
