"""Dependencies that load a lot or spot and check the caller may see or manage it."""

from typing import Annotated

from fastapi import Depends, Path

from parkspot.deps import CurrentUser, OptionalUser, SessionDep
from parkspot.lots import service
from parkspot.models import Lot, Spot
from parkspot.validation import MAX_ID

LotId = Annotated[int, Path(ge=1, le=MAX_ID)]
SpotId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_visible_lot(lot_id: LotId, user: OptionalUser, session: SessionDep) -> Lot:
    return await service.get_visible_lot(session, user, lot_id)


async def get_managed_lot(lot_id: LotId, user: CurrentUser, session: SessionDep) -> Lot:
    return await service.get_managed_lot(session, user, lot_id)


async def get_visible_spot(spot_id: SpotId, user: OptionalUser, session: SessionDep) -> Spot:
    return await service.get_visible_spot(session, user, spot_id)


async def get_managed_spot(spot_id: SpotId, user: CurrentUser, session: SessionDep) -> Spot:
    return await service.get_managed_spot(session, user, spot_id)


VisibleLot = Annotated[Lot, Depends(get_visible_lot)]
ManagedLot = Annotated[Lot, Depends(get_managed_lot)]
VisibleSpot = Annotated[Spot, Depends(get_visible_spot)]
ManagedSpot = Annotated[Spot, Depends(get_managed_spot)]
