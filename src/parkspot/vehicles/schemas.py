"""Request and response bodies for vehicles; plates are normalised on the way in."""

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from parkspot.models import VehicleKind
from parkspot.validation import SINGLE_LINE, StrictModel

_SEPARATORS = re.compile(r"[\s-]+")
_PLATE = re.compile(r"^[A-Z0-9]{1,15}$")


def normalise_plate(value: str) -> str:
    """Upper case with spaces and dashes removed; 1-15 letters or digits remain."""
    plate = _SEPARATORS.sub("", value).upper()
    if not _PLATE.match(plate):
        raise ValueError("a plate is 1-15 letters or digits (spaces and dashes are ignored)")
    return plate


Plate = Annotated[str, StringConstraints(max_length=40), AfterValidator(normalise_plate)]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60, pattern=SINGLE_LINE)
]
Color = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=30, pattern=SINGLE_LINE)
]


class VehicleCreate(StrictModel):
    plate: Plate
    kind: VehicleKind = VehicleKind.car
    make: ShortText | None = None
    color: Color | None = None


class VehicleUpdate(StrictModel):
    plate: Plate | None = None
    kind: VehicleKind | None = None
    make: ShortText | None = None
    color: Color | None = None


class VehicleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    plate: str
    kind: VehicleKind
    make: str | None
    color: str | None
    created_at: datetime


class VehiclePage(BaseModel):
    items: list[VehicleRead]
    total: int
    limit: int
    offset: int
