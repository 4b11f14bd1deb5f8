"""Routes under /api/v1/operators."""

from typing import Annotated

from fastapi import APIRouter, Path, status

from parkspot.deps import AdminUser, CurrentUser, PageDep, SessionDep
from parkspot.operators import service
from parkspot.operators.schemas import (
    ManagerAdd,
    MembershipRead,
    OperatorCreate,
    OperatorPage,
    OperatorRead,
    OperatorUpdate,
)

router = APIRouter(prefix="/operators", tags=["operators"])
OperatorId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_operator(data: OperatorCreate, _: AdminUser, session: SessionDep) -> OperatorRead:
    return await service.create(session, data)


@router.get("")
async def list_operators(user: CurrentUser, page: PageDep, session: SessionDep) -> OperatorPage:
    return await service.list_for(session, user, page.limit, page.offset)


@router.get("/{operator_id}")
async def read_operator(
    operator_id: OperatorId, user: CurrentUser, session: SessionDep
) -> OperatorRead:
    return await service.to_read(session, await service.get_managed(session, user, operator_id))


@router.patch("/{operator_id}")
async def update_operator(
    operator_id: OperatorId, data: OperatorUpdate, user: CurrentUser, session: SessionDep
) -> OperatorRead:
    operator = await service.get_managed(session, user, operator_id)
    return await service.update(session, operator, data)


@router.post("/{operator_id}/managers", status_code=status.HTTP_201_CREATED)
async def add_operator_manager(
    operator_id: OperatorId, data: ManagerAdd, _: AdminUser, session: SessionDep
) -> MembershipRead:
    return await service.add_manager(session, operator_id, data.user_id)


@router.delete("/{operator_id}/managers/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_operator_manager(
    operator_id: OperatorId,
    user_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    _: AdminUser,
    session: SessionDep,
) -> None:
    await service.remove_manager(session, operator_id, user_id)
