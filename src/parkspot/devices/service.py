"""Device rules: keys shown once and stored as digests, who manages a lot's devices, and
how spot sensor events update the spots.

A lot's devices are managed by those who manage the lot (its operator's managers, admins);
to anyone else a device is not found. A key acts only on its own lot, until revoked.
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
    WrongDeviceKind,
)
from parkspot.devices.repository import SensorReading
from parkspot.devices.schemas import (
    DeviceCreate,
    DeviceCreated,
    DevicePage,
    DeviceRead,
    DeviceStatus,
    EventResult,
    RejectCode,
    SpotEvent,
    SpotEventBatch,
    SpotEventResult,
    SpotEventResults,
)
from parkspot.models import Device, DeviceKind, Lot, User
from parkspot.operators.access import Access, access_to_operator

KEY_PREFIX = "pk_dev_"
# How far ahead of the server's clock a device's clock may run before its events are
# refused: one event from the future would make every true report after it stale.
MAX_CLOCK_SKEW = timedelta(minutes=5)


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


# --- device requests -------------------------------------------------------------------


async def authenticate(session: AsyncSession, key: str | None, now: datetime) -> Device:
    """The key's device, its ``last_seen_at`` set to ``now`` (written with the request's
    transaction). Raises DeviceKeyRequired or InvalidDeviceKey (401)."""
    if not key:
        raise DeviceKeyRequired()
    device = await repository.get_active_by_digest(session, key_digest(key))
    if device is None:
        raise InvalidDeviceKey()
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
        minutes = int(MAX_CLOCK_SKEW.total_seconds() // 60)
        message = f"observed_at is more than {minutes} minutes ahead of the server's clock"
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
    was_occupied = {reading.spot_id: reading.occupied is True for reading in readings.values()}
    applied: dict[int, SensorReading] = {}
    results: list[SpotEventResult] = []
    latest = now + MAX_CLOCK_SKEW
    for index, event in enumerate(batch.events):
        reading = readings.get(event.spot)
        result, code, message = _judge(event, reading, latest)
        if result is EventResult.applied:
            assert reading is not None
            reading.occupied, reading.observed_at = event.occupied, event.observed_at
            applied[reading.spot_id] = reading
        results.append(
            SpotEventResult(index=index, spot=event.spot, result=result, code=code, message=message)
        )
    await repository.save_readings(session, list(applied.values()))
    # Reports that leave every spot as occupied as it was leave the counts alone.
    if any(reading.occupied is not was_occupied[spot_id] for spot_id, reading in applied.items()):
        lot_changed(session, device.lot_id)
    tally = Counter(outcome.result for outcome in results)
    return SpotEventResults(
        results=results,
        applied=tally[EventResult.applied],
        duplicates=tally[EventResult.duplicate],
        stale=tally[EventResult.stale],
        rejected=tally[EventResult.rejected],
    )
