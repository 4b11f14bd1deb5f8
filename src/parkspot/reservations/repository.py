"""SQL for reservations: overlap checks, spot candidates, listings and time-driven changes.

Overlap means the half-open windows ``[starts_at, ends_at)`` intersect and the reservation
is active (confirmed or checked in). On PostgreSQL the exclusion constraints make the final
decision; on SQLite the booking transaction holds the database write lock (BEGIN IMMEDIATE),
so the checks here are decisive.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, false, func, literal, or_, type_coerce, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from parkspot.db.pagination import count_and_page
from parkspot.db.search import contains_pattern
from parkspot.db.types import UTCDateTime
from parkspot.models import (
    ACTIVE_STATUSES,
    Lot,
    Reservation,
    ReservationStatus,
    Spot,
    User,
)
from parkspot.operators import repository as operator_repository
from parkspot.reservations.schemas import ReservationFilters

SPOT_EXCLUSION = "ex_reservations_spot_id_window"
NO_SHOW_AFTER = timedelta(milliseconds=1)
VEHICLE_EXCLUSION = "ex_reservations_vehicle_id_window"


def active() -> ColumnElement[bool]:
    return col(Reservation.status).in_(ACTIVE_STATUSES)


def overlapping(starts_at: datetime, ends_at: datetime) -> ColumnElement[bool]:
    return and_(
        active(), col(Reservation.starts_at) < ends_at, col(Reservation.ends_at) > starts_at
    )


@dataclass(frozen=True)
class Clashes:
    """What stands in the way of a booking, read in one round trip."""

    upcoming: int  # the user's active reservations that have not ended
    vehicle_busy: bool  # an active reservation of the vehicle overlaps the window
    spot_taken: bool  # an active reservation of the spot overlaps the window


async def clashes(
    session: AsyncSession,
    starts_at: datetime,
    ends_at: datetime,
    *,
    now: datetime,
    user_id: int | None = None,
    vehicle_id: int | None = None,
    spot_id: int | None = None,
    exclude_id: int | None = None,
) -> Clashes:
    """Checks left out (their id None) read as 0 / False; ``exclude_id`` is the
    reservation being changed."""

    def overlap(column: Mapped[int | None], value: int | None) -> ColumnElement[bool]:
        if value is None:
            return false()
        return exists().where(
            column == value, overlapping(starts_at, ends_at), col(Reservation.id) != exclude_id
        )

    upcoming: ColumnElement[int] = (
        literal(0)
        if user_id is None
        else select(func.count())
        .select_from(Reservation)
        .where(col(Reservation.user_id) == user_id, active(), col(Reservation.ends_at) > now)
        .scalar_subquery()
    )
    stmt = select(
        upcoming,
        overlap(col(Reservation.vehicle_id), vehicle_id),
        overlap(col(Reservation.spot_id), spot_id),
    )
    count, vehicle_busy, spot_taken = (await session.execute(stmt)).one()
    return Clashes(int(count), bool(vehicle_busy), bool(spot_taken))


async def lock_holder(session: AsyncSession, user_id: int) -> None:
    """Locks the user's row until the transaction ends, so that one user's bookings count
    their upcoming reservations one at a time (PostgreSQL; on SQLite the write lock already
    does). NO KEY UPDATE: inserts referencing the user are not held up."""
    stmt = select(User.id).where(col(User.id) == user_id).with_for_update(key_share=True)
    await session.execute(stmt)


async def next_start_after(session: AsyncSession, spot_id: int, at: datetime) -> datetime | None:
    """When the spot's next active reservation starting at or after ``at`` begins."""
    stmt = select(func.min(col(Reservation.starts_at))).where(
        col(Reservation.spot_id) == spot_id, active(), col(Reservation.starts_at) >= at
    )
    return (await session.execute(stmt)).scalar_one()


@dataclass(frozen=True)
class Candidate:
    """A spot free for the window, with its neighbouring reservations' edges."""

    spot: Spot
    previous_end: datetime | None
    next_start: datetime | None


async def free_spots(
    session: AsyncSession,
    lot_id: int,
    starts_at: datetime,
    ends_at: datetime,
    kinds: Sequence[str] | None = None,
) -> list[Candidate]:
    """In-service spots of the lot (of ``kinds``) with no active reservation overlapping."""
    taken = exists().where(
        col(Reservation.spot_id) == col(Spot.id), overlapping(starts_at, ends_at)
    )
    before = (
        select(func.max(col(Reservation.ends_at)))
        .where(
            col(Reservation.spot_id) == col(Spot.id),
            active(),
            col(Reservation.ends_at) <= starts_at,
        )
        .scalar_subquery()
    )
    after = (
        select(func.min(col(Reservation.starts_at)))
        .where(
            col(Reservation.spot_id) == col(Spot.id),
            active(),
            col(Reservation.starts_at) >= ends_at,
        )
        .scalar_subquery()
    )
    stmt = (
        select(Spot, before, after)
        .where(
            col(Spot.lot_id) == lot_id,
            col(Spot.is_out_of_service).is_(False),
            ~taken,
        )
        .order_by(col(Spot.label))
    )
    if kinds is not None:
        stmt = stmt.where(col(Spot.kind).in_(kinds))
    rows = (await session.execute(stmt)).all()
    return [Candidate(spot, previous_end, next_start) for spot, previous_end, next_start in rows]


class Overlap(Exception):
    """The database refused the write: an active reservation of that spot or vehicle overlaps."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


# SQLSTATE of the error PostgreSQL raises in the transaction it aborts to break a deadlock.
DEADLOCK_DETECTED = "40P01"
# A write that keeps being picked as a deadlock victim gives up after this many tries.
SAVE_ATTEMPTS = 3


def _is_deadlock(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == DEADLOCK_DETECTED


async def save(
    session: AsyncSession, reservation: Reservation, changes: Mapping[str, Any] | None = None
) -> None:
    """Inserts the reservation, or applies ``changes`` to it, in a savepoint; raises Overlap
    when an exclusion constraint (PostgreSQL) refuses it, leaving the transaction usable for
    another try. Changes must be made here, not before: opening the savepoint flushes what is
    pending, and a refusal there would end the whole transaction.

    Two transactions writing conflicting rows at the same instant each find the other's row
    and wait for it; PostgreSQL aborts one of them as a deadlock. That one writes again: it
    then waits for the other to end and meets the constraint by name (or goes through when
    the other rolled back)."""
    for attempt in range(1, SAVE_ATTEMPTS + 1):
        try:
            async with session.begin_nested():
                for name, value in (changes or {}).items():
                    setattr(reservation, name, value)
                session.add(reservation)
            return
        except IntegrityError as exc:
            message = str(exc.orig)
            for constraint in (SPOT_EXCLUSION, VEHICLE_EXCLUSION):
                if constraint in message:
                    raise Overlap(constraint) from None
            raise
        except DBAPIError as exc:
            if not _is_deadlock(exc) or attempt == SAVE_ATTEMPTS:
                raise


async def get(session: AsyncSession, reservation_id: int) -> Reservation | None:
    return await session.get(Reservation, reservation_id)


async def get_for_update(session: AsyncSession, reservation_id: int) -> Reservation | None:
    """The row locked until the transaction ends (PostgreSQL; SQLite holds the write lock)."""
    stmt = select(Reservation).where(col(Reservation.id) == reservation_id).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_plate_for_update(
    session: AsyncSession, lot_id: int, plate: str, status: ReservationStatus
) -> list[Reservation]:
    """The lot's reservations of that status for that plate (a handful at most), earliest
    start first, locked until the transaction ends."""
    stmt = (
        select(Reservation)
        .where(
            col(Reservation.lot_id) == lot_id,
            col(Reservation.plate) == plate,
            col(Reservation.status) == status,
        )
        .order_by(col(Reservation.starts_at), col(Reservation.id))
        .with_for_update()
    )
    return list((await session.execute(stmt)).scalars())


async def search(
    session: AsyncSession,
    user: User,
    filters: ReservationFilters,
    managed: bool,
    all_lots: bool,
    limit: int,
    offset: int,
) -> tuple[Sequence[Reservation], int]:
    """``managed``: reservations in lots the user manages (``all_lots``: every lot);
    otherwise the user's own. Newest start first."""
    stmt = select(Reservation).join(Lot, col(Lot.id) == col(Reservation.lot_id))
    if not managed:
        stmt = stmt.where(col(Reservation.user_id) == user.id)
    elif not all_lots:
        stmt = stmt.where(operator_repository.manages_lot(user))
    if filters.status:
        stmt = stmt.where(col(Reservation.status).in_(filters.status))
    if filters.lot_id is not None:
        stmt = stmt.where(col(Reservation.lot_id) == filters.lot_id)
    if filters.from_ is not None:
        stmt = stmt.where(col(Reservation.ends_at) > filters.from_)
    if filters.to is not None:
        stmt = stmt.where(col(Reservation.starts_at) < filters.to)
    if filters.q:
        pattern = contains_pattern(filters.q)
        stmt = stmt.join(User, col(User.id) == col(Reservation.user_id)).where(
            or_(
                col(User.email).like(pattern, escape="\\"),
                func.lower(col(Reservation.plate)).like(pattern, escape="\\"),
                func.lower(col(Reservation.spot_label)).like(pattern, escape="\\"),
                func.lower(col(Lot.name)).like(pattern, escape="\\"),
                func.lower(col(Lot.address)).like(pattern, escape="\\"),
            )
        )
    order = (col(Reservation.starts_at).desc(), col(Reservation.id).desc())
    return await count_and_page(session, stmt, order, limit, offset)


async def expire_no_shows(session: AsyncSession, started_before: datetime) -> list[Reservation]:
    """Marks confirmed reservations that started before ``started_before`` as no-shows."""
    stmt = (
        select(Reservation)
        .where(
            col(Reservation.status) == ReservationStatus.confirmed,
            col(Reservation.starts_at) < started_before,
        )
        .with_for_update(skip_locked=True)
    )
    expired = list((await session.execute(stmt)).scalars())
    if expired:
        await session.execute(
            update(Reservation)
            .where(col(Reservation.id).in_([r.id for r in expired]))
            .values(status=ReservationStatus.no_show)
        )
    return expired


async def has_active_after(
    session: AsyncSession,
    now: datetime,
    *,
    lot_id: int | None = None,
    spot_id: int | None = None,
    vehicle_id: int | None = None,
) -> bool:
    """Whether an active reservation (of that lot, spot or vehicle) has not ended yet, or is
    checked in whatever its end."""
    target = (
        col(Reservation.lot_id) == lot_id
        if lot_id is not None
        else col(Reservation.spot_id) == spot_id
        if spot_id is not None
        else col(Reservation.vehicle_id) == vehicle_id
    )
    stmt = select(
        exists().where(
            target,
            or_(
                col(Reservation.status) == ReservationStatus.checked_in,
                and_(active(), col(Reservation.ends_at) > now),
            ),
        )
    )
    return bool((await session.execute(stmt)).scalar())


async def _current_statuses(
    session: AsyncSession, which: ColumnElement[bool], now: datetime
) -> dict[int, str]:
    stmt = select(Reservation.spot_id, Reservation.status).where(
        which,
        or_(
            col(Reservation.status) == ReservationStatus.checked_in,
            and_(
                col(Reservation.status) == ReservationStatus.confirmed,
                col(Reservation.starts_at) <= now,
                col(Reservation.ends_at) > now,
            ),
        ),
    )
    states: dict[int, str] = {}
    for spot_id, status in (await session.execute(stmt)).all():
        if spot_id is not None and states.get(spot_id) != ReservationStatus.checked_in:
            states[spot_id] = status
    return states


async def current_status_by_spot(
    session: AsyncSession, spot_ids: Sequence[int], now: datetime
) -> dict[int, str]:
    """For spots holding a stay or a reservation now: the reservation's status."""
    if not spot_ids:
        return {}
    return await _current_statuses(session, col(Reservation.spot_id).in_(spot_ids), now)


async def current_status_in_lots(
    session: AsyncSession, lot_ids: Sequence[int], now: datetime
) -> dict[int, str]:
    """``current_status_by_spot`` for every spot of the lots."""
    return await _current_statuses(session, col(Reservation.lot_id).in_(lot_ids), now)


async def next_boundaries(
    session: AsyncSession, lot_ids: Sequence[int], now: datetime, grace: timedelta
) -> dict[int, datetime]:
    """Per lot, the next moment time alone changes what is free: a confirmed reservation
    starts, ends, or runs out of its check-in grace (and becomes a no-show)."""
    confirmed = col(Reservation.status) == ReservationStatus.confirmed
    starts, ends = col(Reservation.starts_at), col(Reservation.ends_at)
    stmt = (
        select(
            Reservation.lot_id,
            type_coerce(func.min(case((starts > now, starts))), UTCDateTime),
            type_coerce(func.min(case((ends > now, ends))), UTCDateTime),
            type_coerce(func.min(case((starts >= now - grace, starts))), UTCDateTime),
        )
        .where(
            col(Reservation.lot_id).in_(lot_ids),
            confirmed,
            or_(ends > now, starts >= now - grace),
        )
        .group_by(col(Reservation.lot_id))
    )
    boundaries: dict[int, datetime] = {}
    for lot_id, next_start, next_end, grace_start in (await session.execute(stmt)).all():
        moments = [m for m in (next_start, next_end) if m is not None]
        if grace_start is not None:
            # A no-show is due once the grace period is over (the end itself still counts).
            moments.append(grace_start + grace + NO_SHOW_AFTER)
        if moments:
            boundaries[lot_id] = min(moments)
    return boundaries
