"""Counting and slicing a SELECT for the paginated ``{items, total, limit, offset}`` lists."""

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import select
from sqlmodel.sql.expression import SelectOfScalar

T = TypeVar("T")
OrderBy = ColumnElement[Any] | Mapped[Any]


async def count_and_page(
    session: AsyncSession,
    stmt: SelectOfScalar[T],
    order_by: OrderBy | tuple[OrderBy, ...],
    limit: int,
    offset: int,
) -> tuple[Sequence[T], int]:
    """One page of ``stmt`` ordered by ``order_by`` (one column or several), and the total
    row count."""
    total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    order = order_by if isinstance(order_by, tuple) else (order_by,)
    rows = await session.execute(stmt.order_by(*order).limit(limit).offset(offset))
    return rows.scalars().all(), total
