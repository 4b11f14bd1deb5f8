"""The unit of work: one session per request, committed once by the request dependency.

Work that must wait for the transaction to end (releasing an in-process claim, publishing
a change) is registered with ``after_commit`` / ``after_end`` and runs once the session's
transaction is over: ``after_commit`` callbacks only when it committed.

Domains that publish after commit collect what to publish with ``staged`` and hand it to
a listener on the ``Database``: the availability engine listens for changed lots, the live
notification hub for new notifications, the metrics for reservation events.
"""

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parkspot.db.engine import WRITE_OPTION

Callback = Callable[[], None]
_AFTER_COMMIT = "parkspot_after_commit"
_AFTER_END = "parkspot_after_end"
_DATABASE = "parkspot_database"

T = TypeVar("T")


def after_commit(session: AsyncSession, callback: Callback) -> None:
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def after_end(session: AsyncSession, callback: Callback) -> None:
    session.info.setdefault(_AFTER_END, []).append(callback)


def _ignore(_: Any) -> None:
    pass


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        # Set by the lifespan; called after a commit that changed lots / made notifications.
        self.on_lots_changed: Callable[[Collection[int]], None] = _ignore
        self.on_notifications: Callable[[Sequence[Any]], None] = _ignore
        # Reservation events (booked, cancelled, ...) committed, for the metrics.
        self.on_reservation_events: Callable[[Sequence[str]], None] = _ignore

    @asynccontextmanager
    async def session(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        """A session; ``write`` takes SQLite's write lock at BEGIN (no-op on PostgreSQL)."""
        async with self._sessions(execution_options={WRITE_OPTION: write}) as session:
            session.info[_DATABASE] = self
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


def staged(
    session: AsyncSession, key: str, publish: Callable[["Database", list[T]], None]
) -> list[T]:
    """The transaction's list under ``key``, handed to ``publish`` once it commits."""
    items: list[T] | None = session.info.get(key)
    if items is None:
        items = session.info[key] = []
        database = cast(Database, session.info[_DATABASE])
        after_commit(session, lambda: publish(database, session.info.pop(key, [])))
    return items


async def commit(session: AsyncSession) -> None:
    """Commits, then runs the ``after_commit`` callbacks."""
    await session.commit()
    for callback in session.info.pop(_AFTER_COMMIT, []):
        callback()
