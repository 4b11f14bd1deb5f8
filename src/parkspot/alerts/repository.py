"""SQL of alerts and of the conditions that raise them."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.alerts.schemas import AlertFilters, AlertState
from parkspot.db.pagination import count_and_page
from parkspot.models import Alert, Device, Lot, Reservation, ReservationStatus, Spot, User
from parkspot.operators import repository as operator_repository


async def lots(session: AsyncSession, lot_ids: Sequence[int]) -> list[tuple[int, int, int, bool]]:
    """(lot id, operator id, count excess, deleted) of the lots."""
    stmt = select(
        col(Lot.id), col(Lot.operator_id), col(Lot.count_excess), col(Lot.deleted_at)
    ).where(col(Lot.id).in_(lot_ids))
    return [
        (lot_id, operator_id, excess, deleted_at is not None)
        for lot_id, operator_id, excess, deleted_at in (await session.execute(stmt)).all()
        if lot_id is not None
    ]


async def active_devices(session: AsyncSession, lot_ids: Sequence[int]) -> list[Device]:
    stmt = select(Device).where(col(Device.lot_id).in_(lot_ids), col(Device.revoked_at).is_(None))
    return list((await session.execute(stmt)).scalars())


async def occupied_spots(
    session: AsyncSession, lot_ids: Sequence[int]
) -> list[tuple[int, int, str, str | None]]:
    """(spot id, lot id, label, plate read) of the spots whose sensor reports a car."""
    stmt = select(col(Spot.id), col(Spot.lot_id), col(Spot.label), col(Spot.sensor_plate)).where(
        col(Spot.lot_id).in_(lot_ids), col(Spot.sensor_occupied).is_(True)
    )
    return [
        (spot_id, lot_id, label, plate)
        for spot_id, lot_id, label, plate in (await session.execute(stmt)).all()
        if spot_id is not None
    ]


async def holding(
    session: AsyncSession, spot_ids: Sequence[int], now: datetime
) -> list[Reservation]:
    """The spots' stays checked in, and their confirmed reservations not yet over."""
    stmt = select(Reservation).where(
        col(Reservation.spot_id).in_(spot_ids),
        or_(
            col(Reservation.status) == ReservationStatus.checked_in,
            (col(Reservation.status) == ReservationStatus.confirmed)
            & (col(Reservation.ends_at) > now),
        ),
    )
    return list((await session.execute(stmt)).scalars())


async def running_no_shows(
    session: AsyncSession, lot_ids: Sequence[int], now: datetime
) -> list[Reservation]:
    """No-shows of the lots whose window has not ended."""
    stmt = select(Reservation).where(
        col(Reservation.lot_id).in_(lot_ids),
        col(Reservation.status) == ReservationStatus.no_show,
        col(Reservation.ends_at) > now,
    )
    return list((await session.execute(stmt)).scalars())


async def open_alerts(session: AsyncSession, lot_ids: Sequence[int]) -> list[Alert]:
    stmt = select(Alert).where(col(Alert.lot_id).in_(lot_ids), col(Alert.cleared_at).is_(None))
    return list((await session.execute(stmt)).scalars())


async def search(
    session: AsyncSession,
    user: User,
    all_lots: bool,
    filters: AlertFilters,
    limit: int,
    offset: int,
) -> tuple[Sequence[Alert], int]:
    """Alerts of the lots the user manages (``all_lots``: every lot), newest first."""
    stmt = select(Alert)
    if not all_lots:
        stmt = stmt.join(Lot, col(Lot.id) == col(Alert.lot_id)).where(
            operator_repository.manages_lot(user)
        )
    conditions: list[Any] = []
    if filters.lot_id is not None:
        conditions.append(col(Alert.lot_id) == filters.lot_id)
    if filters.kind is not None:
        conditions.append(col(Alert.kind) == filters.kind)
    if filters.state is AlertState.open:
        conditions.append(col(Alert.cleared_at).is_(None))
    elif filters.state is AlertState.cleared:
        conditions.append(col(Alert.cleared_at).is_not(None))
    stmt = stmt.where(*conditions)
    return await count_and_page(
        session, stmt, (col(Alert.raised_at).desc(), col(Alert.id).desc()), limit, offset
    )


async def get_managed(
    session: AsyncSession, user: User, alert_id: int, all_lots: bool
) -> Alert | None:
    stmt = select(Alert).where(col(Alert.id) == alert_id)
    if not all_lots:
        stmt = stmt.join(Lot, col(Lot.id) == col(Alert.lot_id)).where(
            operator_repository.manages_lot(user)
        )
    return (await session.execute(stmt)).scalar_one_or_none()
