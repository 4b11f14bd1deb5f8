"""Request and response bodies for accounts."""

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, EmailStr, Field, StringConstraints

from parkspot.models import Role
from parkspot.validation import SINGLE_LINE, StrictModel

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
PHONE_PATTERN = r"^\+?[0-9 ()-]{5,32}$"


def _lower(value: str) -> str:
    return value.lower()


Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
Email = Annotated[EmailStr, AfterValidator(_lower), Field(max_length=254)]
Password = Annotated[str, Field(min_length=8, max_length=128)]
FullName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=120, pattern=SINGLE_LINE),
]
# The column holds 32 characters; the pattern alone would let "+" and 32 more through.
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=32, pattern=PHONE_PATTERN)
]


class UserCreate(StrictModel):
    username: Username
    email: Email
    password: Password
    full_name: FullName | None = None
    phone: Phone | None = None
    passkey: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class UserUpdate(StrictModel):
    email: Email | None = None
    full_name: FullName | None = None
    phone: Phone | None = None
    password: Password | None = None
    current_password: Annotated[str, Field(max_length=128)] | None = None


class LoginRequest(StrictModel):
    username: Annotated[str, Field(min_length=1, max_length=254, description="username or e-mail")]
    password: Annotated[str, Field(min_length=1, max_length=128)]


class TokenRead(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class UserRead(BaseModel):
    id: int
    username: str
    email: str
    full_name: str | None
    phone: str | None
    role: Role
    is_active: bool
    operator_ids: list[int]
