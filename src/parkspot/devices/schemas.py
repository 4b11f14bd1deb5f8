"""Request and response bodies for devices and for batches of spot sensor events."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from parkspot.lots.schemas import Instant, SpotLabel
from parkspot.models import DeviceKind
from parkspot.validation import SINGLE_LINE, StrictModel

# Most events one request may carry; a device with more sends several batches.
MAX_EVENTS = 500

DeviceName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=80, pattern=SINGLE_LINE),
]


class DeviceStatus(StrEnum):
    active = "active"
    revoked = "revoked"


class DeviceCreate(StrictModel):
    name: DeviceName
    kind: DeviceKind


class DeviceRead(BaseModel):
    id: int
    lot_id: int
    name: str
    kind: DeviceKind
    status: DeviceStatus
    created_at: datetime
    last_seen_at: datetime | None = Field(
        description="the device's last request that succeeded; null before the first"
    )
    revoked_at: datetime | None


class DeviceCreated(DeviceRead):
    key: str = Field(
        description="the value of the X-Device-Key header; shown only in this response"
    )


class DevicePage(BaseModel):
    items: list[DeviceRead]
    total: int
    limit: int
    offset: int


# --- spot sensor events ----------------------------------------------------------------


class SpotEvent(StrictModel):
    spot: Annotated[SpotLabel, Field(description="the spot's label in the device's lot")]
    occupied: bool
    observed_at: Instant


class SpotEventBatch(StrictModel):
    events: list[SpotEvent] = Field(
        min_length=1,
        max_length=MAX_EVENTS,
        description=f"1 to {MAX_EVENTS} events, applied in order",
    )


class EventResult(StrEnum):
    applied = "applied"
    duplicate = "duplicate"
    stale = "stale"
    rejected = "rejected"


RejectCode = Literal["unknown_spot", "observed_in_future"]


class SpotEventResult(BaseModel):
    index: int = Field(description="the event's position in the batch")
    spot: str
    result: EventResult
    code: RejectCode | None = Field(default=None, description="why the event was rejected")
    message: str | None = None


class SpotEventResults(BaseModel):
    results: list[SpotEventResult]
    applied: int
    duplicates: int
    stale: int
    rejected: int
