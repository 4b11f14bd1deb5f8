"""Request and response bodies for operators."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from parkspot.models import MembershipRole
from parkspot.validation import JSON_NUMBER, MAX_ID, SINGLE_LINE, StrictModel

OperatorName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=120, pattern=SINGLE_LINE),
]
Passkey = Annotated[str, Field(min_length=8, max_length=128)]


class OperatorCreate(StrictModel):
    name: OperatorName
    passkey: Passkey | None = None


class OperatorUpdate(StrictModel):
    name: OperatorName | None = None
    passkey: Annotated[Passkey | None, Field(description="null removes the passkey")] = None


class OperatorRead(BaseModel):
    id: int
    name: str
    has_passkey: bool
    manager_ids: list[int]
    created_at: datetime


class OperatorPage(BaseModel):
    items: list[OperatorRead]
    total: int
    limit: int
    offset: int


class ManagerAdd(StrictModel):
    user_id: Annotated[int, Field(ge=1, le=MAX_ID), JSON_NUMBER]


class MembershipRead(BaseModel):
    operator_id: int
    user_id: int
    role: MembershipRole
