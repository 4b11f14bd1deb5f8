"""SQL for searching users."""

from collections.abc import Sequence

from sqlalchemy import func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.db.pagination import count_and_page
from parkspot.db.search import contains_pattern
from parkspot.models import User


async def search(
    session: AsyncSession, q: str | None, limit: int, offset: int
) -> tuple[Sequence[User], int]:
    stmt = select(User)
    if q:
        pattern = contains_pattern(q)
        stmt = stmt.where(
            or_(
                func.lower(col(User.username)).like(pattern, escape="\\"),
                col(User.email).like(pattern, escape="\\"),
            )
        )
    return await count_and_page(session, stmt, col(User.id), limit, offset)
