"""Routes under /api/v1/auth and /api/v1/users/me."""

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from parkspot.auth import service
from parkspot.auth.schemas import LoginRequest, TokenRead, UserCreate, UserRead, UserUpdate
from parkspot.deps import CurrentUser, SessionDep, StateDep, TokenDep
from parkspot.errors import Unauthorized

router = APIRouter(tags=["accounts"])


@router.post("/auth/register", status_code=status.HTTP_201_CREATED)
async def register_user(data: UserCreate, session: SessionDep, state: StateDep) -> UserRead:
    return await service.register(session, state, data)


@router.post("/auth/login")
async def login(data: LoginRequest, session: SessionDep, state: StateDep) -> TokenRead:
    return await service.login(session, state, data.username, data.password)


@router.post("/auth/token")
async def login_form(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep, state: StateDep
) -> TokenRead:
    """The same login as an OAuth2 password form, for the interactive docs."""
    return await service.login(session, state, form.username, form.password)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(user: CurrentUser, token: TokenDep, session: SessionDep, state: StateDep) -> None:
    if token is None:
        raise Unauthorized()
    await service.logout(session, state, token)


@router.get("/users/me")
async def read_me(user: CurrentUser, session: SessionDep) -> UserRead:
    return await service.to_read(session, user)


@router.patch("/users/me")
async def update_me(
    data: UserUpdate, user: CurrentUser, session: SessionDep, state: StateDep
) -> UserRead:
    return await service.update_profile(session, state, user, data)
