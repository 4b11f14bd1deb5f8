"""Lot and spot rules: who sees and who manages a lot, search, spot labels and prices.

Seeing a lot: admins every lot; everyone (anonymous too) the public lots; members and
managers of its operator the members-only ones. A lot the caller may not see is 404, as
if it did not exist. Managing a lot: admins and the managers of its operator; anyone else
who can see the lot gets 403.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.availability.outbox import lot_changed
from parkspot.db.types import utcnow
from parkspot.lots import geo, pricing, repository
from parkspot.lots.exceptions import (
    LotHasReservations,
    LotNotFound,
    NotLotManager,
    SpotHasReservations,
    SpotLabelTaken,
    SpotNotFound,
)
from parkspot.lots.schemas import (
    FreeSpots,
    FreeSpotsQuery,
    LotCreate,
    LotFilters,
    LotPage,
    LotRead,
    LotUpdate,
    Quote,
    SpotBatchCreate,
    SpotCreate,
    SpotList,
    SpotPage,
    SpotRead,
    SpotState,
    SpotUpdate,
    TimeWindow,
)
from parkspot.models import Lot, ReservationStatus, Spot, SpotKind, User, Visibility
from parkspot.operators import service as operator_service
from parkspot.operators.access import Access, access_to_operator
from parkspot.reservations import repository as reservation_repository

# --- access ----------------------------------------------------------------------------


async def _can_see(session: AsyncSession, user: User | None, lot: Lot) -> bool:
    # A public lot needs no membership lookup.
    if lot.visibility == Visibility.public:
        return True
    return await access_to_operator(session, user, lot.operator_id) is not Access.none


async def _require_manager(session: AsyncSession, user: User, lot: Lot) -> None:
    access = await access_to_operator(session, user, lot.operator_id)
    if access is Access.manager:
        return
    if lot.visibility == Visibility.public or access is Access.member:
        raise NotLotManager()
    raise LotNotFound()


async def get_visible_lot(session: AsyncSession, user: User | None, lot_id: int) -> Lot:
    lot = await repository.get_lot(session, lot_id)
    if lot is None or not await _can_see(session, user, lot):
        raise LotNotFound()
    return lot


async def get_managed_lot(session: AsyncSession, user: User, lot_id: int) -> Lot:
    """Raises LotNotFound (404) or NotLotManager (403)."""
    lot = await repository.get_lot(session, lot_id)
    if lot is None:
        raise LotNotFound()
    await _require_manager(session, user, lot)
    return lot


async def get_visible_spot_and_lot(
    session: AsyncSession, user: User | None, spot_id: int
) -> tuple[Spot, Lot]:
    """The spot and its lot, in one query; SpotNotFound when the caller may not see it."""
    found = await repository.get_spot(session, spot_id)
    if found is None or not await _can_see(session, user, found[1]):
        raise SpotNotFound()
    return found


async def get_visible_spot(session: AsyncSession, user: User | None, spot_id: int) -> Spot:
    return (await get_visible_spot_and_lot(session, user, spot_id))[0]


async def get_managed_spot(session: AsyncSession, user: User, spot_id: int) -> Spot:
    """Raises SpotNotFound (404, also when the lot is hidden from the caller) or
    NotLotManager (403)."""
    found = await repository.get_spot(session, spot_id)
    if found is None:
        raise SpotNotFound()
    spot, lot = found
    try:
        await _require_manager(session, user, lot)
    except LotNotFound:
        raise SpotNotFound() from None
    return spot


# --- lots ------------------------------------------------------------------------------


async def list_lots(
    session: AsyncSession, user: User | None, filters: LotFilters, limit: int, offset: int
) -> LotPage:
    """By id; with ``near``, nearest first and each lot with its ``distance_km``."""
    center = filters.point
    if center is None:
        lots, total = await repository.search_page(session, user, filters, limit, offset)
        items = [LotRead.model_validate(lot) for lot in lots]
        return LotPage(items=items, total=total, limit=limit, offset=offset)
    # SQL narrows the search to the circle's bounding box; the exact distance is computed
    # here so that both databases need nothing beyond plain comparisons.
    candidates = await repository.search_within(
        session, user, filters, geo.box_around(center, filters.radius_km)
    )
    near: list[tuple[float, Lot]] = []
    for lot in candidates:
        distance = geo.distance_km(center, geo.Point(lot.latitude, lot.longitude))
        if distance <= filters.radius_km:
            near.append((distance, lot))
    near.sort(key=lambda pair: (pair[0], pair[1].id))
    items = [
        LotRead.model_validate(lot).model_copy(update={"distance_km": round(distance, 3)})
        for distance, lot in near[offset : offset + limit]
    ]
    return LotPage(items=items, total=len(near), limit=limit, offset=offset)


async def create_lot(session: AsyncSession, user: User, data: LotCreate) -> LotRead:
    """Raises NotFound (operator unknown or not the caller's) or Forbidden (a member only)."""
    await operator_service.get_managed(session, user, data.operator_id)
    lot = Lot(**data.model_dump())
    session.add(lot)
    await session.flush()
    lot_changed(session, lot.id)
    return LotRead.model_validate(lot)


async def update_lot(session: AsyncSession, lot: Lot, data: LotUpdate) -> LotRead:
    for name, value in data.model_dump(exclude_unset=True).items():
        setattr(lot, name, value)
    lot.updated_at = utcnow()
    session.add(lot)
    await session.flush()
    lot_changed(session, lot.id)
    return LotRead.model_validate(lot)


async def delete_lot(session: AsyncSession, lot: Lot, now: datetime) -> None:
    """The row stays (``deleted_at`` set) so that the history of its stays stays whole;
    the lot and its spots are gone from every endpoint at once. Raises LotHasReservations
    while a reservation of it is upcoming or a car is checked in."""
    assert lot.id is not None
    if await reservation_repository.has_active_after(session, now, lot_id=lot.id):
        raise LotHasReservations()
    lot.deleted_at = lot.updated_at = now
    session.add(lot)
    await session.flush()
    lot_changed(session, lot.id)


def quote(lot: Lot, policy: pricing.BillingPolicy, window: TimeWindow) -> Quote:
    return pricing.price(lot, policy, window.starts_at, window.ends_at)


# --- spots -----------------------------------------------------------------------------


_STATE_OF_STATUS = {
    ReservationStatus.checked_in: SpotState.occupied,
    ReservationStatus.confirmed: SpotState.reserved,
}


def spot_state(out_of_service: bool, status: str | None, sensor_occupied: bool | None) -> SpotState:
    """Out of service, occupied (a stay is checked in or the spot's sensor says so),
    reserved (a reservation covers now) or available; ``status`` is the spot's entry from
    ``current_status_*``. A sensor saying free does not end a checked-in stay."""
    if out_of_service:
        return SpotState.out_of_service
    if sensor_occupied:
        return SpotState.occupied
    if status is None:
        return SpotState.available
    return _STATE_OF_STATUS.get(ReservationStatus(status), SpotState.available)


async def to_reads(session: AsyncSession, spots: Sequence[Spot], now: datetime) -> list[SpotRead]:
    """The spots with their state now."""
    ids = [s.id for s in spots if s.id is not None]
    statuses = await reservation_repository.current_status_by_spot(session, ids, now)
    reads = []
    for spot in spots:
        assert spot.id is not None
        state = spot_state(spot.is_out_of_service, statuses.get(spot.id), spot.sensor_occupied)
        reads.append(
            SpotRead(
                id=spot.id,
                lot_id=spot.lot_id,
                label=spot.label,
                level=spot.level,
                kind=SpotKind(spot.kind),
                state=state,
            )
        )
    return reads


async def read_spot(session: AsyncSession, spot: Spot, now: datetime) -> SpotRead:
    return (await to_reads(session, [spot], now))[0]


async def list_spots(
    session: AsyncSession, lot: Lot, kind: SpotKind | None, now: datetime, limit: int, offset: int
) -> SpotPage:
    assert lot.id is not None
    spots, total = await repository.list_spots(session, lot.id, kind, limit, offset)
    items = await to_reads(session, spots, now)
    return SpotPage(items=items, total=total, limit=limit, offset=offset)


async def _flush_labels(session: AsyncSession, labels: Sequence[str]) -> None:
    """Flushes; a concurrent request that took one of ``labels`` first is a conflict too."""
    try:
        await session.flush()
    except IntegrityError:
        raise SpotLabelTaken(labels) from None


async def create_spots(
    session: AsyncSession, lot: Lot, data: SpotCreate | SpotBatchCreate, now: datetime
) -> SpotRead | SpotList:
    """All or nothing: raises SpotLabelTaken naming every label the lot already has."""
    assert lot.id is not None
    labels = data.labels if isinstance(data, SpotBatchCreate) else [data.label]
    taken = await repository.taken_labels(session, lot.id, labels)
    if taken:
        raise SpotLabelTaken(taken)
    spots = [Spot(lot_id=lot.id, label=label, level=data.level, kind=data.kind) for label in labels]
    session.add_all(spots)
    await _flush_labels(session, labels)
    lot_changed(session, lot.id)
    reads = await to_reads(session, spots, now)
    return reads[0] if isinstance(data, SpotCreate) else SpotList(items=reads)


async def update_spot(
    session: AsyncSession, spot: Spot, data: SpotUpdate, now: datetime
) -> SpotRead:
    fields = data.model_fields_set
    if data.label is not None and data.label != spot.label:
        if await repository.taken_labels(session, spot.lot_id, [data.label], spot.id):
            raise SpotLabelTaken([data.label])
        spot.label = data.label
    if "level" in fields:
        spot.level = data.level
    if data.kind is not None:
        spot.kind = data.kind
    if data.out_of_service is not None:
        spot.is_out_of_service = data.out_of_service
    session.add(spot)
    await _flush_labels(session, [spot.label])
    lot_changed(session, spot.lot_id)
    return await read_spot(session, spot, now)


async def delete_spot(session: AsyncSession, spot: Spot, now: datetime) -> None:
    """Raises SpotHasReservations while a reservation of it is upcoming or checked in; past
    reservations keep the spot's label."""
    if await reservation_repository.has_active_after(session, now, spot_id=spot.id):
        raise SpotHasReservations()
    await session.delete(spot)
    await session.flush()
    lot_changed(session, spot.lot_id)


async def free_spots(
    session: AsyncSession, lot: Lot, query: FreeSpotsQuery, now: datetime
) -> FreeSpots:
    """The lot's in-service spots (of ``kind``) with no active reservation overlapping the
    window; ``count`` is how many bookings of the whole window the lot can still take."""
    assert lot.id is not None
    kinds = None if query.kind is None else [query.kind]
    candidates = await reservation_repository.free_spots(
        session, lot.id, query.starts_at, query.ends_at, kinds
    )
    items = await to_reads(session, [c.spot for c in candidates], now)
    return FreeSpots(
        starts_at=query.starts_at,
        ends_at=query.ends_at,
        kind=query.kind,
        count=len(items),
        items=items,
    )
