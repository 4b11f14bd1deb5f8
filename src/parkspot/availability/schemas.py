"""The availability record of a lot, as clients read it and as processes share it."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from parkspot.lots import geo
from parkspot.models import SpotKind
from parkspot.validation import MAX_ID


class LotStatus(StrEnum):
    open = "open"
    almost_full = "almost_full"
    full = "full"
    closed = "closed"


class OccupancySource(StrEnum):
    """Where a lot's ``occupied`` comes from: its spot sensors, its counted occupancy
    (counters or a manager's count), or its reservations' stays (plus unplanned stays let in
    by its gates)."""

    sensors = "sensors"
    counter = "counter"
    reservations = "reservations"


class KindCount(BaseModel):
    """Spots of one kind in service, and those free by their own state (reservations and
    sensors), never more than the lot's ``free``: a counted or unplanned car is not known
    to stand on any particular kind of spot."""

    capacity: int
    free: int


class LotAvailabilityRead(BaseModel):
    """``capacity`` counts the spots in service; ``free + reserved + occupied ==
    capacity``. ``version`` only grows. ``stale`` is true when the devices the occupancy
    comes from have been silent too long, or while this process cannot reach the shared
    cache and may be missing other processes' changes."""

    lot_id: int
    name: str
    latitude: float
    longitude: float
    capacity: int
    free: int
    reserved: int
    occupied: int
    out_of_service: int
    by_kind: dict[SpotKind, KindCount]
    status: LotStatus
    version: int
    updated_at: datetime
    # Defaults: records published before these fields existed still load.
    occupancy_source: OccupancySource = OccupancySource.reservations
    device_data_at: datetime | None = Field(
        default=None,
        description="when the devices the occupancy comes from last reported; null if never",
    )
    stale: bool = False


class AvailabilityList(BaseModel):
    lots: list[LotAvailabilityRead]


class LotRecord(BaseModel):
    """What the engine publishes: the public record plus what filtering needs."""

    lot: LotAvailabilityRead
    operator_id: int
    members_only: bool
    # A deleted lot is published once more so that subscribers drop it, then forgotten.
    deleted: bool = False


class AvailabilityQuery(BaseModel):
    """Filters of the availability reads and the stream; they combine (AND)."""

    lot_id: Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_ID)]],
        Field(max_length=500, description="repeatable"),
    ] = []
    bbox: Annotated[
        str | None,
        Field(max_length=128, description="`min_lon,min_lat,max_lon,max_lat`; may cross 180°"),
    ] = None

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, value: str | None) -> str | None:
        if value is not None:
            geo.parse_bbox(value)
        return value
