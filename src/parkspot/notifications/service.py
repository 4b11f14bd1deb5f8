"""Creating notifications (inside the caller's transaction) and reading them."""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.db.session import Database, staged
from parkspot.models import Notification, User
from parkspot.notifications import repository
from parkspot.notifications.schemas import MarkedRead, NotificationPage, NotificationRead


def _publish(database: Database, notifications: list[Notification]) -> None:
    database.on_notifications(notifications)


def notify(
    session: AsyncSession, user_id: int, kind: str, content: str, **data: Any
) -> Notification:
    """Stages a notification in the current transaction: it exists, and is pushed to the
    user's live sockets, only if that commits."""
    notification = Notification(user_id=user_id, kind=kind, content=content[:500], data=data)
    session.add(notification)
    staged(session, "parkspot_notifications", _publish).append(notification)
    return notification


async def list_own(
    session: AsyncSession, user: User, unread_only: bool, limit: int, offset: int
) -> NotificationPage:
    assert user.id is not None
    rows, total = await repository.list_for(session, user.id, unread_only, limit, offset)
    return NotificationPage(
        items=[NotificationRead.model_validate(n) for n in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


async def mark_read(session: AsyncSession, user: User, ids: list[int]) -> MarkedRead:
    assert user.id is not None
    return MarkedRead(updated=await repository.mark_read(session, user.id, ids))
