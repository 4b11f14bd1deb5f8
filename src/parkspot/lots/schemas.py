"""Request and response bodies for lots, spots, free-spot searches and price quotes."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, Self
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    StringConstraints,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from parkspot.lots import geo
from parkspot.models import SpotKind, Visibility
from parkspot.validation import JSON_NUMBER, MAX_ID, SINGLE_LINE, JsonBool, StrictModel

# Longest window a quote or a free-spot search covers.
MAX_WINDOW = timedelta(days=31)
MIN_YEAR, MAX_YEAR = 2000, 2200
MAX_BATCH = 1000
LABEL_LENGTH = 16

_RATE_PLACES = Decimal("0.0001")


# --- shared field types ----------------------------------------------------------------


def _to_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None
    if not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise ValueError(f"the time must fall between the years {MIN_YEAR} and {MAX_YEAR}")
    return utc


# An instant with an explicit offset, converted to UTC.
Instant = Annotated[AwareDatetime, AfterValidator(_to_utc)]


# Money as text: a decimal number at least 0 ("2.50", "1E+1", "-0"), as documented; Decimal
# alone would also take " 2.5", "2_5" or other scripts' digits.
MONEY_TEXT = r"^(\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)|-(0+(\.0*)?|\.0+))([eE][+-]?[0-9]+)?$"
_MONEY_TEXT = re.compile(MONEY_TEXT)


def _money_text_only(value: object) -> object:
    if isinstance(value, str) and not _MONEY_TEXT.match(value):
        raise ValueError("money is a number, or a decimal number at least 0 as text")
    return value


def _quantize_rate(value: Decimal) -> Decimal:
    # abs: "-0" passes ge=0 and would read back as "-0.00".
    return abs(value.quantize(_RATE_PLACES))


def money_text(value: Decimal) -> str:
    """Plain notation with two to four decimals: ``2.50``, ``0.0125``, ``10.00``."""
    whole, _, fraction = format(value.quantize(_RATE_PLACES), "f").partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


# Fits the Money column (NUMERIC(12, 4)); stored with exactly four decimals.
MoneyIn = Annotated[
    Decimal,
    Field(ge=0, max_digits=12, decimal_places=4),
    AfterValidator(_quantize_rate),
    BeforeValidator(_money_text_only),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 99_999_999.9999},
                {"type": "string", "pattern": MONEY_TEXT},
            ],
            "description": "at most 8 digits before the decimal point and 4 after",
        }
    ),
]
# Money goes out as a string so no client parses it into a float.
MoneyOut = Annotated[Decimal, PlainSerializer(money_text, return_type=str, when_used="json")]


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_time_zone(value: str) -> str:
    if value not in _time_zones():
        raise ValueError("not an IANA time zone name (such as Europe/Paris)")
    return value


def _upper(value: str) -> str:
    return value.upper()


LotName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=120, pattern=SINGLE_LINE),
]
Address = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255, pattern=SINGLE_LINE),
]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False), JSON_NUMBER]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False), JSON_NUMBER]
TimeZoneName = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_check_time_zone)
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$"), AfterValidator(_upper)]
# Labels are what devices send ("A7"), so they are kept simple and upper case.
SpotLabel = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$"),
    AfterValidator(_upper),
]
LabelPrefix = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._-]{0,15}$"),
    AfterValidator(_upper),
]
Level = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16, pattern=SINGLE_LINE)
]


def _document_nulls(schema: dict[str, Any], model: type[Any]) -> None:
    """Drops ``null`` from the documented types of the fields a partial update may leave
    out but not set to null (their ``| None`` only means "absent")."""
    nullable: frozenset[str] = getattr(model, "nullable", frozenset())
    for name, field in schema.get("properties", {}).items():
        if name in nullable or "anyOf" not in field:
            continue
        types = [t for t in field["anyOf"] if t != {"type": "null"}]
        if len(types) == 1:
            del field["anyOf"]
            field.update(types[0])
        else:
            field["anyOf"] = types


class PatchModel(StrictModel):
    """A partial update: absent fields stay as they are; only ``nullable`` ones may be null."""

    model_config = ConfigDict(json_schema_extra=_document_nulls)

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _reject_nulls(self) -> Self:
        for name in self.model_fields_set - self.nullable:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


# --- lots ------------------------------------------------------------------------------


class LotCreate(StrictModel):
    operator_id: Annotated[int, Field(ge=1, le=MAX_ID), JSON_NUMBER]
    name: LotName
    address: Address
    latitude: Latitude
    longitude: Longitude
    timezone: TimeZoneName = "UTC"
    hourly_rate: MoneyIn
    daily_max: MoneyIn | None = None
    currency: Currency = "EUR"
    visibility: Visibility = Visibility.public
    is_active: Annotated[JsonBool, Field(description="false: closed, listed but not bookable")] = (
        True
    )


class LotUpdate(PatchModel):
    nullable: ClassVar[frozenset[str]] = frozenset({"daily_max"})

    name: LotName | None = None
    address: Address | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    timezone: TimeZoneName | None = None
    hourly_rate: MoneyIn | None = None
    daily_max: Annotated[MoneyIn | None, Field(description="null removes the cap")] = None
    currency: Currency | None = None
    visibility: Visibility | None = None
    is_active: JsonBool | None = None


class LotRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    operator_id: int
    name: str
    address: str
    latitude: float
    longitude: float
    timezone: str
    hourly_rate: MoneyOut
    daily_max: MoneyOut | None
    currency: str
    visibility: Visibility
    is_active: bool
    created_at: datetime
    updated_at: datetime
    distance_km: float | None = Field(
        default=None, description="from the `near` point, when one was given"
    )


class LotPage(BaseModel):
    items: list[LotRead]
    total: int
    limit: int
    offset: int


class LotFilters(BaseModel):
    """Query filters of the lot search; they combine (AND)."""

    q: Annotated[
        str | None,
        Field(max_length=100, pattern=SINGLE_LINE, description="matches name or address"),
    ] = None
    near: Annotated[
        str | None, Field(max_length=64, description="`lat,lon`: nearest first, within radius_km")
    ] = None
    radius_km: Annotated[float, Field(gt=0, le=500, allow_inf_nan=False)] = 5.0
    bbox: Annotated[
        str | None,
        Field(max_length=128, description="`min_lon,min_lat,max_lon,max_lat`; may cross 180°"),
    ] = None
    operator_id: Annotated[int | None, Field(ge=1, le=MAX_ID)] = None

    @field_validator("near")
    @classmethod
    def _check_near(cls, value: str | None) -> str | None:
        if value is not None:
            geo.parse_point(value)
        return value

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, value: str | None) -> str | None:
        if value is not None:
            geo.parse_bbox(value)
        return value

    @property
    def point(self) -> geo.Point | None:
        return geo.parse_point(self.near) if self.near is not None else None

    @property
    def box(self) -> geo.BBox | None:
        return geo.parse_bbox(self.bbox) if self.bbox is not None else None


# --- spots -----------------------------------------------------------------------------


class SpotState(StrEnum):
    available = "available"
    reserved = "reserved"
    occupied = "occupied"
    out_of_service = "out_of_service"


class SpotCreate(StrictModel):
    label: SpotLabel
    level: Level | None = None
    kind: SpotKind = SpotKind.standard


class SpotBatchCreate(StrictModel):
    """``count`` spots labelled ``prefix`` + ``start``, ``start + 1``, ..."""

    prefix: LabelPrefix
    count: Annotated[int, Field(ge=1, le=MAX_BATCH), JSON_NUMBER]
    start: Annotated[int, Field(ge=0, le=10**9), JSON_NUMBER] = 1
    level: Level | None = None
    kind: SpotKind = SpotKind.standard

    @model_validator(mode="after")
    def _check_labels(self) -> Self:
        longest = len(self.prefix) + len(str(self.start + self.count - 1))
        if longest > LABEL_LENGTH:
            raise ValueError(f"labels would be longer than {LABEL_LENGTH} characters")
        return self

    @property
    def labels(self) -> list[str]:
        return [f"{self.prefix}{n}" for n in range(self.start, self.start + self.count)]


def _spot_body_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "batch" if "prefix" in value or "count" in value else "one"
    return "batch" if isinstance(value, SpotBatchCreate) else "one"


SpotCreateBody = Annotated[
    Annotated[SpotCreate, Tag("one")] | Annotated[SpotBatchCreate, Tag("batch")],
    Discriminator(_spot_body_kind),
]


class SpotUpdate(PatchModel):
    nullable: ClassVar[frozenset[str]] = frozenset({"level"})

    label: SpotLabel | None = None
    level: Level | None = None
    kind: SpotKind | None = None
    out_of_service: JsonBool | None = None


class SpotRead(BaseModel):
    id: int
    lot_id: int
    label: str
    level: str | None
    kind: SpotKind
    state: SpotState


class SpotPage(BaseModel):
    items: list[SpotRead]
    total: int
    limit: int
    offset: int


class SpotList(BaseModel):
    items: list[SpotRead]


# --- time windows, free spots and quotes ----------------------------------------------


class TimeWindow(BaseModel):
    starts_at: Instant
    ends_at: Instant

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.ends_at - self.starts_at > MAX_WINDOW:
            raise ValueError(f"the window may be at most {MAX_WINDOW.days} days long")
        return self


class FreeSpotsQuery(TimeWindow):
    kind: SpotKind | None = None


class FreeSpots(BaseModel):
    starts_at: datetime
    ends_at: datetime
    kind: SpotKind | None
    count: int = Field(description="spots free for the whole window")
    items: list[SpotRead]


class QuoteLine(BaseModel):
    """A 24-hour period of the stay (the last may be shorter), or the overstay past its end."""

    kind: Literal["period", "overstay"]
    starts_at: datetime
    ends_at: datetime
    billed_minutes: int = Field(description="elapsed time rounded up to the billing increment")
    amount: MoneyOut
    capped: bool = Field(description="the daily maximum applied")


class Quote(BaseModel):
    amount: MoneyOut
    currency: str
    starts_at: datetime
    ends_at: datetime
    hourly_rate: MoneyOut
    daily_max: MoneyOut | None
    breakdown: list[QuoteLine]
