"""Routes under /api/v1/lots and /api/v1/spots."""

from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from parkspot.deps import (
    ANONYMOUS_ALLOWED,
    CurrentUser,
    OptionalUser,
    PageDep,
    SessionDep,
    StateDep,
)
from parkspot.lots import service
from parkspot.lots.dependencies import ManagedLot, ManagedSpot, VisibleLot, VisibleSpot
from parkspot.lots.schemas import (
    FreeSpots,
    FreeSpotsQuery,
    LotCreate,
    LotFilters,
    LotPage,
    LotRead,
    LotUpdate,
    Quote,
    SpotCreateBody,
    SpotList,
    SpotPage,
    SpotRead,
    SpotUpdate,
    TimeWindow,
)
from parkspot.models import SpotKind

router = APIRouter(tags=["lots"])


@router.get("/lots", openapi_extra=ANONYMOUS_ALLOWED)
async def list_lots(
    filters: Annotated[LotFilters, Query()],
    user: OptionalUser,
    page: PageDep,
    session: SessionDep,
) -> LotPage:
    return await service.list_lots(session, user, filters, page.limit, page.offset)


@router.post("/lots", status_code=status.HTTP_201_CREATED)
async def create_lot(data: LotCreate, user: CurrentUser, session: SessionDep) -> LotRead:
    return await service.create_lot(session, user, data)


@router.get("/lots/{lot_id}", openapi_extra=ANONYMOUS_ALLOWED)
async def read_lot(lot: VisibleLot) -> LotRead:
    return LotRead.model_validate(lot)


@router.patch("/lots/{lot_id}")
async def update_lot(lot: ManagedLot, data: LotUpdate, session: SessionDep) -> LotRead:
    return await service.update_lot(session, lot, data)


@router.delete("/lots/{lot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_lot(lot: ManagedLot, session: SessionDep, state: StateDep) -> None:
    """409 ``lot_has_reservations`` while a reservation is upcoming or a car is checked in."""
    await service.delete_lot(session, lot, state.clock())


@router.get("/lots/{lot_id}/spots", openapi_extra=ANONYMOUS_ALLOWED)
async def list_spots(
    lot: VisibleLot,
    session: SessionDep,
    state: StateDep,
    kind: SpotKind | None = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SpotPage:
    return await service.list_spots(session, lot, kind, state.clock(), limit, offset)


@router.post("/lots/{lot_id}/spots", status_code=status.HTTP_201_CREATED)
async def create_spots(
    lot: ManagedLot,
    data: Annotated[
        SpotCreateBody,
        Body(
            openapi_examples={
                "one": {"value": {"label": "A1", "level": "0", "kind": "ev"}},
                "batch": {"value": {"prefix": "A", "count": 30, "start": 1}},
            }
        ),
    ],
    session: SessionDep,
    state: StateDep,
) -> SpotRead | SpotList:
    """One spot ``{label, level?, kind?}`` (returns it) or a batch ``{prefix, count,
    start?, level?, kind?}`` (returns ``{items}``); all or nothing."""
    return await service.create_spots(session, lot, data, state.clock())


@router.get("/lots/{lot_id}/free-spots", openapi_extra=ANONYMOUS_ALLOWED)
async def list_free_spots(
    lot: VisibleLot,
    query: Annotated[FreeSpotsQuery, Query()],
    session: SessionDep,
    state: StateDep,
) -> FreeSpots:
    return await service.free_spots(session, lot, query, state.clock())


@router.get("/lots/{lot_id}/quote", openapi_extra=ANONYMOUS_ALLOWED)
async def quote_lot(
    lot: VisibleLot, window: Annotated[TimeWindow, Query()], state: StateDep
) -> Quote:
    return service.quote(lot, state.billing, window)


@router.get("/spots/{spot_id}", openapi_extra=ANONYMOUS_ALLOWED)
async def read_spot(spot: VisibleSpot, session: SessionDep, state: StateDep) -> SpotRead:
    return await service.read_spot(session, spot, state.clock())


@router.patch("/spots/{spot_id}")
async def update_spot(
    spot: ManagedSpot, data: SpotUpdate, session: SessionDep, state: StateDep
) -> SpotRead:
    return await service.update_spot(session, spot, data, state.clock())


@router.delete("/spots/{spot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_spot(spot: ManagedSpot, session: SessionDep, state: StateDep) -> None:
    """409 ``spot_has_reservations`` while a reservation is upcoming or a car is checked in."""
    await service.delete_spot(session, spot, state.clock())
