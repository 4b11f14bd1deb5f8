"""Request and response bodies for reservations and walk-in tickets."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from parkspot.lots.schemas import Instant, MoneyOut, PatchModel
from parkspot.models import ReservationKind, ReservationStatus, SpotKind
from parkspot.validation import JSON_NUMBER, MAX_ID, SINGLE_LINE, StrictModel

Id = Annotated[int, Field(ge=1, le=MAX_ID), JSON_NUMBER]
# Query parameters arrive as text.
QueryId = Annotated[int, Field(ge=1, le=MAX_ID)]


class ReservationCreate(StrictModel):
    """Either ``spot_id`` (that spot) or ``lot_id`` (+ optional ``kind``: the server picks)."""

    spot_id: Id | None = None
    lot_id: Id | None = None
    kind: SpotKind | None = Field(default=None, description="with lot_id: the kind of spot")
    vehicle_id: Id
    starts_at: Instant
    ends_at: Instant

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.spot_id is None) == (self.lot_id is None):
            raise ValueError("give exactly one of spot_id and lot_id")
        if self.kind is not None and self.lot_id is None:
            raise ValueError("kind goes with lot_id (a given spot has its own kind)")
        return self


class ReservationUpdate(PatchModel):
    """Reschedule, or move to another vehicle or another spot (one the caller may book)."""

    spot_id: Id | None = None
    vehicle_id: Id | None = None
    starts_at: Instant | None = None
    ends_at: Instant | None = None


class TicketCreate(StrictModel):
    vehicle_id: Id
    spot_id: Id


class ReservationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: ReservationStatus
    kind: ReservationKind
    user_id: int
    lot_id: int
    spot_id: int | None
    spot_label: str
    vehicle_id: int | None
    plate: str
    starts_at: datetime
    ends_at: datetime = Field(description="for a walk-in ticket: when the spot must be free")
    price_quote: MoneyOut
    final_price: MoneyOut | None
    currency: str
    checked_in_at: datetime | None
    checked_out_at: datetime | None
    cancelled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ReservationPage(BaseModel):
    items: list[ReservationRead]
    total: int
    limit: int
    offset: int


class Scope(StrEnum):
    own = "own"
    managed = "managed"


class ReservationFilters(BaseModel):
    """Filters combine (AND). ``from``/``to`` keep reservations overlapping that span."""

    model_config = ConfigDict(populate_by_name=True)

    scope: Scope = Field(default=Scope.own, description="managed: your lots' reservations")
    status: list[ReservationStatus] | None = None
    lot_id: QueryId | None = None
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None
    q: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=100,
            pattern=SINGLE_LINE,
            description="scope=managed: user e-mail, plate, spot label, lot name or address",
        ),
    ] = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.from_ is not None and self.to is not None and self.to <= self.from_:
            raise ValueError("to must be after from")
        if self.q is not None and self.scope is not Scope.managed:
            raise ValueError("q searches with scope=managed")
        return self
