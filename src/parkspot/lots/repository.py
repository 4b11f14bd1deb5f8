"""SQL for lots and spots. A deleted lot (``deleted_at`` set) is never returned, nor are
its spots."""

from collections.abc import Sequence

from sqlalchemy import and_, func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from parkspot.db.pagination import count_and_page
from parkspot.db.search import contains_pattern
from parkspot.lots.geo import BBox
from parkspot.lots.schemas import LotFilters
from parkspot.models import Lot, OperatorMember, Role, Spot, SpotKind, User, Visibility

# Stay well under every driver's bound-parameter limit.
_IN_CHUNK = 500


def visible_to(user: User | None) -> ColumnElement[bool]:
    """Lots the user may see: admins every lot; others the public lots and the lots of the
    operators they belong to (as member or manager)."""
    active = col(Lot.deleted_at).is_(None)
    if user is not None and user.role == Role.admin:
        return active
    public = col(Lot.visibility) == Visibility.public
    if user is None:
        return and_(active, public)
    member_of = select(OperatorMember.operator_id).where(col(OperatorMember.user_id) == user.id)
    return and_(active, or_(public, col(Lot.operator_id).in_(member_of)))


def inside(box: BBox) -> ColumnElement[bool]:
    latitude = col(Lot.latitude).between(box.min_lat, box.max_lat)
    if box.wraps:
        longitude = or_(col(Lot.longitude) >= box.min_lon, col(Lot.longitude) <= box.max_lon)
    else:
        longitude = col(Lot.longitude).between(box.min_lon, box.max_lon)
    return and_(latitude, longitude)


def _search(user: User | None, filters: LotFilters) -> SelectOfScalar[Lot]:
    stmt = select(Lot).where(visible_to(user))
    if filters.q:
        pattern = contains_pattern(filters.q)
        stmt = stmt.where(
            or_(
                func.lower(col(Lot.name)).like(pattern, escape="\\"),
                func.lower(col(Lot.address)).like(pattern, escape="\\"),
            )
        )
    if filters.operator_id is not None:
        stmt = stmt.where(col(Lot.operator_id) == filters.operator_id)
    box = filters.box
    if box is not None:
        stmt = stmt.where(inside(box))
    return stmt


async def search_page(
    session: AsyncSession, user: User | None, filters: LotFilters, limit: int, offset: int
) -> tuple[Sequence[Lot], int]:
    """One page of the lots matching ``filters`` (``near`` aside), by id."""
    return await count_and_page(session, _search(user, filters), col(Lot.id), limit, offset)


async def search_within(
    session: AsyncSession, user: User | None, filters: LotFilters, box: BBox
) -> Sequence[Lot]:
    """Every lot matching ``filters`` (``near`` aside) inside ``box``."""
    stmt = _search(user, filters).where(inside(box)).order_by(col(Lot.id))
    return (await session.execute(stmt)).scalars().all()


async def get_lot(session: AsyncSession, lot_id: int) -> Lot | None:
    stmt = select(Lot).where(col(Lot.id) == lot_id, col(Lot.deleted_at).is_(None))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_spot(session: AsyncSession, spot_id: int) -> tuple[Spot, Lot] | None:
    stmt = (
        select(Spot, Lot)
        .join(Lot, col(Lot.id) == col(Spot.lot_id))
        .where(col(Spot.id) == spot_id, col(Lot.deleted_at).is_(None))
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


def _spots_of(lot_id: int, kind: SpotKind | None) -> SelectOfScalar[Spot]:
    stmt = select(Spot).where(col(Spot.lot_id) == lot_id)
    if kind is not None:
        stmt = stmt.where(col(Spot.kind) == kind)
    return stmt


async def list_spots(
    session: AsyncSession, lot_id: int, kind: SpotKind | None, limit: int, offset: int
) -> tuple[Sequence[Spot], int]:
    return await count_and_page(session, _spots_of(lot_id, kind), col(Spot.id), limit, offset)


async def taken_labels(
    session: AsyncSession, lot_id: int, labels: Sequence[str], exclude_spot_id: int | None = None
) -> list[str]:
    """Which of ``labels`` the lot's other spots already carry."""
    taken: list[str] = []
    for i in range(0, len(labels), _IN_CHUNK):
        stmt = select(Spot.label).where(
            col(Spot.lot_id) == lot_id,
            col(Spot.label).in_(labels[i : i + _IN_CHUNK]),
            col(Spot.id) != exclude_spot_id,
        )
        taken.extend((await session.execute(stmt)).scalars())
    return sorted(taken)
