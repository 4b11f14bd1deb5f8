"""Response and request bodies for notifications."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from parkspot.validation import JSON_NUMBER, MAX_ID, StrictModel


class NotificationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    content: str
    data: dict[str, Any]
    read: bool = Field(validation_alias="is_read")
    created_at: datetime


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    total: int
    limit: int
    offset: int


class NotificationsRead(StrictModel):
    ids: Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_ID), JSON_NUMBER]],
        Field(min_length=1, max_length=500),
    ]


class MarkedRead(BaseModel):
    updated: int
