"""SQL for notifications, always filtered by their user."""

from collections.abc import Sequence

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.db.pagination import count_and_page
from parkspot.models import Notification


async def list_for(
    session: AsyncSession, user_id: int, unread_only: bool, limit: int, offset: int
) -> tuple[Sequence[Notification], int]:
    stmt = select(Notification).where(col(Notification.user_id) == user_id)
    if unread_only:
        stmt = stmt.where(col(Notification.is_read).is_(False))
    return await count_and_page(session, stmt, col(Notification.id).desc(), limit, offset)


async def mark_read(session: AsyncSession, user_id: int, ids: Sequence[int]) -> int:
    """Marks the user's notifications among ``ids`` read; others' ids are ignored."""
    result = await session.execute(
        update(Notification)
        .where(col(Notification.user_id) == user_id, col(Notification.id).in_(ids))
        .values(is_read=True)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
