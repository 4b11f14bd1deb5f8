"""Request and response bodies for user administration."""

from pydantic import BaseModel

from parkspot.auth.schemas import UserRead
from parkspot.models import Role
from parkspot.validation import JsonBool, StrictModel


class UserAdminUpdate(StrictModel):
    role: Role | None = None
    is_active: JsonBool | None = None


class UserPage(BaseModel):
    items: list[UserRead]
    total: int
    limit: int
    offset: int
