"""Reservation rules: booking (a given spot, or the best one of a lot), window rules, the
status machine, walk-in tickets, prices and notifications.

No double booking: every write that books re-checks overlap inside its transaction; on
PostgreSQL the exclusion constraints have the last word (a lost race becomes 409), on SQLite
the transaction holds the write lock from its first statement (BEGIN IMMEDIATE).

Status machine: confirmed → checked_in → completed; confirmed → cancelled; confirmed →
no_show (by time). Any other move is 409 ``invalid_status`` naming the current status.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.availability.outbox import lot_changed
from parkspot.config import Settings
from parkspot.errors import Conflict, Forbidden
from parkspot.lots import pricing
from parkspot.lots import service as lot_service
from parkspot.lots.schemas import Quote
from parkspot.metrics.registry import count_after_commit
from parkspot.models import (
    Lot,
    Reservation,
    ReservationKind,
    ReservationStatus,
    Role,
    Spot,
    SpotKind,
    User,
    Vehicle,
)
from parkspot.notifications.service import notify
from parkspot.operators.access import Access, access_to_operator
from parkspot.reservations import repository
from parkspot.reservations.exceptions import (
    InvalidTransition,
    InvalidWindow,
    LotClosed,
    LotFull,
    NotReservationOwner,
    OutsideCheckInWindow,
    ReservationLimit,
    ReservationNotFound,
    SpotOutOfService,
    SpotUnavailable,
    VehicleBusy,
)
from parkspot.reservations.schemas import (
    ReservationCreate,
    ReservationFilters,
    ReservationPage,
    ReservationRead,
    ReservationUpdate,
    Scope,
    TicketCreate,
)
from parkspot.state import AppState
from parkspot.vehicles import service as vehicle_service

# Without a requested kind the server books ordinary car spots, best kind first; accessible
# and motorcycle spots are given only to those who ask for them.
DEFAULT_KINDS = (SpotKind.standard, SpotKind.compact, SpotKind.ev)


def to_read(reservation: Reservation) -> ReservationRead:
    return ReservationRead.model_validate(reservation)


# --- rules -----------------------------------------------------------------------------


def check_window(
    settings: Settings, starts_at: datetime, ends_at: datetime, now: datetime, *, new_start: bool
) -> None:
    """Raises InvalidWindow. ``new_start``: the start is being chosen now, so it may not lie
    in the past (a started reservation may still change its end)."""
    if ends_at <= starts_at:
        raise InvalidWindow("ends_at must be after starts_at")
    duration = ends_at - starts_at
    shortest = timedelta(minutes=settings.booking_min_minutes)
    longest = timedelta(hours=settings.booking_max_hours)
    if duration < shortest:
        raise InvalidWindow(
            f"A reservation lasts at least {settings.booking_min_minutes} minutes",
            min_minutes=settings.booking_min_minutes,
        )
    if duration > longest:
        raise InvalidWindow(
            f"A reservation lasts at most {settings.booking_max_hours} hours",
            max_hours=settings.booking_max_hours,
        )
    if new_start and starts_at < now - timedelta(minutes=settings.booking_start_tolerance_minutes):
        raise InvalidWindow("starts_at is in the past", now=now.isoformat())
    # Only a reschedule of a started reservation can get here with its end already passed.
    if ends_at <= now:
        raise InvalidWindow("ends_at is in the past", now=now.isoformat())
    if starts_at > now + timedelta(days=settings.booking_max_days_ahead):
        raise InvalidWindow(
            f"Reservations open {settings.booking_max_days_ahead} days ahead",
            max_days_ahead=settings.booking_max_days_ahead,
        )


def _require(reservation: Reservation, allowed: ReservationStatus, action: str) -> None:
    if reservation.status != allowed:
        raise InvalidTransition(reservation.status, action)


async def _bookable_spot(session: AsyncSession, user: User, spot_id: int) -> tuple[Spot, Lot]:
    spot, lot = await lot_service.get_visible_spot_and_lot(session, user, spot_id)
    if not lot.is_active:
        raise LotClosed()
    if spot.is_out_of_service:
        raise SpotOutOfService(spot.label)
    return spot, lot


async def _save(
    session: AsyncSession,
    reservation: Reservation,
    spot: Spot,
    changes: dict[str, Any] | None = None,
) -> None:
    """Inserts the reservation or applies ``changes`` to it. Raises SpotUnavailable or
    VehicleBusy when a concurrent booking won the race."""
    # Read before the write: a refused update leaves the reservation expired.
    plate = str(changes["plate"]) if changes else reservation.plate
    label = spot.label
    try:
        await repository.save(session, reservation, changes)
    except repository.Overlap as exc:
        if exc.constraint == repository.VEHICLE_EXCLUSION:
            raise VehicleBusy(plate) from None
        raise SpotUnavailable(label) from None


def _unusable_gaps(
    candidate: repository.Candidate, starts: datetime, ends: datetime, shortest: timedelta
) -> int:
    gaps = []
    if candidate.previous_end is not None:
        gaps.append(starts - candidate.previous_end)
    if candidate.next_start is not None:
        gaps.append(candidate.next_start - ends)
    return sum(1 for gap in gaps if timedelta(0) < gap < shortest)


def _rank(
    candidates: list[repository.Candidate],
    kinds: tuple[str, ...],
    starts_at: datetime,
    ends_at: datetime,
    shortest: timedelta,
) -> list[Spot]:
    """Preferred kind first, then the fewest gaps too short to book, then the tightest fit
    (keeping long free stretches whole), then the label."""
    far = timedelta(days=3650)

    def key(c: repository.Candidate) -> tuple[int, int, timedelta, str]:
        before = starts_at - c.previous_end if c.previous_end else far
        after = c.next_start - ends_at if c.next_start else far
        return (
            kinds.index(c.spot.kind),
            _unusable_gaps(c, starts_at, ends_at, shortest),
            before + after,
            c.spot.label,
        )

    return [c.spot for c in sorted(candidates, key=key)]


# --- booking ---------------------------------------------------------------------------


def _new_reservation(
    user: User,
    vehicle: Vehicle,
    spot: Spot,
    lot: Lot,
    starts_at: datetime,
    ends_at: datetime,
    price: Decimal,
    now: datetime,
) -> Reservation:
    """A confirmed booking, not yet saved, with the plate and label the history keeps."""
    assert user.id is not None
    assert spot.id is not None
    assert lot.id is not None
    return Reservation(
        user_id=user.id,
        vehicle_id=vehicle.id,
        plate=vehicle.plate,
        spot_id=spot.id,
        spot_label=spot.label,
        lot_id=lot.id,
        starts_at=starts_at,
        ends_at=ends_at,
        price_quote=price,
        currency=lot.currency,
        created_at=now,
        updated_at=now,
    )


async def book(
    session: AsyncSession, state: AppState, user: User, data: ReservationCreate
) -> ReservationRead:
    """Books a spot; a refusal with 409 is counted in the metrics by its code."""
    try:
        return await _book(session, state, user, data)
    except Conflict as exc:
        state.metrics.booking_conflicts.labels(exc.code).inc()
        raise


async def _book(
    session: AsyncSession, state: AppState, user: User, data: ReservationCreate
) -> ReservationRead:
    settings, now = state.settings, state.clock()
    assert user.id is not None
    check_window(settings, data.starts_at, data.ends_at, now, new_start=True)
    vehicle = await vehicle_service.get_owned(session, user, data.vehicle_id)
    if data.spot_id is not None:
        spot, lot = await _bookable_spot(session, user, data.spot_id)
        spots = [spot]
    else:
        assert data.lot_id is not None
        lot = await lot_service.get_visible_lot(session, user, data.lot_id)
        if not lot.is_active:
            raise LotClosed()
        spots = []
    limit = settings.booking_max_active_per_user
    # Concurrent bookings of one user would each count the others' as not there yet.
    await repository.lock_holder(session, user.id)
    clashes = await repository.clashes(
        session,
        data.starts_at,
        data.ends_at,
        now=now,
        user_id=user.id,
        vehicle_id=vehicle.id,
        spot_id=data.spot_id,
    )
    if clashes.upcoming >= limit:
        raise ReservationLimit(limit)
    if clashes.vehicle_busy:
        raise VehicleBusy(vehicle.plate)
    if clashes.spot_taken:
        raise SpotUnavailable(spots[0].label)
    if data.spot_id is None:
        assert lot.id is not None
        kinds = (data.kind,) if data.kind is not None else DEFAULT_KINDS
        candidates = await repository.free_spots(
            session, lot.id, data.starts_at, data.ends_at, kinds
        )
        shortest = timedelta(minutes=settings.booking_min_minutes)
        spots = _rank(candidates, kinds, data.starts_at, data.ends_at, shortest)
        if not spots:
            raise LotFull()
    quote = pricing.price(lot, state.billing, data.starts_at, data.ends_at)
    for spot in spots:
        reservation = _new_reservation(
            user, vehicle, spot, lot, data.starts_at, data.ends_at, quote.amount, now
        )
        try:
            await _save(session, reservation, spot)
            break
        except SpotUnavailable:
            # A concurrent booking took this spot after the candidates were read.
            if data.spot_id is not None:
                raise
    else:
        raise LotFull()
    lot_changed(session, lot.id)
    count_after_commit(session, "booked")
    notify(
        session,
        user.id,
        "reservation_confirmed",
        f"Spot {reservation.spot_label} at {lot.name} is booked from "
        f"{reservation.starts_at:%Y-%m-%d %H:%M} to {reservation.ends_at:%Y-%m-%d %H:%M} UTC",
        reservation_id=reservation.id,
        lot_id=lot.id,
    )
    return to_read(reservation)


async def start_ticket(
    session: AsyncSession, state: AppState, user: User, data: TicketCreate
) -> ReservationRead:
    """A walk-in stay on a spot free now, checked in at once; it must end before the spot's
    next reservation (``ends_at``), and at most ``ticket_max_hours`` from now."""
    settings, now = state.settings, state.clock()
    assert user.id is not None
    vehicle = await vehicle_service.get_owned(session, user, data.vehicle_id)
    spot, lot = await _bookable_spot(session, user, data.spot_id)
    assert spot.id is not None
    assert lot.id is not None
    shortest = timedelta(minutes=settings.booking_min_minutes)
    # Reserved now, or held by a stay checked in and not yet out (even past its booked end).
    if await repository.current_status_by_spot(session, [spot.id], now):
        raise SpotUnavailable(spot.label)
    ends_at = now + timedelta(hours=settings.ticket_max_hours)
    next_start = await repository.next_start_after(session, spot.id, now)
    if next_start is not None:
        ends_at = min(ends_at, next_start)
    if ends_at - now < shortest:
        raise SpotUnavailable(spot.label)
    if (
        await repository.clashes(session, now, ends_at, now=now, vehicle_id=vehicle.id)
    ).vehicle_busy:
        raise VehicleBusy(vehicle.plate)
    price = pricing.price(lot, state.billing, now, ends_at).amount
    reservation = _new_reservation(user, vehicle, spot, lot, now, ends_at, price, now)
    reservation.kind = ReservationKind.ticket
    reservation.status = ReservationStatus.checked_in
    reservation.checked_in_at = now
    await _save(session, reservation, spot)
    lot_changed(session, lot.id)
    count_after_commit(session, "ticket_started")
    return to_read(reservation)


# --- reading ---------------------------------------------------------------------------


async def _load(
    session: AsyncSession, user: User, reservation_id: int, *, for_update: bool = False
) -> tuple[Reservation, Lot, bool]:
    """The reservation, its lot, and whether the caller owns it (else they manage the lot).
    Anyone else: ReservationNotFound."""
    reservation = await (
        repository.get_for_update(session, reservation_id)
        if for_update
        else repository.get(session, reservation_id)
    )
    if reservation is None:
        raise ReservationNotFound()
    lot = await session.get(Lot, reservation.lot_id)
    assert lot is not None
    if reservation.user_id == user.id:
        return reservation, lot, True
    if await access_to_operator(session, user, lot.operator_id) is Access.manager:
        return reservation, lot, False
    raise ReservationNotFound()


async def get(session: AsyncSession, user: User, reservation_id: int) -> ReservationRead:
    reservation, _, _ = await _load(session, user, reservation_id)
    return to_read(reservation)


async def search(
    session: AsyncSession, user: User, filters: ReservationFilters, limit: int, offset: int
) -> ReservationPage:
    managed = filters.scope is Scope.managed
    if managed and user.role not in (Role.manager, Role.admin):
        raise Forbidden("scope=managed is for managers and admins", code="managers_only")
    rows, total = await repository.search(
        session, user, filters, managed, user.role == Role.admin, limit, offset
    )
    return ReservationPage(
        items=[to_read(r) for r in rows], total=total, limit=limit, offset=offset
    )


# --- changes ---------------------------------------------------------------------------


def _touch(reservation: Reservation, now: datetime) -> None:
    reservation.updated_at = now


async def update(
    session: AsyncSession, state: AppState, user: User, reservation_id: int, data: ReservationUpdate
) -> ReservationRead:
    """Reschedule or change vehicle/spot under the booking rules; only the owner, only while
    confirmed."""
    settings, now = state.settings, state.clock()
    reservation, lot, owner = await _load(session, user, reservation_id, for_update=True)
    if not owner:
        raise NotReservationOwner()
    _require(reservation, ReservationStatus.confirmed, "changed")
    starts_at = data.starts_at or reservation.starts_at
    ends_at = data.ends_at or reservation.ends_at
    check_window(settings, starts_at, ends_at, now, new_start=starts_at != reservation.starts_at)
    vehicle = await vehicle_service.get_owned(
        session, user, data.vehicle_id or reservation.vehicle_id or 0
    )
    spot_id = data.spot_id or reservation.spot_id or 0
    spot, lot = await _bookable_spot(session, user, spot_id)
    assert spot.id is not None
    assert lot.id is not None
    clashes = await repository.clashes(
        session,
        starts_at,
        ends_at,
        now=now,
        vehicle_id=vehicle.id,
        spot_id=spot.id,
        exclude_id=reservation.id,
    )
    if clashes.vehicle_busy:
        raise VehicleBusy(vehicle.plate)
    if clashes.spot_taken:
        raise SpotUnavailable(spot.label)
    changes: dict[str, Any] = {
        "starts_at": starts_at,
        "ends_at": ends_at,
        "vehicle_id": vehicle.id,
        "plate": vehicle.plate,
        "spot_id": spot.id,
        "spot_label": spot.label,
        "lot_id": lot.id,
        "price_quote": pricing.price(lot, state.billing, starts_at, ends_at).amount,
        "currency": lot.currency,
        "updated_at": now,
    }
    previous_lot_id = reservation.lot_id
    await _save(session, reservation, spot, changes)
    lot_changed(session, previous_lot_id, lot.id)
    notify(
        session,
        reservation.user_id,
        "reservation_rescheduled",
        f"Your reservation at {lot.name} is now spot {spot.label} from "
        f"{starts_at:%Y-%m-%d %H:%M} to {ends_at:%Y-%m-%d %H:%M} UTC",
        reservation_id=reservation.id,
    )
    return to_read(reservation)


async def cancel(
    session: AsyncSession, state: AppState, user: User, reservation_id: int
) -> ReservationRead:
    now = state.clock()
    reservation, lot, owner = await _load(session, user, reservation_id, for_update=True)
    _require(reservation, ReservationStatus.confirmed, "cancelled")
    reservation.status = ReservationStatus.cancelled
    reservation.cancelled_at = now
    _touch(reservation, now)
    session.add(reservation)
    await session.flush()
    lot_changed(session, reservation.lot_id)
    count_after_commit(session, "cancelled")
    by = "" if owner else " by the lot's operator"
    notify(
        session,
        reservation.user_id,
        "reservation_cancelled",
        f"Your reservation of spot {reservation.spot_label} at {lot.name} was cancelled{by}",
        reservation_id=reservation.id,
    )
    return to_read(reservation)


def check_in_window(settings: Settings, reservation: Reservation) -> tuple[datetime, datetime]:
    """From ``checkin_early_minutes`` before the start to the end of the no-show grace."""
    opens_at = reservation.starts_at - timedelta(minutes=settings.checkin_early_minutes)
    closes_at = reservation.starts_at + timedelta(minutes=settings.no_show_grace_minutes)
    return opens_at, closes_at


def may_check_in(settings: Settings, reservation: Reservation, at: datetime) -> bool:
    opens_at, closes_at = check_in_window(settings, reservation)
    return reservation.status == ReservationStatus.confirmed and opens_at <= at <= closes_at


async def enter(
    session: AsyncSession, settings: Settings, reservation: Reservation, at: datetime
) -> None:
    """Checks in a reservation loaded for update, as of ``at`` (by a driver, a manager or a
    gate); marks its lot changed. Raises InvalidTransition or OutsideCheckInWindow."""
    _require(reservation, ReservationStatus.confirmed, "checked in")
    opens_at, closes_at = check_in_window(settings, reservation)
    if not opens_at <= at <= closes_at:
        raise OutsideCheckInWindow(opens_at, closes_at)
    reservation.status = ReservationStatus.checked_in
    reservation.checked_in_at = at
    _touch(reservation, at)
    session.add(reservation)
    await session.flush()
    lot_changed(session, reservation.lot_id)
    count_after_commit(session, "checked_in")


async def check_in(
    session: AsyncSession, state: AppState, user: User, reservation_id: int
) -> ReservationRead:
    reservation, _, _ = await _load(session, user, reservation_id, for_update=True)
    await enter(session, state.settings, reservation, state.clock())
    return to_read(reservation)


def final_price(state: AppState, lot: Lot, reservation: Reservation, left_at: datetime) -> Quote:
    """A booking pays its whole window plus any overstay; a walk-in pays the time it stayed
    (plus any time past the spot's next reservation)."""
    ends_at = reservation.ends_at
    if reservation.kind == ReservationKind.ticket:
        ends_at = max(min(left_at, ends_at), reservation.starts_at + timedelta(seconds=1))
    return pricing.price(lot, state.billing, reservation.starts_at, ends_at, left_at=left_at)


async def leave(
    session: AsyncSession, state: AppState, lot: Lot, reservation: Reservation, at: datetime
) -> None:
    """Checks out a stay loaded for update, as of ``at`` (by a driver, a manager or a
    gate): sets ``final_price``, marks the lot changed and tells the driver. Raises
    InvalidTransition."""
    _require(reservation, ReservationStatus.checked_in, "checked out")
    reservation.status = ReservationStatus.completed
    reservation.checked_out_at = at
    reservation.final_price = final_price(state, lot, reservation, at).amount
    _touch(reservation, at)
    session.add(reservation)
    await session.flush()
    lot_changed(session, reservation.lot_id)
    count_after_commit(session, "checked_out")
    notify(
        session,
        reservation.user_id,
        "checked_out",
        f"You left {lot.name}; the price is {reservation.final_price} {reservation.currency}",
        reservation_id=reservation.id,
        final_price=str(reservation.final_price),
        currency=reservation.currency,
    )


async def check_out(
    session: AsyncSession, state: AppState, user: User, reservation_id: int
) -> ReservationRead:
    reservation, lot, _ = await _load(session, user, reservation_id, for_update=True)
    await leave(session, state, lot, reservation, state.clock())
    return to_read(reservation)


async def expire_no_shows(session: AsyncSession, state: AppState) -> list[Reservation]:
    """Confirmed reservations not checked in by the end of the grace period become no-shows
    (which frees their spots); each driver is told."""
    now = state.clock()
    grace = timedelta(minutes=state.settings.no_show_grace_minutes)
    expired = await repository.expire_no_shows(session, now - grace)
    lot_changed(session, *(r.lot_id for r in expired))
    for reservation in expired:
        count_after_commit(session, "no_show")
        notify(
            session,
            reservation.user_id,
            "no_show",
            f"You did not check in to spot {reservation.spot_label} within "
            f"{state.settings.no_show_grace_minutes} minutes of the start; the spot was released",
            reservation_id=reservation.id,
        )
    return expired
