"""The unit of work: one session per request, committed once by the request dependency.

Work that must wait for the transaction to end (releasing an in-process claim, publishing
a change) is registered with ``after_commit`` / ``after_end`` and runs once the session's
transaction is over: ``after_commit`` callbacks only when it committed.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parkspot.db.engine import WRITE_OPTION

Callback = Callable[[], None]
_AFTER_COMMIT = "parkspot_after_commit"
_AFTER_END = "parkspot_after_end"


def after_commit(session: AsyncSession, callback: Callback) -> None:
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def after_end(session: AsyncSession, callback: Callback) -> None:
    session.info.setdefault(_AFTER_END, []).append(callback)


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @asynccontextmanager
    async def session(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        """A session; ``write`` takes SQLite's write lock at BEGIN (no-op on PostgreSQL)."""
        async with self._sessions(execution_options={WRITE_OPTION: write}) as session:
            try:
                yield session
            finally:
                for callback in session.info.pop(_AFTER_END, []):
                    callback()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write session committed on success and rolled back on error."""
        async with self.session(write=True) as session:
            yield session
            await commit(session)

    async def dispose(self) -> None:
        await self.engine.dispose()


async def commit(session: AsyncSession) -> None:
    """Commits, then runs the ``after_commit`` callbacks."""
    await session.commit()
    for callback in session.info.pop(_AFTER_COMMIT, []):
        callback()
