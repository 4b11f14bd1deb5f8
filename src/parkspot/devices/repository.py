"""SQL for devices, for the sensor columns of spots and for the counted occupancy of lots. A
device of a deleted lot is never returned."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, update
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
    plate: str | None


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
        .add_columns(col(Spot.sensor_plate))
        .where(col(Spot.lot_id) == lot_id, col(Spot.label).in_(labels))
        .order_by(col(Spot.id))
        .with_for_update()
    )
    readings = {}
    for spot_id, label, occupied, observed_at, plate in (await session.execute(stmt)).all():
        assert spot_id is not None
        readings[label] = SensorReading(spot_id, occupied, observed_at, plate)
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
                    "sensor_plate": r.plate,
                }
                for r in readings
            ],
        )


async def lock_lot(session: AsyncSession, lot_id: int) -> Lot:
    """The lot, its row locked until the transaction ends so that concurrent counts never
    lose an update. FOR NO KEY UPDATE on PostgreSQL: bookings (whose foreign keys take a
    key-share lock on the lot) are not held up; SQLite's write lock serialises already."""
    stmt = (
        select(Lot)
        .where(col(Lot.id) == lot_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


async def capacity(session: AsyncSession, lot_id: int) -> int:
    """The lot's spots in service."""
    stmt = select(func.count()).where(
        col(Spot.lot_id) == lot_id, col(Spot.is_out_of_service).is_(False)
    )
    return int((await session.execute(stmt)).scalar_one())


async def move_unplanned(session: AsyncSession, lot_id: int, step: int) -> None:
    """Adds ``step`` (1 or -1) to the lot's unplanned stays inside, never below 0, in one
    statement so that concurrent gates never lose a passage."""
    inside = col(Lot.unplanned_inside)
    await session.execute(
        update(Lot)
        .where(col(Lot.id) == lot_id)
        .values(unplanned_inside=case((inside + step < 0, 0), else_=inside + step))
    )
