"""Errors of the reservations domain, each with its stable code.

ParkspotError
├── NotFound
│   └── ReservationNotFound      reservation_not_found (also: another user's)
├── Forbidden
│   └── NotReservationOwner      not_reservation_owner (managers read but do not change)
├── Conflict
│   ├── SpotUnavailable          spot_unavailable
│   ├── LotFull                  lot_full
│   ├── VehicleBusy              vehicle_busy
│   ├── LotClosed                lot_closed
│   ├── SpotOutOfService         spot_out_of_service
│   ├── ReservationLimit         reservation_limit_reached
│   ├── InvalidTransition        invalid_status (details: status)
│   └── OutsideCheckInWindow     outside_check_in_window
└── Unprocessable
    └── InvalidWindow            invalid_window
"""

from datetime import datetime
from typing import Any

from parkspot.errors import Conflict, Forbidden, NotFound, Unprocessable


class ReservationNotFound(NotFound):
    code = "reservation_not_found"

    def __init__(self) -> None:
        super().__init__("Reservation not found")


class NotReservationOwner(Forbidden):
    code = "not_reservation_owner"

    def __init__(self) -> None:
        super().__init__("Only the driver who booked may change this reservation")


class SpotUnavailable(Conflict):
    code = "spot_unavailable"

    def __init__(self, label: str) -> None:
        super().__init__(
            f"Spot {label} is already booked for part of that window", details={"spot": label}
        )


class LotFull(Conflict):
    code = "lot_full"

    def __init__(self) -> None:
        super().__init__("No spot of that kind is free in this lot for the whole window")


class VehicleBusy(Conflict):
    code = "vehicle_busy"

    def __init__(self, plate: str) -> None:
        super().__init__(
            f"Vehicle {plate} already has a reservation overlapping that window",
            details={"plate": plate},
        )


class LotClosed(Conflict):
    code = "lot_closed"

    def __init__(self) -> None:
        super().__init__("This lot is closed")


class SpotOutOfService(Conflict):
    code = "spot_out_of_service"

    def __init__(self, label: str) -> None:
        super().__init__(f"Spot {label} is out of service", details={"spot": label})


class ReservationLimit(Conflict):
    code = "reservation_limit_reached"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already hold {limit} upcoming reservations, the most allowed",
            details={"limit": limit},
        )


class InvalidTransition(Conflict):
    code = "invalid_status"

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"A {status} reservation cannot be {action}", details={"status": status})


class OutsideCheckInWindow(Conflict):
    code = "outside_check_in_window"

    def __init__(self, opens_at: datetime, closes_at: datetime) -> None:
        details: dict[str, Any] = {
            "opens_at": opens_at.isoformat(),
            "closes_at": closes_at.isoformat(),
        }
        super().__init__(
            "Check-in is possible only from a little before the start until the grace period ends",
            details=details,
        )


class InvalidWindow(Unprocessable):
    code = "invalid_window"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, details=details)
