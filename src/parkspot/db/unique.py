"""Writing a row whose unique constraints a concurrent request may win: services check
first for a clear error, and this turns a lost race into the same answer."""

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel


async def add_unique(session: AsyncSession, row: SQLModel, fields: Sequence[str]) -> str | None:
    """Adds and flushes ``row``. When a unique constraint refuses it, returns which of
    ``fields`` the error names (both dialects name the column or constraint; the last field
    when none matches) and the write is lost; otherwise None."""
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        message = str(exc.orig)
        return next((field for field in fields if field in message), fields[-1])
    return None
