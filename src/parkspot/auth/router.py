"""Routes under /api/v1/auth and /api/v1/users/me."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from parkspot.auth import service
from parkspot.auth.schemas import LoginRequest, TokenRead, UserCreate, UserRead, UserUpdate
from parkspot.deps import CurrentUser, SessionDep, StateDep, TokenDep
from parkspot.errors import RETRY_AFTER, ErrorResponse, Unauthorized

router = APIRouter(tags=["accounts"])


RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorResponse, "description": "Too many attempts", "headers": RETRY_AFTER}
}


def client_address(request: Request) -> str:
    """The peer's address (a trusted proxy's X-Forwarded-For has already replaced it)."""
    return request.client.host if request.client else "unknown"


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, responses=RATE_LIMITED)
async def register_user(
    data: UserCreate, request: Request, session: SessionDep, state: StateDep
) -> UserRead:
    return await service.register(session, state, data, address=client_address(request))


@router.post("/auth/login", responses=RATE_LIMITED)
async def login(
    data: LoginRequest, request: Request, session: SessionDep, state: StateDep
) -> TokenRead:
    return await service.login(
        session, state, data.username, data.password, address=client_address(request)
    )


@router.post("/auth/token", responses=RATE_LIMITED)
async def login_form(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
    state: StateDep,
) -> TokenRead:
    """The same login as an OAuth2 password form, for the interactive docs."""
    return await service.login(
        session, state, form.username, form.password, address=client_address(request)
    )


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
