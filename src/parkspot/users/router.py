"""Routes under /api/v1/users (admin)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from parkspot.auth.schemas import UserRead
from parkspot.deps import AdminUser, PageDep, SessionDep
from parkspot.users import service
from parkspot.users.schemas import UserAdminUpdate, UserPage
from parkspot.validation import MAX_ID, SINGLE_LINE

router = APIRouter(prefix="/users", tags=["users"])


@router.get("")
async def list_users(
    _: AdminUser,
    page: PageDep,
    session: SessionDep,
    q: Annotated[
        str | None,
        Query(max_length=100, pattern=SINGLE_LINE, description="matches username or e-mail"),
    ] = None,
) -> UserPage:
    return await service.search(session, q, page.limit, page.offset)


@router.patch("/{user_id}")
async def update_user(
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    data: UserAdminUpdate,
    admin: AdminUser,
    session: SessionDep,
) -> UserRead:
    return await service.update(session, admin, user_id, data)
