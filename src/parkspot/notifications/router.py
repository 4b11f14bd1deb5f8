"""Routes under /api/v1/notifications."""

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket

from parkspot.deps import CurrentUser, PageDep, SessionDep
from parkspot.notifications import service
from parkspot.notifications.schemas import MarkedRead, NotificationPage, NotificationsRead
from parkspot.realtime import websocket

router = APIRouter(prefix="/notifications", tags=["notifications"])


@router.get("")
async def list_notifications(
    user: CurrentUser,
    page: PageDep,
    session: SessionDep,
    unread: Annotated[bool, Query(description="only unread ones")] = False,
) -> NotificationPage:
    """Newest first."""
    return await service.list_own(session, user, unread, page.limit, page.offset)


@router.post("/read")
async def mark_notifications_read(
    data: NotificationsRead, user: CurrentUser, session: SessionDep
) -> MarkedRead:
    """Marks the caller's notifications among ``ids`` read; other ids are ignored."""
    return await service.mark_read(session, user, data.ids)


@router.websocket("/ws")
async def notifications_socket(socket: WebSocket, token: str | None = None) -> None:
    """The caller's new notifications as they are committed: `{"type": "notification",
    "notification": {...}}`. The token goes in `?token=` (browsers cannot set headers);
    without a valid one the socket is closed with 1008."""
    await websocket.serve_notifications(socket, token)
