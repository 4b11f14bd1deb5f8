"""SQL for users and login sessions."""

from datetime import datetime

from sqlalchemy import func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.db.types import utcnow
from parkspot.models import AuthSession, User


async def get_user_for_session(session: AsyncSession, user_id: int, jti: str) -> User | None:
    """The user of a live (unrevoked, unexpired) login session, or None."""
    stmt = (
        select(User)
        .join(AuthSession, col(AuthSession.user_id) == col(User.id))
        .where(
            col(User.id) == user_id,
            col(AuthSession.jti) == jti,
            col(AuthSession.revoked_at).is_(None),
            col(AuthSession.expires_at) > utcnow(),
        )
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_user_by_login(session: AsyncSession, login: str) -> User | None:
    stmt = select(User).where(or_(col(User.username) == login, col(User.email) == login.lower()))
    return (await session.execute(stmt)).scalars().first()


async def username_or_email_taken(session: AsyncSession, username: str, email: str) -> str | None:
    """Which of the two is already used ("username", "email") or None."""
    stmt = select(User.username, User.email).where(
        or_(col(User.username) == username, col(User.email) == email)
    )
    for taken_username, taken_email in (await session.execute(stmt)).all():
        if taken_username == username:
            return "username"
        if taken_email == email:
            return "email"
    return None


async def email_taken_by_other(session: AsyncSession, email: str, user_id: int) -> bool:
    stmt = (
        select(func.count())
        .select_from(User)
        .where(col(User.email) == email, col(User.id) != user_id)
    )
    return bool((await session.execute(stmt)).scalar_one())


async def add_session(session: AsyncSession, auth_session: AuthSession) -> None:
    session.add(auth_session)
    await session.flush()


async def revoke_session(session: AsyncSession, jti: str, at: datetime) -> None:
    await session.execute(
        update(AuthSession)
        .where(col(AuthSession.jti) == jti, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=at)
    )
