"""The unit of work: one session per request, committed once by the request dependency."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parkspot.db.engine import WRITE_OPTION


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @asynccontextmanager
    async def session(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        """A session; ``write`` takes SQLite's write lock at BEGIN (no-op on PostgreSQL)."""
        async with self._sessions(execution_options={WRITE_OPTION: write}) as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write session committed on success and rolled back on error."""
        async with self.session(write=True) as session:
            yield session
            await session.commit()

    async def dispose(self) -> None:
        await self.engine.dispose()
