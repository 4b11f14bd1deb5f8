"""Request and response bodies for devices, batches of spot sensor events, gate passages and
counter reports."""

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, StringConstraints, model_validator

from parkspot.lots.schemas import Instant, SpotLabel
from parkspot.models import DeviceKind, GateDirection, PassageResult
from parkspot.validation import JSON_NUMBER, SINGLE_LINE, JsonBool, StrictModel
from parkspot.vehicles.schemas import Plate

# Most events one request may carry; a device with more sends several batches.
MAX_EVENTS = 500
# Most cars one counter report may move or count: far above any lot, and an integer
# column's range.
MAX_COUNT = 100_000

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
    occupied: JsonBool
    observed_at: Instant
    plate: Annotated[
        Plate | None,
        Field(
            description="the plate a sensor with a camera read on the car (occupied only); "
            "a plate other than the holding reservation's raises a wrong_vehicle alert"
        ),
    ] = None


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


# --- gates -----------------------------------------------------------------------------


class GateEvent(StrictModel):
    direction: GateDirection
    plate: Plate | None = Field(default=None, description="as read; normalised like vehicles'")
    observed_at: Instant


class GateEventResult(BaseModel):
    result: PassageResult
    passage_id: int
    reservation_id: int | None = Field(
        default=None, description="the reservation checked in or out"
    )
    final_price: Decimal | None = Field(default=None, description="set on `checked_out`")
    currency: str | None = None


# --- counters --------------------------------------------------------------------------

Count = Annotated[int, Field(ge=0, le=MAX_COUNT), JSON_NUMBER]


class CounterEvent(StrictModel):
    """Either the cars that went in and out since the last report (``entries``,
    ``exits``), or the lot's occupancy counted absolutely (``occupied``)."""

    entries: Count | None = None
    exits: Count | None = None
    occupied: Count | None = None
    observed_at: Instant

    @model_validator(mode="after")
    def _one_kind_of_report(self) -> Self:
        moves = self.entries is not None or self.exits is not None
        if moves == (self.occupied is not None):
            raise ValueError("send either entries and/or exits, or occupied")
        return self


class OccupancyUpdate(StrictModel):
    occupied: Count


class CounterResult(StrEnum):
    applied = "applied"
    stale = "stale"


class CounterEventResult(BaseModel):
    result: CounterResult = Field(
        description="`stale`: ignored, the lot has a count observed later"
    )
    counted_occupied: int = Field(description="the lot's counted occupancy now")
    counted_at: datetime = Field(description="when that count was observed")
