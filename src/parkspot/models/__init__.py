"""Table models, imported together so Alembic and tests see the whole schema."""

from parkspot.models.base import metadata
from parkspot.models.lots import Lot, Spot, SpotKind, Visibility
from parkspot.models.operators import MembershipRole, Operator, OperatorMember
from parkspot.models.users import AuthSession, Role, User
from parkspot.models.vehicles import Vehicle, VehicleKind

__all__ = [
    "AuthSession",
    "Lot",
    "MembershipRole",
    "Operator",
    "OperatorMember",
    "Role",
    "Spot",
    "SpotKind",
    "User",
    "Vehicle",
    "VehicleKind",
    "Visibility",
    "metadata",
]
