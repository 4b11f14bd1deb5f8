"""Counting a lot's spots now, and who may see which lots."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.availability import repository
from parkspot.availability.mirror import ANONYMOUS, Viewer
from parkspot.availability.schemas import KindCount, LotAvailabilityRead, LotRecord, LotStatus
from parkspot.lots.schemas import SpotState
from parkspot.lots.service import spot_state
from parkspot.models import Role, SpotKind, User, Visibility
from parkspot.operators import repository as operator_repository
from parkspot.reservations import repository as reservation_repository


@dataclass(frozen=True)
class Counted:
    """A lot's record (version still to be given) and its next time boundary."""

    record: LotRecord
    next_boundary_at: datetime | None


def lot_status(is_active: bool, capacity: int, free: int, almost_full_ratio: float) -> LotStatus:
    if not is_active:
        return LotStatus.closed
    if free == 0:
        return LotStatus.full
    if free < capacity * almost_full_ratio:
        return LotStatus.almost_full
    return LotStatus.open


async def count(
    session: AsyncSession,
    lot_ids: Sequence[int],
    now: datetime,
    grace: timedelta,
    almost_full_ratio: float,
) -> dict[int, Counted]:
    """Each lot's counts now: ``free`` is in service, not occupied and not covered by an
    active reservation. A deleted lot counts as closed with no spots."""
    lots = await repository.lots(session, lot_ids)
    spots = await repository.spots(session, lot_ids)
    statuses = await reservation_repository.current_status_in_lots(session, lot_ids, now)
    boundaries = await reservation_repository.next_boundaries(session, lot_ids, now, grace)
    states: dict[int, dict[SpotState, int]] = defaultdict(lambda: dict.fromkeys(SpotState, 0))
    kinds: dict[int, dict[SpotKind, list[int]]] = defaultdict(dict)
    for spot_id, lot_id, kind, out_of_service, sensor_occupied in spots:
        state = spot_state(out_of_service, statuses.get(spot_id), sensor_occupied)
        states[lot_id][state] += 1
        if state is not SpotState.out_of_service:
            capacity_free = kinds[lot_id].setdefault(SpotKind(kind), [0, 0])
            capacity_free[0] += 1
            capacity_free[1] += state is SpotState.available
    counted = {}
    for lot in lots:
        assert lot.id is not None
        by_state = states[lot.id]
        deleted = lot.deleted_at is not None
        if deleted:
            by_state = dict.fromkeys(SpotState, 0)
        capacity = by_state[SpotState.available] + by_state[SpotState.reserved]
        capacity += by_state[SpotState.occupied]
        free = by_state[SpotState.available]
        record = LotRecord(
            lot=LotAvailabilityRead(
                lot_id=lot.id,
                name=lot.name,
                latitude=lot.latitude,
                longitude=lot.longitude,
                capacity=capacity,
                free=free,
                reserved=by_state[SpotState.reserved],
                occupied=by_state[SpotState.occupied],
                out_of_service=by_state[SpotState.out_of_service],
                by_kind={
                    kind: KindCount(capacity=c, free=f)
                    for kind, (c, f) in ({} if deleted else kinds[lot.id]).items()
                },
                status=lot_status(lot.is_active and not deleted, capacity, free, almost_full_ratio),
                version=0,
                updated_at=now,
            ),
            operator_id=lot.operator_id,
            members_only=lot.visibility == Visibility.members,
            deleted=deleted,
        )
        counted[lot.id] = Counted(record, None if deleted else boundaries.get(lot.id))
    return counted


async def viewer_for(session: AsyncSession, user: User | None) -> Viewer:
    if user is None:
        return ANONYMOUS
    if user.role == Role.admin:
        return Viewer(sees_all=True)
    assert user.id is not None
    operator_ids = await operator_repository.operator_ids_by_user(session, [user.id])
    return Viewer(operator_ids=frozenset(operator_ids.get(user.id, ())))
