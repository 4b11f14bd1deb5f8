"""Operator rules: who sees which operator, passkeys and manager assignment."""

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.db.unique import add_unique
from parkspot.errors import Conflict, Forbidden, NotFound
from parkspot.models import MembershipRole, Operator, OperatorMember, Role, User
from parkspot.operators import repository
from parkspot.operators.access import Access, access_to_operator
from parkspot.operators.schemas import (
    MembershipRead,
    OperatorCreate,
    OperatorPage,
    OperatorRead,
    OperatorUpdate,
)


async def to_reads(session: AsyncSession, operators: Sequence[Operator]) -> list[OperatorRead]:
    """The operators with their managers, read in one query."""
    ids = [o.id for o in operators if o.id is not None]
    managers = await repository.manager_ids_by_operator(session, ids)
    reads = []
    for operator in operators:
        assert operator.id is not None
        reads.append(
            OperatorRead(
                id=operator.id,
                name=operator.name,
                has_passkey=operator.passkey_digest is not None,
                manager_ids=managers[operator.id],
                created_at=operator.created_at,
            )
        )
    return reads


async def to_read(session: AsyncSession, operator: Operator) -> OperatorRead:
    return (await to_reads(session, [operator]))[0]


def _taken(field: str) -> Conflict:
    if field == "passkey":
        return Conflict("Choose another passkey", code="passkey_taken")
    return Conflict("An operator with that name exists", code="operator_name_taken")


async def _check_unique(
    session: AsyncSession, name: str | None, passkey: str | None, exclude_id: int | None
) -> None:
    if name is not None and await repository.name_taken(session, name, exclude_id):
        raise _taken("name")
    if passkey is not None and await repository.passkey_taken(
        session, repository.passkey_digest(passkey), exclude_id
    ):
        raise _taken("passkey")


async def _save(session: AsyncSession, operator: Operator) -> None:
    # The checks above can race with a concurrent request; the constraints decide.
    taken = await add_unique(session, operator, ("passkey", "name"))
    if taken is not None:
        raise _taken(taken)


async def create(session: AsyncSession, data: OperatorCreate) -> OperatorRead:
    await _check_unique(session, data.name, data.passkey, None)
    operator = Operator(
        name=data.name,
        passkey_digest=repository.passkey_digest(data.passkey) if data.passkey else None,
    )
    await _save(session, operator)
    return await to_read(session, operator)


async def get_managed(session: AsyncSession, user: User, operator_id: int) -> Operator:
    """The operator if the caller manages it; members get 403, everybody else 404."""
    operator = await repository.get(session, operator_id)
    access = (
        Access.none if operator is None else await access_to_operator(session, user, operator_id)
    )
    if operator is None or access is Access.none:
        raise NotFound("Operator not found", code="operator_not_found")
    if access is Access.member:
        raise Forbidden("Only the operator's managers may do that", code="not_operator_manager")
    return operator


async def list_for(session: AsyncSession, user: User, limit: int, offset: int) -> OperatorPage:
    """Admins see every operator, managers those they manage, everybody else none (like
    ``access_to_operator``, a manager membership counts only while the role is manager)."""
    if user.role not in (Role.admin, Role.manager):
        return OperatorPage(items=[], total=0, limit=limit, offset=offset)
    managed_by = None if user.role == Role.admin else user.id
    operators, total = await repository.list_page(session, managed_by, limit, offset)
    items = await to_reads(session, operators)
    return OperatorPage(items=items, total=total, limit=limit, offset=offset)


async def update(session: AsyncSession, operator: Operator, data: OperatorUpdate) -> OperatorRead:
    fields = data.model_fields_set
    await _check_unique(session, data.name if "name" in fields else None, data.passkey, operator.id)
    if data.name is not None:
        operator.name = data.name
    if "passkey" in fields:
        operator.passkey_digest = repository.passkey_digest(data.passkey) if data.passkey else None
    await _save(session, operator)
    return await to_read(session, operator)


async def add_manager(session: AsyncSession, operator_id: int, user_id: int) -> MembershipRead:
    """Makes the user a manager of the operator, promoting a driver to the manager role."""
    operator = await repository.get(session, operator_id)
    if operator is None:
        raise NotFound("Operator not found", code="operator_not_found")
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("User not found", code="user_not_found")
    membership = await repository.membership(session, operator_id, user_id)
    if membership is None:
        membership = OperatorMember(operator_id=operator_id, user_id=user_id)
    membership.role = MembershipRole.manager
    if user.role == Role.driver:
        user.role = Role.manager
    session.add_all([membership, user])
    await session.flush()
    return MembershipRead(operator_id=operator_id, user_id=user_id, role=MembershipRole.manager)


async def remove_manager(session: AsyncSession, operator_id: int, user_id: int) -> None:
    """Turns a manager back into a plain member of the operator."""
    membership = await repository.membership(session, operator_id, user_id)
    if membership is None or membership.role != MembershipRole.manager:
        raise NotFound("That user is not a manager of this operator", code="manager_not_found")
    membership.role = MembershipRole.member
    session.add(membership)
    await session.flush()
