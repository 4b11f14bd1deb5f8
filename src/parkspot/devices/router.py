"""Routes under /api/v1/lots/{lot_id}/devices, /api/v1/devices and /api/v1/device (the
endpoints devices call with their key)."""

from fastapi import APIRouter, status

from parkspot.deps import PageDep, SessionDep, StateDep
from parkspot.devices import service
from parkspot.devices.dependencies import ManagedDevice, SpotSensor
from parkspot.devices.schemas import (
    MAX_EVENTS,
    DeviceCreate,
    DeviceCreated,
    DevicePage,
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
