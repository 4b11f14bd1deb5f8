"""Table models, imported together so Alembic and tests see the whole schema."""

from parkspot.models.alerts import Alert, AlertKind
from parkspot.models.base import metadata
from parkspot.models.devices import Device, DeviceKind
from parkspot.models.gate_passages import GateDirection, GatePassage, PassageResult
from parkspot.models.idempotency import IdempotencyKey
from parkspot.models.lot_availability import AvailabilityChange, LotAvailability
from parkspot.models.lots import Lot, Spot, SpotKind, Visibility
from parkspot.models.notifications import Notification
from parkspot.models.operators import MembershipRole, Operator, OperatorMember
from parkspot.models.reservations import (
    ACTIVE_STATUSES,
    Reservation,
    ReservationKind,
    ReservationStatus,
)
from parkspot.models.users import AuthSession, Role, User
from parkspot.models.vehicles import Vehicle, VehicleKind

__all__ = [
    "ACTIVE_STATUSES",
    "Alert",
    "AlertKind",
    "AuthSession",
    "AvailabilityChange",
    "Device",
    "DeviceKind",
    "GateDirection",
    "GatePassage",
    "IdempotencyKey",
    "Lot",
    "LotAvailability",
    "MembershipRole",
    "Notification",
    "Operator",
    "OperatorMember",
    "PassageResult",
    "Reservation",
    "ReservationKind",
    "ReservationStatus",
    "Role",
    "Spot",
    "SpotKind",
    "User",
    "Vehicle",
    "VehicleKind",
    "Visibility",
    "metadata",
]
