"""Admin rules over users."""

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.auth.schemas import UserRead
from parkspot.auth.service import to_read, to_reads
from parkspot.db.types import utcnow
from parkspot.errors import Conflict, NotFound
from parkspot.models import User
from parkspot.users import repository
from parkspot.users.schemas import UserAdminUpdate, UserPage


async def search(session: AsyncSession, q: str | None, limit: int, offset: int) -> UserPage:
    users, total = await repository.search(session, q, limit, offset)
    items = await to_reads(session, users)
    return UserPage(items=items, total=total, limit=limit, offset=offset)


async def update(
    session: AsyncSession, admin: User, user_id: int, data: UserAdminUpdate
) -> UserRead:
    """Deactivation takes effect at once: every request re-reads ``is_active``.
    Raises Conflict when admins try to demote or deactivate themselves."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("User not found", code="user_not_found")
    if user.id == admin.id and (
        (data.role is not None and data.role != user.role) or data.is_active is False
    ):
        raise Conflict("Admins cannot demote or deactivate themselves", code="cannot_change_self")
    if data.role is not None:
        user.role = data.role
    if data.is_active is not None:
        user.is_active = data.is_active
    user.updated_at = utcnow()
    session.add(user)
    await session.flush()
    return await to_read(session, user)
