"""Annotated dependency aliases shared by every domain."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.auth import repository as auth_repository
from parkspot.db.session import commit
from parkspot.errors import Forbidden, Unauthorized
from parkspot.models import Role, User
from parkspot.state import AppState

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_state(request: Request) -> AppState:
    return cast(AppState, request.app.state.parkspot)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(request: Request, state: StateDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed once, before the response is sent."""
    async with state.database.session(write=request.method not in SAFE_METHODS) as session:
        yield session
        await commit(session)


# scope="function": the commit runs before the response goes out, so a failed commit
# surfaces as an error response instead of a 2xx already sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
TokenDep = Annotated[str | None, Depends(_bearer)]


async def user_of_token(session: AsyncSession, state: AppState, token: str) -> User:
    """The token's user; a bad, expired, revoked or deactivated token is Unauthorized."""
    claims = state.tokens.decode(token)
    if claims is None:
        raise Unauthorized("The access token is invalid or expired", code="invalid_token")
    user = await auth_repository.get_user_for_session(session, claims.user_id, claims.jti)
    if user is None or not user.is_active:
        raise Unauthorized("The access token is invalid or expired", code="invalid_token")
    return user


async def get_optional_user(session: SessionDep, state: StateDep, token: TokenDep) -> User | None:
    """The caller, None when anonymous; a bad, expired, revoked or deactivated token is 401."""
    if token is None:
        return None
    return await user_of_token(session, state, token)


OptionalUser = Annotated[User | None, Depends(get_optional_user)]
# ``openapi_extra`` of the routes that serve anonymous callers too (OptionalUser): FastAPI
# documents every route behind the bearer scheme as requiring it, and appends this list to
# the route's requirements, so the document says "the token, or nothing".
ANONYMOUS_ALLOWED: dict[str, Any] = {"security": [{}]}


async def get_current_user(user: OptionalUser) -> User:
    if user is None:
        raise Unauthorized()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise Forbidden("Administrators only", code="admin_required")
    return user


AdminUser = Annotated[User, Depends(get_admin)]


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def get_page(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(get_page)]
