"""Request and response bodies for user administration."""

from pydantic import BaseModel, ConfigDict

from parkspot.auth.schemas import UserRead
from parkspot.models import Role


class UserAdminUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    is_active: bool | None = None


class UserPage(BaseModel):
    items: list[UserRead]
    total: int
    limit: int
    offset: int
