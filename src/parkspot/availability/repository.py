"""SQL of the availability engine: the lots' record rows, the outbox, and what is in them."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.db.types import UTCDateTime
from parkspot.models import AvailabilityChange, Device, Lot, LotAvailability, Spot


async def lock_rows(
    session: AsyncSession, lot_ids: Sequence[int], *, due_at: datetime | None = None
) -> list[LotAvailability]:
    """Locks the record rows of the lots (made on first use), in lot order so that two
    engines never deadlock. With ``due_at``: only rows whose boundary has come, skipping
    rows another process holds (it is recomputing them already)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    await session.execute(
        dialect.insert(LotAvailability)
        .from_select(
            ["lot_id", "version"],
            select(col(Lot.id), 0).where(col(Lot.id).in_(lot_ids)),
        )
        .on_conflict_do_nothing(index_elements=["lot_id"])
    )
    stmt = (
        select(LotAvailability)
        .where(col(LotAvailability.lot_id).in_(lot_ids))
        .order_by(col(LotAvailability.lot_id))
    )
    if due_at is None:
        stmt = stmt.with_for_update()
    else:
        stmt = stmt.where(col(LotAvailability.next_boundary_at) <= due_at).with_for_update(
            skip_locked=True
        )
    return list((await session.execute(stmt)).scalars())


async def clear_changes(session: AsyncSession, lot_ids: Sequence[int]) -> None:
    """Deletes the lots' committed outbox rows; the counts read after this cover them."""
    await session.execute(
        delete(AvailabilityChange).where(col(AvailabilityChange.lot_id).in_(lot_ids))
    )


async def lots(session: AsyncSession, lot_ids: Sequence[int]) -> list[Lot]:
    return list((await session.execute(select(Lot).where(col(Lot.id).in_(lot_ids)))).scalars())


async def spots(
    session: AsyncSession, lot_ids: Sequence[int]
) -> list[tuple[int, int, str, bool, bool | None]]:
    """(spot id, lot id, kind, out of service, sensor occupied) of every spot of the lots."""
    # add_columns: sqlmodel's select() is typed for at most four columns.
    stmt = (
        select(col(Spot.id), col(Spot.lot_id), col(Spot.kind), col(Spot.is_out_of_service))
        .add_columns(col(Spot.sensor_occupied))
        .where(col(Spot.lot_id).in_(lot_ids))
    )
    return [tuple(row) for row in (await session.execute(stmt)).all()]


async def device_activity(
    session: AsyncSession, lot_ids: Sequence[int]
) -> list[tuple[int, str, datetime | None, datetime]]:
    """Per lot and kind of active device: (lot id, kind, the newest report, the newest
    report or creation of a device that never reported)."""
    seen = col(Device.last_seen_at)
    stmt = (
        select(
            col(Device.lot_id),
            col(Device.kind),
            type_coerce(func.max(seen), UTCDateTime),
            type_coerce(func.max(func.coalesce(seen, col(Device.created_at))), UTCDateTime),
        )
        .where(col(Device.lot_id).in_(lot_ids), col(Device.revoked_at).is_(None))
        .group_by(col(Device.lot_id), col(Device.kind))
    )
    return [
        (lot_id, kind, reported_at, heard_at)
        for lot_id, kind, reported_at, heard_at in (await session.execute(stmt)).all()
    ]


async def save_rows(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Writes ``version``, ``record`` and ``next_boundary_at`` of locked rows."""
    if rows:
        await session.execute(update(LotAvailability), list(rows))


async def all_lot_ids(session: AsyncSession) -> list[int]:
    stmt = select(col(Lot.id)).order_by(col(Lot.id))
    return [lot_id for lot_id in (await session.execute(stmt)).scalars() if lot_id is not None]


async def due_lot_ids(session: AsyncSession, now: datetime) -> list[int]:
    stmt = select(col(LotAvailability.lot_id)).where(col(LotAvailability.next_boundary_at) <= now)
    return list((await session.execute(stmt)).scalars())


async def pending_lot_ids(session: AsyncSession, before: datetime) -> list[int]:
    """Lots with outbox rows written before ``before``: left by a process that died."""
    stmt = (
        select(col(AvailabilityChange.lot_id))
        .where(col(AvailabilityChange.created_at) < before)
        .distinct()
    )
    return list((await session.execute(stmt)).scalars())


async def outbox_backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """The number of outbox rows and when the oldest was written (None: empty)."""
    stmt = select(func.count(), func.min(col(AvailabilityChange.created_at)))
    rows, oldest = (await session.execute(stmt)).one()
    return int(rows), oldest
