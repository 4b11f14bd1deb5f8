"""Counting a lot's spots now (from its sensors, its counted occupancy or its reservations),
and who may see which lots."""

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.availability import repository
from parkspot.availability.mirror import ANONYMOUS, Viewer
from parkspot.availability.schemas import (
    KindCount,
    LotAvailabilityRead,
    LotRecord,
    LotStatus,
    OccupancySource,
)
from parkspot.lots.schemas import SpotState
from parkspot.lots.service import spot_state
from parkspot.models import DeviceKind, Lot, ReservationStatus, Role, SpotKind, User, Visibility
from parkspot.operators import repository as operator_repository
from parkspot.reservations import repository as reservation_repository


@dataclass(frozen=True)
class Counted:
    """A lot's record (version still to be given) and its next time boundary."""

    record: LotRecord
    next_boundary_at: datetime | None


@dataclass(frozen=True)
class Heard:
    """A lot's active devices of one kind: their newest report, and when they were last
    heard from (a device that never reported: its creation, so a new one is not silent)."""

    reported_at: datetime | None
    heard_at: datetime


@dataclass
class SpotTally:
    """A lot's spots by state, by kind, and the stays checked in on spots in service."""

    by_state: dict[SpotState, int] = field(default_factory=lambda: dict.fromkeys(SpotState, 0))
    kinds: dict[SpotKind, list[int]] = field(default_factory=dict)
    checked_in: int = 0


# The devices the occupancy of each source comes from; a reservations lot reports when its
# gates last reported but is never stale for it.
SOURCE_DEVICE = {
    OccupancySource.sensors: DeviceKind.spot_sensor,
    OccupancySource.counter: DeviceKind.counter,
    OccupancySource.reservations: DeviceKind.gate,
}


def lot_status(is_active: bool, capacity: int, free: int, almost_full_ratio: float) -> LotStatus:
    if not is_active:
        return LotStatus.closed
    if free == 0:
        return LotStatus.full
    if free < capacity * almost_full_ratio:
        return LotStatus.almost_full
    return LotStatus.open


def occupancy_source(lot: Lot, device_kinds: Collection[str]) -> OccupancySource:
    """Sensors when the lot has an active spot sensor, else its count when it has an
    active counter or was counted by a manager, else its reservations."""
    if DeviceKind.spot_sensor in device_kinds:
        return OccupancySource.sensors
    if DeviceKind.counter in device_kinds or lot.counted_occupied is not None:
        return OccupancySource.counter
    return OccupancySource.reservations


def shares(lot: Lot, source: OccupancySource, tally: SpotTally) -> tuple[int, int, int]:
    """(free, reserved, occupied), adding up to the spots in service."""
    by_state = tally.by_state
    free, reserved = by_state[SpotState.available], by_state[SpotState.reserved]
    occupied = by_state[SpotState.occupied]
    if source is OccupancySource.counter:
        capacity = free + reserved + occupied
        # The count sees every car; a stay checked in is inside even if the count lags.
        occupied = min(max(lot.counted_occupied or 0, tally.checked_in), capacity)
        reserved = min(reserved, capacity - occupied)
        free = capacity - occupied - reserved
    elif source is OccupancySource.reservations:
        # Unplanned stays take spots that are free; reserved spots stay held for their
        # drivers.
        unplanned = min(lot.unplanned_inside, free)
        occupied += unplanned
        free -= unplanned
    return free, reserved, occupied


async def count(
    session: AsyncSession,
    lot_ids: Sequence[int],
    now: datetime,
    grace: timedelta,
    almost_full_ratio: float,
    silence: timedelta,
) -> dict[int, Counted]:
    """Each lot's counts now, by its occupancy source: ``free`` is in service, not occupied
    and not covered by an active reservation. A deleted lot counts as closed with no spots.
    A lot counted by sensors or a counter is ``stale`` once those devices have been silent
    for ``silence``; that moment is among its boundaries."""
    lots = await repository.lots(session, lot_ids)
    spots = await repository.spots(session, lot_ids)
    statuses = await reservation_repository.current_status_in_lots(session, lot_ids, now)
    boundaries = await reservation_repository.next_boundaries(session, lot_ids, now, grace)
    heard: dict[int, dict[str, Heard]] = defaultdict(dict)
    for lot_id, kind, reported_at, heard_at in await repository.device_activity(session, lot_ids):
        heard[lot_id][kind] = Heard(reported_at, heard_at)
    tallies: dict[int, SpotTally] = defaultdict(SpotTally)
    for spot_id, lot_id, kind, out_of_service, sensor_occupied in spots:
        status = statuses.get(spot_id)
        state = spot_state(out_of_service, status, sensor_occupied)
        tally = tallies[lot_id]
        tally.by_state[state] += 1
        if state is not SpotState.out_of_service:
            tally.checked_in += status == ReservationStatus.checked_in
            capacity_free = tally.kinds.setdefault(SpotKind(kind), [0, 0])
            capacity_free[0] += 1
            capacity_free[1] += state is SpotState.available
    counted = {}
    for lot in lots:
        assert lot.id is not None
        deleted = lot.deleted_at is not None
        tally = SpotTally() if deleted else tallies[lot.id]
        source = occupancy_source(lot, heard[lot.id])
        free, reserved, occupied = shares(lot, source, tally)
        capacity = free + reserved + occupied
        devices = heard[lot.id].get(SOURCE_DEVICE[source])
        boundary = None if deleted else boundaries.get(lot.id)
        stale = False
        if devices is not None and source is not OccupancySource.reservations and not deleted:
            silent_at = devices.heard_at + silence
            stale = now >= silent_at
            if not stale:
                boundary = silent_at if boundary is None else min(boundary, silent_at)
        record = LotRecord(
            lot=LotAvailabilityRead(
                lot_id=lot.id,
                name=lot.name,
                latitude=lot.latitude,
                longitude=lot.longitude,
                capacity=capacity,
                free=free,
                reserved=reserved,
                occupied=occupied,
                out_of_service=tally.by_state[SpotState.out_of_service],
                by_kind={
                    kind: KindCount(capacity=c, free=min(f, free))
                    for kind, (c, f) in tally.kinds.items()
                },
                status=lot_status(lot.is_active and not deleted, capacity, free, almost_full_ratio),
                version=0,
                updated_at=now,
                occupancy_source=source,
                device_data_at=None if devices is None else devices.reported_at,
                stale=stale,
            ),
            operator_id=lot.operator_id,
            members_only=lot.visibility == Visibility.members,
            deleted=deleted,
        )
        counted[lot.id] = Counted(record, boundary)
    return counted


async def viewer_for(session: AsyncSession, user: User | None) -> Viewer:
    if user is None:
        return ANONYMOUS
    if user.role == Role.admin:
        return Viewer(sees_all=True)
    assert user.id is not None
    operator_ids = await operator_repository.operator_ids_by_user(session, [user.id])
    return Viewer(operator_ids=frozenset(operator_ids.get(user.id, ())))
