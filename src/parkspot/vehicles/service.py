"""Vehicle rules: one plate once per owner; nobody sees another user's vehicles."""

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.db.unique import add_unique
from parkspot.errors import Conflict, NotFound
from parkspot.models import User, Vehicle
from parkspot.reservations import repository as reservation_repository
from parkspot.vehicles import repository
from parkspot.vehicles.schemas import VehicleCreate, VehiclePage, VehicleRead, VehicleUpdate


def _plate_conflict(plate: str) -> Conflict:
    return Conflict(
        f"You already have a vehicle with plate {plate}",
        code="plate_taken",
        details={"plate": plate},
    )


async def get_owned(session: AsyncSession, user: User, vehicle_id: int) -> Vehicle:
    """The caller's vehicle; another user's is reported as not found."""
    assert user.id is not None
    vehicle = await repository.get_owned(session, user.id, vehicle_id)
    if vehicle is None:
        raise NotFound("Vehicle not found", code="vehicle_not_found")
    return vehicle


async def create(session: AsyncSession, user: User, data: VehicleCreate) -> VehicleRead:
    assert user.id is not None
    if await repository.plate_taken(session, user.id, data.plate):
        raise _plate_conflict(data.plate)
    vehicle = Vehicle(owner_id=user.id, **data.model_dump())
    # The check above can race with a concurrent request; the constraint decides.
    if await add_unique(session, vehicle, ("plate",)):
        raise _plate_conflict(data.plate)
    return VehicleRead.model_validate(vehicle)


async def list_own(session: AsyncSession, user: User, limit: int, offset: int) -> VehiclePage:
    assert user.id is not None
    vehicles, total = await repository.list_owned(session, user.id, limit, offset)
    return VehiclePage(
        items=[VehicleRead.model_validate(v) for v in vehicles],
        total=total,
        limit=limit,
        offset=offset,
    )


async def update(session: AsyncSession, vehicle: Vehicle, data: VehicleUpdate) -> VehicleRead:
    if data.plate is not None and data.plate != vehicle.plate:
        if await repository.plate_taken(session, vehicle.owner_id, data.plate, vehicle.id):
            raise _plate_conflict(data.plate)
        vehicle.plate = data.plate
    for name in ("kind", "make", "color"):
        if name in data.model_fields_set:
            value = getattr(data, name)
            if name == "kind" and value is None:
                continue
            setattr(vehicle, name, value)
    if await add_unique(session, vehicle, ("plate",)):
        raise _plate_conflict(vehicle.plate)
    return VehicleRead.model_validate(vehicle)


async def delete(session: AsyncSession, vehicle: Vehicle, now: datetime) -> None:
    """Raises Conflict while the vehicle has an upcoming or ongoing reservation; past
    reservations keep its plate."""
    if await reservation_repository.has_active_after(session, now, vehicle_id=vehicle.id):
        raise Conflict(
            "The vehicle has upcoming or ongoing reservations; cancel them first",
            code="vehicle_in_use",
        )
    await session.delete(vehicle)
    await session.flush()
