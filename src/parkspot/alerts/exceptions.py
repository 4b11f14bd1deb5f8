"""Errors of the alerts domain, each with its stable code.

ParkspotError
├── Forbidden
│   └── ManagersOnly    managers_only (alerts are for managers and admins)
└── NotFound
    └── AlertNotFound   alert_not_found (also: an alert of a lot the caller does not manage)
"""

from parkspot.errors import Forbidden, NotFound


class ManagersOnly(Forbidden):
    code = "managers_only"

    def __init__(self) -> None:
        super().__init__("Alerts are for the managers of a lot's operator and admins")


class AlertNotFound(NotFound):
    code = "alert_not_found"

    def __init__(self) -> None:
        super().__init__("Alert not found")
