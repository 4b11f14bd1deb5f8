"""How much a caller may do with an operator's things: the basis of every lot/spot check."""

from enum import IntEnum

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.models import MembershipRole, Role, User
from parkspot.operators import repository


class Access(IntEnum):
    none = 0
    member = 1
    manager = 2


async def access_to_operator(session: AsyncSession, user: User | None, operator_id: int) -> Access:
    """Admins manage everything; a manager membership counts only while the user's role is
    manager (an admin demoting a user takes their management away at once)."""
    if user is None:
        return Access.none
    if user.role == Role.admin:
        return Access.manager
    assert user.id is not None
    membership = await repository.membership(session, operator_id, user.id)
    if membership is None:
        return Access.none
    if membership.role == MembershipRole.manager and user.role == Role.manager:
        return Access.manager
    return Access.member
