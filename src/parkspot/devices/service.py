"""Device rules: keys shown once and stored as digests, who manages a lot's devices, how
spot sensor events update the spots, how gate passages check reservations in and out, and
how counters move a lot's counted occupancy.

A lot's devices are managed by those who manage the lot (its operator's managers, admins);
to anyone else a device is not found. A key acts only on its own lot, until revoked. Every
device request marks its lot changed, since the lot's record says when its devices last
reported (``device_data_at``) and whether they have gone silent (``stale``).
"""

import hashlib
import secrets
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.availability.outbox import lot_changed
from parkspot.devices import repository
from parkspot.devices.exceptions import (
    DeviceKeyRequired,
    DeviceNotFound,
    InvalidDeviceKey,
    ObservedInFuture,
    WrongDeviceKind,
)
from parkspot.devices.repository import SensorReading
from parkspot.devices.schemas import (
    CounterEvent,
    CounterEventResult,
    CounterResult,
    DeviceCreate,
    DeviceCreated,
    DevicePage,
    DeviceRead,
    DeviceStatus,
    EventResult,
    GateEvent,
    GateEventResult,
    OccupancyUpdate,
    RejectCode,
    SpotEvent,
    SpotEventBatch,
    SpotEventResult,
    SpotEventResults,
)
from parkspot.models import (
    Device,
    DeviceKind,
    GateDirection,
    GatePassage,
    Lot,
    PassageResult,
    Reservation,
    ReservationStatus,
    User,
)
from parkspot.operators.access import Access, access_to_operator
from parkspot.reservations import repository as reservation_repository
from parkspot.reservations import service as reservation_service
from parkspot.state import AppState

KEY_PREFIX = "pk_dev_"
# How far ahead of the server's clock a device's clock may run before its events are
# refused: one event from the future would make every true report after it stale.
MAX_CLOCK_SKEW = timedelta(minutes=5)
_SKEW_MINUTES = int(MAX_CLOCK_SKEW.total_seconds() // 60)


def key_digest(key: str) -> str:
    # 256 random bits: a plain digest cannot be brute-forced, and being deterministic it
    # is found through the unique index (a salted slow hash could not be).
    return hashlib.sha256(key.encode()).hexdigest()


def to_read(device: Device) -> DeviceRead:
    assert device.id is not None
    return DeviceRead(
        id=device.id,
        lot_id=device.lot_id,
        name=device.name,
        kind=DeviceKind(device.kind),
        status=DeviceStatus.active if device.revoked_at is None else DeviceStatus.revoked,
        created_at=device.created_at,
        last_seen_at=device.last_seen_at,
        revoked_at=device.revoked_at,
    )


# --- managing devices ------------------------------------------------------------------


async def get_managed_device(session: AsyncSession, user: User, device_id: int) -> Device:
    """Raises DeviceNotFound unless the caller manages the device's lot: nobody else may
    learn which devices a lot has."""
    found = await repository.get_with_operator(session, device_id)
    if found is None:
        raise DeviceNotFound()
    device, operator_id = found
    if await access_to_operator(session, user, operator_id) is not Access.manager:
        raise DeviceNotFound()
    return device


async def create_device(
    session: AsyncSession, lot: Lot, data: DeviceCreate, now: datetime
) -> DeviceCreated:
    """The answer is the only place the key appears; only its digest is stored."""
    assert lot.id is not None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    device = Device(
        lot_id=lot.id, name=data.name, kind=data.kind, key_digest=key_digest(key), created_at=now
    )
    session.add(device)
    await session.flush()
    # A lot's first sensor or counter changes where its occupancy comes from.
    lot_changed(session, lot.id)
    return DeviceCreated(**to_read(device).model_dump(), key=key)


async def list_devices(session: AsyncSession, lot: Lot, limit: int, offset: int) -> DevicePage:
    assert lot.id is not None
    devices, total = await repository.list_devices(session, lot.id, limit, offset)
    return DevicePage(items=[to_read(d) for d in devices], total=total, limit=limit, offset=offset)


def revoke_device(session: AsyncSession, device: Device, now: datetime) -> None:
    """The key stops working at once; revoking again keeps the first ``revoked_at``."""
    if device.revoked_at is None:
        device.revoked_at = now
        session.add(device)
        lot_changed(session, device.lot_id)


# --- device requests -------------------------------------------------------------------


async def authenticate(session: AsyncSession, key: str | None, now: datetime) -> Device:
    """The key's device, its ``last_seen_at`` set to ``now`` (written with the request's
    transaction; the lot is marked changed when that moves it forward). Raises
    DeviceKeyRequired or InvalidDeviceKey (401)."""
    if not key:
        raise DeviceKeyRequired()
    device = await repository.get_active_by_digest(session, key_digest(key))
    if device is None:
        raise InvalidDeviceKey()
    if device.last_seen_at is None or now > device.last_seen_at:
        lot_changed(session, device.lot_id)
    device.last_seen_at = now
    session.add(device)
    return device


def require_kind(device: Device, kind: DeviceKind) -> None:
    if device.kind != kind:
        raise WrongDeviceKind(device.kind, kind)


def _judge(
    event: SpotEvent, reading: SensorReading | None, latest: datetime
) -> tuple[EventResult, RejectCode | None, str | None]:
    """What becomes of an event given the spot's last report: (result, code, message)."""
    if reading is None:
        return EventResult.rejected, "unknown_spot", f"This lot has no spot labelled {event.spot}"
    if event.observed_at > latest:
        message = f"observed_at is more than {_SKEW_MINUTES} minutes ahead of the server's clock"
        return EventResult.rejected, "observed_in_future", message
    if reading.observed_at is None or event.observed_at > reading.observed_at:
        return EventResult.applied, None, None
    if event.observed_at == reading.observed_at and event.occupied == reading.occupied:
        return EventResult.duplicate, None, "The spot already has this report"
    return EventResult.stale, None, "The spot already has a report at least as recent"


async def record_spot_events(
    session: AsyncSession, device: Device, batch: SpotEventBatch, now: datetime
) -> SpotEventResults:
    """Applies the events in order to the spots of the device's lot, each kept only when
    it is newer than the spot's last report. Locks the spots named in the batch; marks the
    lot changed when a spot's occupancy changed."""
    labels = sorted({event.spot for event in batch.events})
    readings = await repository.lock_readings(session, device.lot_id, labels)
    # None (no report yet) counts as not occupied, as in the spot's state.
    before = {
        reading.spot_id: (reading.occupied is True, reading.plate) for reading in readings.values()
    }
    applied: dict[int, SensorReading] = {}
    results: list[SpotEventResult] = []
    latest = now + MAX_CLOCK_SKEW
    for index, event in enumerate(batch.events):
        reading = readings.get(event.spot)
        result, code, message = _judge(event, reading, latest)
        if result is EventResult.applied:
            assert reading is not None
            reading.occupied, reading.observed_at = event.occupied, event.observed_at
            # A plate is only read off a car that is there.
            reading.plate = event.plate if event.occupied else None
            applied[reading.spot_id] = reading
        results.append(
            SpotEventResult(index=index, spot=event.spot, result=result, code=code, message=message)
        )
    await repository.save_readings(session, list(applied.values()))
    # Reports that leave every spot as it was leave the counts and alerts alone.
    if any(
        (reading.occupied is True, reading.plate) != before[spot_id]
        for spot_id, reading in applied.items()
    ):
        lot_changed(session, device.lot_id)
    tally = Counter(outcome.result for outcome in results)
    return SpotEventResults(
        results=results,
        applied=tally[EventResult.applied],
        duplicates=tally[EventResult.duplicate],
        stale=tally[EventResult.stale],
        rejected=tally[EventResult.rejected],
    )


def _check_observed(observed_at: datetime, now: datetime) -> None:
    latest = now + MAX_CLOCK_SKEW
    if observed_at > latest:
        raise ObservedInFuture(latest, _SKEW_MINUTES)


# --- gates -----------------------------------------------------------------------------


async def _match(
    session: AsyncSession, state: AppState, lot_id: int, event: GateEvent
) -> Reservation | None:
    """The reservation a passage belongs to, locked: on entry the confirmed one of that
    plate whose check-in window is open at ``observed_at`` (earliest start first), on exit
    the plate's stay checked in last."""
    if event.plate is None:
        return None
    if event.direction is GateDirection.entry:
        booked = await reservation_repository.by_plate_for_update(
            session, lot_id, event.plate, ReservationStatus.confirmed
        )
        return next(
            (
                r
                for r in booked
                if reservation_service.may_check_in(state.settings, r, event.observed_at)
            ),
            None,
        )
    stays = await reservation_repository.by_plate_for_update(
        session, lot_id, event.plate, ReservationStatus.checked_in
    )
    return max(stays, key=lambda r: (r.checked_in_at or r.starts_at, r.id or 0), default=None)


async def record_gate_event(
    session: AsyncSession, state: AppState, device: Device, event: GateEvent
) -> GateEventResult:
    """Checks the matching reservation in or out as of ``observed_at`` (the same
    transitions as the REST check-in and check-out), or counts an unplanned stay in or
    out; keeps the passage either way. Raises ObservedInFuture (422)."""
    _check_observed(event.observed_at, state.clock())
    lot_id = device.lot_id
    assert device.id is not None
    reservation = await _match(session, state, lot_id, event)
    entry = event.direction is GateDirection.entry
    if reservation is None:
        result = PassageResult.unplanned if entry else PassageResult.unmatched_exit
        await repository.move_unplanned(session, lot_id, 1 if entry else -1)
    elif entry:
        result = PassageResult.checked_in
        await reservation_service.enter(session, state.settings, reservation, event.observed_at)
    else:
        result = PassageResult.checked_out
        lot = await session.get(Lot, lot_id)
        assert lot is not None
        assert reservation.checked_in_at is not None
        # A gate's clock may lag the check-in; a stay never ends before it began.
        left_at = max(event.observed_at, reservation.checked_in_at)
        await reservation_service.leave(session, state, lot, reservation, left_at)
    passage = GatePassage(
        lot_id=lot_id,
        device_id=device.id,
        direction=event.direction,
        plate=event.plate,
        observed_at=event.observed_at,
        result=result,
        reservation_id=None if reservation is None else reservation.id,
        created_at=state.clock(),
    )
    session.add(passage)
    await session.flush()
    lot_changed(session, lot_id)
    assert passage.id is not None
    checked_out = result is PassageResult.checked_out
    return GateEventResult(
        result=result,
        passage_id=passage.id,
        reservation_id=passage.reservation_id,
        final_price=reservation.final_price if reservation is not None and checked_out else None,
        currency=reservation.currency if reservation is not None and checked_out else None,
    )


# --- counters --------------------------------------------------------------------------


async def _set_count(
    session: AsyncSession, lot: Lot, occupied: int, at: datetime
) -> CounterEventResult:
    """Stores the lot's count, clamped to [0, the spots in service], and how far past
    that range it went (an alert while not 0); the lot row is locked by the caller."""
    assert lot.id is not None
    lot.counted_occupied = min(max(occupied, 0), await repository.capacity(session, lot.id))
    lot.count_excess = occupied - lot.counted_occupied
    lot.counted_at = at
    session.add(lot)
    await session.flush()
    lot_changed(session, lot.id)
    return CounterEventResult(
        result=CounterResult.applied, counted_occupied=lot.counted_occupied, counted_at=at
    )


async def record_counter_event(
    session: AsyncSession, device: Device, event: CounterEvent, now: datetime
) -> CounterEventResult:
    """Moves the lot's counted occupancy by entries - exits, or sets it (``occupied``);
    a report observed before the lot's last applied count is ignored as stale. Locks the
    lot's row. Raises ObservedInFuture (422)."""
    _check_observed(event.observed_at, now)
    lot = await repository.lock_lot(session, device.lot_id)
    if lot.counted_at is not None and event.observed_at < lot.counted_at:
        return CounterEventResult(
            result=CounterResult.stale,
            counted_occupied=lot.counted_occupied or 0,
            counted_at=lot.counted_at,
        )
    if event.occupied is not None:
        occupied = event.occupied
    else:
        # A lot never counted before starts from empty; an absolute count corrects it.
        occupied = (lot.counted_occupied or 0) + (event.entries or 0) - (event.exits or 0)
    return await _set_count(session, lot, occupied, event.observed_at)


async def correct_occupancy(
    session: AsyncSession, lot: Lot, data: OccupancyUpdate, now: datetime
) -> CounterEventResult:
    """A manager's count of the lot, applied whatever the counters said last (dated no
    earlier than their last report, so their older reports stay stale). Locks the lot's
    row."""
    assert lot.id is not None
    locked = await repository.lock_lot(session, lot.id)
    at = now if locked.counted_at is None else max(now, locked.counted_at)
    return await _set_count(session, locked, data.occupied, at)
