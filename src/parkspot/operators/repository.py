"""SQL for operators and memberships."""

import hashlib
from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from parkspot.db.pagination import count_and_page
from parkspot.models import Lot, MembershipRole, Operator, OperatorMember, User


def passkey_digest(passkey: str) -> str:
    return hashlib.sha256(passkey.encode()).hexdigest()


async def get(session: AsyncSession, operator_id: int) -> Operator | None:
    return await session.get(Operator, operator_id)


async def get_by_passkey(session: AsyncSession, passkey: str) -> Operator | None:
    stmt = select(Operator).where(col(Operator.passkey_digest) == passkey_digest(passkey))
    return (await session.execute(stmt)).scalar_one_or_none()


async def name_taken(session: AsyncSession, name: str, exclude_id: int | None) -> bool:
    stmt = (
        select(func.count())
        .select_from(Operator)
        .where(func.lower(col(Operator.name)) == name.lower(), col(Operator.id) != exclude_id)
    )
    return bool((await session.execute(stmt)).scalar_one())


async def passkey_taken(session: AsyncSession, digest: str, exclude_id: int | None) -> bool:
    stmt = (
        select(func.count())
        .select_from(Operator)
        .where(col(Operator.passkey_digest) == digest, col(Operator.id) != exclude_id)
    )
    return bool((await session.execute(stmt)).scalar_one())


async def list_page(
    session: AsyncSession, managed_by: int | None, limit: int, offset: int
) -> tuple[Sequence[Operator], int]:
    """Operators by id; ``managed_by`` keeps those that user manages (None: all)."""
    stmt = select(Operator)
    if managed_by is not None:
        stmt = stmt.join(OperatorMember, col(OperatorMember.operator_id) == col(Operator.id)).where(
            col(OperatorMember.user_id) == managed_by,
            col(OperatorMember.role) == MembershipRole.manager,
        )
    return await count_and_page(session, stmt, col(Operator.id), limit, offset)


def manages_lot(user: User) -> ColumnElement[bool]:
    """A condition on ``lots``: the lot belongs to an operator the user manages."""
    managed = select(OperatorMember.operator_id).where(
        col(OperatorMember.user_id) == user.id,
        col(OperatorMember.role) == MembershipRole.manager,
    )
    return col(Lot.operator_id).in_(managed)


async def membership(
    session: AsyncSession, operator_id: int, user_id: int
) -> OperatorMember | None:
    return await session.get(OperatorMember, (operator_id, user_id))


async def _grouped(
    session: AsyncSession,
    key: Mapped[int],
    value: Mapped[int],
    keys: Sequence[int],
    role: MembershipRole | None,
) -> dict[int, list[int]]:
    """``value`` of the memberships of each of ``keys`` (each list sorted), in one query."""
    grouped: dict[int, list[int]] = {k: [] for k in keys}
    if not keys:
        return grouped
    stmt = select(key, value).where(key.in_(keys))
    if role is not None:
        stmt = stmt.where(col(OperatorMember.role) == role)
    for k, v in (await session.execute(stmt.order_by(key, value))).all():
        grouped[k].append(v)
    return grouped


async def manager_ids_by_operator(
    session: AsyncSession, operator_ids: Sequence[int]
) -> dict[int, list[int]]:
    return await _grouped(
        session,
        col(OperatorMember.operator_id),
        col(OperatorMember.user_id),
        operator_ids,
        MembershipRole.manager,
    )


async def operator_ids_by_user(
    session: AsyncSession, user_ids: Sequence[int]
) -> dict[int, list[int]]:
    """The operators each user belongs to, as member or manager."""
    return await _grouped(
        session,
        col(OperatorMember.user_id),
        col(OperatorMember.operator_id),
        user_ids,
        None,
    )
