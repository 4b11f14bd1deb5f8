"""SQL for stored idempotent responses."""

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from parkspot.models import IdempotencyKey


async def get(session: AsyncSession, user_id: int, key: str) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, (user_id, key))


async def insert(session: AsyncSession, row: IdempotencyKey) -> bool:
    """False when another transaction stored the same key first."""
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


async def forget(session: AsyncSession, row: IdempotencyKey) -> None:
    await session.delete(row)
    await session.flush()


async def delete_older_than(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(col(IdempotencyKey.created_at) < cutoff)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
