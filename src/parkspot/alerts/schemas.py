"""Response bodies and filters of alerts."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from parkspot.models import AlertKind
from parkspot.validation import MAX_ID


class AlertState(StrEnum):
    open = "open"
    cleared = "cleared"
    all = "all"


class AlertRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    lot_id: int
    kind: AlertKind
    message: str
    spot_id: int | None
    device_id: int | None
    reservation_id: int | None
    details: dict[str, Any] = Field(
        description="what the alert is about as it read when raised: spot label, plates, "
        "device name, counts"
    )
    raised_at: datetime
    cleared_at: datetime | None = Field(description="null while the condition lasts")


class AlertPage(BaseModel):
    items: list[AlertRead]
    total: int
    limit: int
    offset: int


class AlertFilters(BaseModel):
    """Filters combine (AND)."""

    lot_id: Annotated[int | None, Field(ge=1, le=MAX_ID)] = None
    kind: AlertKind | None = None
    state: AlertState = Field(
        default=AlertState.open, description="open: the condition still holds"
    )
