"""Stored first responses of requests sent with an ``Idempotency-Key``."""

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import UTCDateTime, utcnow


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    user_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        )
    )
    key: str = Field(primary_key=True, max_length=255)
    # SHA-256 of method, path and body: the same key with another request is refused.
    fingerprint: str = Field(max_length=64)
    response_status: int
    response_body: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
