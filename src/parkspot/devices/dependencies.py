"""Dependencies that load a device: one the caller manages, or the device making the request
(by its ``X-Device-Key``)."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path
from fastapi.security import APIKeyHeader

from parkspot.deps import CurrentUser, SessionDep, StateDep
from parkspot.devices import service
from parkspot.models import Device, DeviceKind
from parkspot.validation import MAX_ID

DeviceId = Annotated[int, Path(ge=1, le=MAX_ID)]

# auto_error=False: a missing key is answered in the one error shape, not FastAPI's.
_device_key = APIKeyHeader(
    name="X-Device-Key",
    scheme_name="DeviceKey",
    description="The key shown once when the device was created",
    auto_error=False,
)
DeviceKey = Annotated[str | None, Depends(_device_key)]


async def get_managed_device(device_id: DeviceId, user: CurrentUser, session: SessionDep) -> Device:
    return await service.get_managed_device(session, user, device_id)


async def get_device(key: DeviceKey, session: SessionDep, state: StateDep) -> Device:
    return await service.authenticate(session, key, state.clock())


def _device_of_kind(kind: DeviceKind) -> Callable[[Device], Awaitable[Device]]:
    """A dependency giving the requesting device when it is a ``kind`` (else 403)."""

    # async: a plain function would be run in the thread pool.
    async def of_kind(device: Annotated[Device, Depends(get_device)]) -> Device:
        service.require_kind(device, kind)
        return device

    return of_kind


ManagedDevice = Annotated[Device, Depends(get_managed_device)]
SpotSensor = Annotated[Device, Depends(_device_of_kind(DeviceKind.spot_sensor))]
Gate = Annotated[Device, Depends(_device_of_kind(DeviceKind.gate))]
Counter = Annotated[Device, Depends(_device_of_kind(DeviceKind.counter))]
