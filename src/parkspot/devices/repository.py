"""SQL for devices and for the sensor columns of spots. A device of a deleted lot is never
returned."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.db.pagination import count_and_page
from parkspot.models import Device, Lot, Spot


@dataclass
class SensorReading:
    """A spot's last sensor report."""

    spot_id: int
    occupied: bool | None
    observed_at: datetime | None


async def get_with_operator(session: AsyncSession, device_id: int) -> tuple[Device, int] | None:
    """The device and the operator id of its lot."""
    stmt = (
        select(Device, Lot.operator_id)
        .join(Lot, col(Lot.id) == col(Device.lot_id))
        .where(col(Device.id) == device_id, col(Lot.deleted_at).is_(None))
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


async def get_active_by_digest(session: AsyncSession, key_digest: str) -> Device | None:
    stmt = (
        select(Device)
        .join(Lot, col(Lot.id) == col(Device.lot_id))
        .where(
            col(Device.key_digest) == key_digest,
            col(Device.revoked_at).is_(None),
            col(Lot.deleted_at).is_(None),
        )
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_devices(
    session: AsyncSession, lot_id: int, limit: int, offset: int
) -> tuple[Sequence[Device], int]:
    stmt = select(Device).where(col(Device.lot_id) == lot_id)
    return await count_and_page(session, stmt, col(Device.id), limit, offset)


async def lock_readings(
    session: AsyncSession, lot_id: int, labels: Sequence[str]
) -> dict[str, SensorReading]:
    """The sensor readings of the lot's spots labelled ``labels`` (at most a batch's
    worth), by label. The rows stay locked until the transaction ends, taken in id order
    so that two batches never deadlock; SQLite's write lock serialises batches already."""
    stmt = (
        select(
            col(Spot.id), col(Spot.label), col(Spot.sensor_occupied), col(Spot.sensor_observed_at)
        )
        .where(col(Spot.lot_id) == lot_id, col(Spot.label).in_(labels))
        .order_by(col(Spot.id))
        .with_for_update()
    )
    readings = {}
    for spot_id, label, occupied, observed_at in (await session.execute(stmt)).all():
        assert spot_id is not None
        readings[label] = SensorReading(spot_id, occupied, observed_at)
    return readings


async def save_readings(session: AsyncSession, readings: Sequence[SensorReading]) -> None:
    if readings:
        await session.execute(
            update(Spot),
            [
                {
                    "id": r.spot_id,
                    "sensor_occupied": r.occupied,
                    "sensor_observed_at": r.observed_at,
                }
                for r in readings
            ],
        )
