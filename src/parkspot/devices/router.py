"""Routes under /api/v1/lots/{lot_id}/devices, /api/v1/lots/{lot_id}/occupancy,
/api/v1/devices and /api/v1/device (the endpoints devices call with their key)."""

from fastapi import APIRouter, status

from parkspot.deps import PageDep, SessionDep, StateDep
from parkspot.devices import service
from parkspot.devices.dependencies import Counter, Gate, ManagedDevice, SpotSensor
from parkspot.devices.schemas import (
    MAX_EVENTS,
    CounterEvent,
    CounterEventResult,
    DeviceCreate,
    DeviceCreated,
    DevicePage,
    GateEvent,
    GateEventResult,
    OccupancyUpdate,
    SpotEventBatch,
    SpotEventResults,
)
from parkspot.devices.service import MAX_CLOCK_SKEW
from parkspot.lots.dependencies import ManagedLot

router = APIRouter(tags=["devices"])

SPOT_EVENTS_DESCRIPTION = f"""A spot sensor's reports: 1 to {MAX_EVENTS} events, applied in
order, each with its own result. `applied`: the spot's sensor state is now this;
`duplicate`: the spot already had this very report; `stale`: the spot already had a report
at least as recent (by `observed_at`); `rejected` with a `code`: `unknown_spot` (no spot of
that label in the device's lot) or `observed_in_future` (more than
{MAX_CLOCK_SKEW.total_seconds() / 60:g} minutes ahead of the server's clock)."""


@router.post("/lots/{lot_id}/devices", status_code=status.HTTP_201_CREATED)
async def create_device(
    lot: ManagedLot, data: DeviceCreate, session: SessionDep, state: StateDep
) -> DeviceCreated:
    """The answer holds the device's `key`, shown this once: only its digest is stored."""
    return await service.create_device(session, lot, data, state.clock())


@router.get("/lots/{lot_id}/devices")
async def list_devices(lot: ManagedLot, page: PageDep, session: SessionDep) -> DevicePage:
    return await service.list_devices(session, lot, page.limit, page.offset)


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_device(device: ManagedDevice, session: SessionDep, state: StateDep) -> None:
    """The key stops working at once; the device stays listed as `revoked`. Revoking it
    again is a 204 that changes nothing."""
    service.revoke_device(session, device, state.clock())


@router.post("/device/spot-events", description=SPOT_EVENTS_DESCRIPTION)
async def record_spot_events(
    batch: SpotEventBatch, device: SpotSensor, session: SessionDep, state: StateDep
) -> SpotEventResults:
    return await service.record_spot_events(session, device, batch, state.clock())


GATE_EVENTS_DESCRIPTION = """A gate's passage. `entry` with a plate that has a confirmed
reservation in the gate's lot whose check-in window is open at `observed_at`: the
reservation is `checked_in`. `exit` with a plate that has a stay checked in at the lot: it
is `checked_out` with its `final_price` (as by POST /reservations/{id}/check-out). Any other
entry is an `unplanned` stay (it occupies a spot of a lot counted from reservations), any
other exit an `unmatched_exit`. Every passage is kept (`passage_id`)."""

COUNTER_EVENTS_DESCRIPTION = """A counter's report: `entries` and/or `exits` since its last
report move the lot's counted occupancy, `occupied` sets it (drift correction); either way
clamped to 0 and the spots in service. A report observed before the lot's last applied
count is ignored (`stale`)."""


@router.post("/device/gate-events", description=GATE_EVENTS_DESCRIPTION)
async def record_gate_event(
    event: GateEvent, device: Gate, session: SessionDep, state: StateDep
) -> GateEventResult:
    return await service.record_gate_event(session, state, device, event)


@router.post("/device/counter-events", description=COUNTER_EVENTS_DESCRIPTION)
async def record_counter_event(
    event: CounterEvent, device: Counter, session: SessionDep, state: StateDep
) -> CounterEventResult:
    return await service.record_counter_event(session, device, event, state.clock())


@router.put("/lots/{lot_id}/occupancy")
async def correct_occupancy(
    lot: ManagedLot, data: OccupancyUpdate, session: SessionDep, state: StateDep
) -> CounterEventResult:
    """A manager's count of the cars in the lot, applied now; the lot's occupancy comes
    from this count (and its counters) unless it has spot sensors."""
    return await service.correct_occupancy(session, lot, data, state.clock())
