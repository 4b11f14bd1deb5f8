"""Operators (companies that own lots) and their members and managers."""

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from parkspot.db.types import UTCDateTime, utcnow


class MembershipRole(StrEnum):
    member = "member"
    manager = "manager"


class Operator(SQLModel, table=True):
    __tablename__ = "operators"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    # SHA-256 of the member sign-up passkey; the passkey itself is never stored.
    passkey_digest: str | None = Field(default=None, max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class OperatorMember(SQLModel, table=True):
    __tablename__ = "operator_members"

    operator_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("operators.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    user_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        )
    )
    role: str = Field(default=MembershipRole.member, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
