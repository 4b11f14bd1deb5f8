"""The availability outbox and each lot's last computed availability record."""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import UTCDateTime, utcnow


class AvailabilityChange(SQLModel, table=True):
    """The outbox: one row per lot a transaction changed, written in that transaction. The
    engine deletes the rows of the lots it recomputes; rows left behind by a process that
    died after its commit are picked up at start and by any other process."""

    __tablename__ = "availability_changes"

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LotAvailability(SQLModel, table=True):
    """A lot's last published record. The row is locked by each recompute, so versions
    follow the order in which the counts were read and never go backwards."""

    __tablename__ = "lot_availability"

    lot_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("lots.id", ondelete="CASCADE"), primary_key=True
        )
    )
    version: int = Field(default=0)
    record: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # When time alone next changes the lot's record (a reservation starts or ends, a
    # no-show expires, its devices go silent); the scheduler recomputes the lot then.
    next_boundary_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
