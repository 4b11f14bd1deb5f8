"""Routes under /api/v1/reservations and /api/v1/tickets."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from parkspot.deps import CurrentUser, PageDep, SessionDep, StateDep
from parkspot.idempotency.dependencies import IdempotencyDep
from parkspot.reservations import service
from parkspot.reservations.schemas import (
    ReservationCreate,
    ReservationFilters,
    ReservationPage,
    ReservationRead,
    ReservationUpdate,
    TicketCreate,
)
from parkspot.validation import MAX_ID

router = APIRouter(tags=["reservations"])
ReservationId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post("/reservations", status_code=status.HTTP_201_CREATED, response_model=ReservationRead)
async def create_reservation(
    data: ReservationCreate,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Book ``spot_id``, or let the server pick a spot of ``lot_id`` (and ``kind``)."""
    return await idempotency.run(201, lambda: service.book(session, state, user, data))


@router.get("/reservations")
async def list_reservations(
    filters: Annotated[ReservationFilters, Query()],
    user: CurrentUser,
    page: PageDep,
    session: SessionDep,
) -> ReservationPage:
    """Your reservations, newest start first; ``scope=managed`` lists your lots' instead."""
    return await service.search(session, user, filters, page.limit, page.offset)


@router.get("/reservations/{reservation_id}")
async def read_reservation(
    reservation_id: ReservationId, user: CurrentUser, session: SessionDep
) -> ReservationRead:
    return await service.get(session, user, reservation_id)


@router.patch("/reservations/{reservation_id}")
async def update_reservation(
    reservation_id: ReservationId,
    data: ReservationUpdate,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
) -> ReservationRead:
    return await service.update(session, state, user, reservation_id, data)


@router.post("/reservations/{reservation_id}/cancel", response_model=ReservationRead)
async def cancel_reservation(
    reservation_id: ReservationId,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency: IdempotencyDep,
) -> Response:
    return await idempotency.run(200, lambda: service.cancel(session, state, user, reservation_id))


@router.post("/reservations/{reservation_id}/check-in", response_model=ReservationRead)
async def check_in_reservation(
    reservation_id: ReservationId,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency: IdempotencyDep,
) -> Response:
    return await idempotency.run(
        200, lambda: service.check_in(session, state, user, reservation_id)
    )


@router.post("/reservations/{reservation_id}/check-out", response_model=ReservationRead)
async def check_out_reservation(
    reservation_id: ReservationId,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Ends the stay and sets ``final_price``."""
    return await idempotency.run(
        200, lambda: service.check_out(session, state, user, reservation_id)
    )


@router.post("/tickets", status_code=status.HTTP_201_CREATED, response_model=ReservationRead)
async def create_ticket(
    data: TicketCreate,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency: IdempotencyDep,
) -> Response:
    """A walk-in stay starting now; ``ends_at`` says by when the spot must be free."""
    return await idempotency.run(201, lambda: service.start_ticket(session, state, user, data))
