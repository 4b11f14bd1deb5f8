"""Errors of the devices domain, each with its stable code.

ParkspotError
├── Unauthorized
│   ├── DeviceKeyRequired   device_key_required (no ``X-Device-Key`` header)
│   └── InvalidDeviceKey    invalid_device_key (unknown or revoked key, or its lot deleted)
├── Forbidden
│   └── WrongDeviceKind     wrong_device_kind (details: kind, required)
├── NotFound
│   └── DeviceNotFound      device_not_found (also: a device of a lot the caller does not manage)
└── Unprocessable
    └── ObservedInFuture    observed_in_future (details: latest)
"""

from datetime import datetime

from parkspot.errors import Forbidden, NotFound, Unauthorized, Unprocessable

# A 401 names the scheme the client should use; devices do not use bearer tokens.
_CHALLENGE = {"WWW-Authenticate": 'DeviceKey header="X-Device-Key"'}


class DeviceKeyRequired(Unauthorized):
    code = "device_key_required"

    def __init__(self) -> None:
        super().__init__("Send the device's key in the X-Device-Key header", headers=_CHALLENGE)


class InvalidDeviceKey(Unauthorized):
    code = "invalid_device_key"

    def __init__(self) -> None:
        super().__init__("The device key is unknown or revoked", headers=_CHALLENGE)


class WrongDeviceKind(Forbidden):
    code = "wrong_device_kind"

    def __init__(self, kind: str, required: str) -> None:
        super().__init__(
            f"Only a {required} device may do that; this device is a {kind}",
            details={"kind": kind, "required": required},
        )


class DeviceNotFound(NotFound):
    code = "device_not_found"

    def __init__(self) -> None:
        super().__init__("Device not found")


class ObservedInFuture(Unprocessable):
    code = "observed_in_future"

    def __init__(self, latest: datetime, minutes: int) -> None:
        super().__init__(
            f"observed_at is more than {minutes} minutes ahead of the server's clock",
            details={"latest": latest.isoformat()},
        )
