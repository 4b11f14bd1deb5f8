"""SQL for vehicles, always filtered by owner."""

from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.db.pagination import count_and_page
from parkspot.models import Vehicle


async def get_owned(session: AsyncSession, owner_id: int, vehicle_id: int) -> Vehicle | None:
    stmt = select(Vehicle).where(col(Vehicle.id) == vehicle_id, col(Vehicle.owner_id) == owner_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def plate_taken(
    session: AsyncSession, owner_id: int, plate: str, exclude_id: int | None = None
) -> bool:
    stmt = (
        select(func.count())
        .select_from(Vehicle)
        .where(
            col(Vehicle.owner_id) == owner_id,
            col(Vehicle.plate) == plate,
            col(Vehicle.id) != exclude_id,
        )
    )
    return bool((await session.execute(stmt)).scalar_one())


async def list_owned(
    session: AsyncSession, owner_id: int, limit: int, offset: int
) -> tuple[Sequence[Vehicle], int]:
    stmt = select(Vehicle).where(col(Vehicle.owner_id) == owner_id)
    return await count_and_page(session, stmt, col(Vehicle.id), limit, offset)
