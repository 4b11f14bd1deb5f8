"""Routes under /api/v1/vehicles."""

from typing import Annotated

from fastapi import APIRouter, Path, status

from parkspot.deps import CurrentUser, PageDep, SessionDep, StateDep
from parkspot.vehicles import service
from parkspot.vehicles.schemas import VehicleCreate, VehiclePage, VehicleRead, VehicleUpdate

router = APIRouter(prefix="/vehicles", tags=["vehicles"])
VehicleId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_vehicle(
    data: VehicleCreate, user: CurrentUser, session: SessionDep
) -> VehicleRead:
    return await service.create(session, user, data)


@router.get("")
async def list_vehicles(user: CurrentUser, page: PageDep, session: SessionDep) -> VehiclePage:
    return await service.list_own(session, user, page.limit, page.offset)


@router.get("/{vehicle_id}")
async def read_vehicle(
    vehicle_id: VehicleId, user: CurrentUser, session: SessionDep
) -> VehicleRead:
    return VehicleRead.model_validate(await service.get_owned(session, user, vehicle_id))


@router.patch("/{vehicle_id}")
async def update_vehicle(
    vehicle_id: VehicleId, data: VehicleUpdate, user: CurrentUser, session: SessionDep
) -> VehicleRead:
    return await service.update(session, await service.get_owned(session, user, vehicle_id), data)


@router.delete("/{vehicle_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_vehicle(
    vehicle_id: VehicleId, user: CurrentUser, session: SessionDep, state: StateDep
) -> None:
    """409 ``vehicle_in_use`` while it has an upcoming or ongoing reservation."""
    vehicle = await service.get_owned(session, user, vehicle_id)
    await service.delete(session, vehicle, state.clock())
